"""The bootstrap draw every fit shares: what really varies in an isoFLOP sweep is the runs
within a budget (seed noise, mistuning) and the budgets themselves (each budget's optimum
carries its own error), so both are resampled — budgets only when there are enough of them
for a case resample to mean something."""

from __future__ import annotations

import numpy as np

MIN_BUDGETS_TO_RESAMPLE = 5  # with fewer, most draws repeat one or two budgets


def resamples_budgets(n_budgets: int) -> bool:
    return n_budgets >= MIN_BUDGETS_TO_RESAMPLE


def draw_budgets(n_budgets: int, rng: np.random.Generator) -> np.ndarray:
    """Budget indices for one draw: with replacement (at least 2 distinct) when there are
    enough budgets, else every budget once."""
    if not resamples_budgets(n_budgets):
        return np.arange(n_budgets)
    while True:
        pick = rng.integers(0, n_budgets, n_budgets)
        if len(np.unique(pick)) >= 2:
            return pick


def draw_runs(members: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Row indices for one two-stage draw: budgets (see `draw_budgets`), then the runs of
    each drawn budget with replacement."""
    budgets = draw_budgets(len(members), rng)
    return np.concatenate([rng.choice(members[g], len(members[g])) for g in budgets])


def what_is_resampled(n_budgets: int, within: str) -> str:
    """The bootstrap's description for fit.json and the report."""
    if resamples_budgets(n_budgets):
        return f"budgets with replacement ({n_budgets}), then {within}"
    return (
        f"{within}; budgets not resampled (only {n_budgets}, fewer than "
        f"{MIN_BUDGETS_TO_RESAMPLE}: the interval leaves out the scatter between budgets)"
    )
