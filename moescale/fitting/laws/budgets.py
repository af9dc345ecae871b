"""Budgets: grouping runs by isoFLOP budget without float equality (the batch-adjusted
budget is critical_batch.py's)."""

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
