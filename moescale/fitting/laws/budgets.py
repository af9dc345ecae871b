"""Budgets: grouping runs by isoFLOP budget without float equality, and the report's
batch-size adjustment of a budget."""

from __future__ import annotations

import numpy as np


def group_budgets(values: np.ndarray, rel_tol: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Cluster budget values that lie within `rel_tol` of their neighbours (real runs never hit
    a budget exactly). Returns (group index per value, geometric-mean budget per group)."""
    values = np.asarray(values, float)
    order = np.argsort(values)
    group = np.empty(len(values), dtype=int)
    current, anchor = -1, None
    for i in order:
        if anchor is None or values[i] > anchor * (1 + rel_tol):
            current += 1
            anchor = values[i]
        group[i] = current
    centres = np.array([np.exp(np.log(values[group == g]).mean()) for g in range(current + 1)])
    return group, centres


def batch_adjusted_budget(flops: np.ndarray, batch: np.ndarray, b_crit: float) -> np.ndarray:
    """C_min = C / (1 + B/B_crit): the compute a run would need at a batch far below the
    critical batch size (Hunyuan-Large report §2.3.1, after Kaplan et al. 2020 eq. 5.4)."""
    return np.asarray(flops, float) / (1.0 + np.asarray(batch, float) / b_crit)
