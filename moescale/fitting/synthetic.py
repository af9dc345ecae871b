"""Synthetic isoFLOP sweeps drawn from a known law, to check that fits recover what they should."""

from __future__ import annotations

import numpy as np
import pandas as pd

from moescale.fitting.compute_law import ComputeLaw
from moescale.fitting.parametric import ParametricFit


def synthetic_sweep(
    law: ParametricFit,
    compute_law: ComputeLaw,
    budgets: list[float],
    sizes_per_budget: int = 7,
    spread: float = 4.0,
    noise: float = 0.005,
    seed: int = 0,
) -> pd.DataFrame:
    """An isoFLOP table: for each budget, `sizes_per_budget` sizes log-spaced over a factor of
    `spread` either side of the law's true optimum, D from the compute law, and the law's loss
    times (1 + noise·ε), ε standard normal."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget in budgets:
        n_best = law.optimal(budget, compute_law)["n_opt"]
        for n in n_best * np.logspace(-np.log10(spread), np.log10(spread), sizes_per_budget):
            tokens = float(compute_law.tokens(budget, n))
            loss = float(law.loss(n, tokens)) * (1 + noise * rng.standard_normal())
            rows.append(
                {
                    "n_active": n,
                    "tokens": tokens,
                    "flops_per_token": float(compute_law.flops_per_token(n)),
                    "flops": budget,
                    "budget_flops": budget,
                    "final_loss": loss,
                    "status": "completed",
                }
            )
    return pd.DataFrame(rows)
