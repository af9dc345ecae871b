"""Bootstrap draws the fits share. The isoFLOP and parametric fits redraw residuals by the
runs' position (`position_pools`, `draw_by_position`: a fixed-design residual bootstrap);
the data-constrained and joint MoE laws still resample budgets, then runs within them —
budgets only when there are enough of them for a case resample to mean something."""

from __future__ import annotations

import numpy as np

MIN_BUDGETS_TO_RESAMPLE = 5  # with fewer, most draws repeat one or two budgets
MAD_TO_SD = 1.4826  # a normal's s.d. over its median absolute deviation


def robust_sd(values: np.ndarray) -> float:
    """The s.d. a normal with these values' median absolute deviation would have: a noise
    scale that edge outliers and a few bad runs cannot inflate."""
    values = np.asarray(values, float)
    return float(MAD_TO_SD * np.median(np.abs(values - np.median(values))))


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


def position_pools(residuals: np.ndarray, at_edge: np.ndarray) -> dict[bool, np.ndarray] | None:
    """Residual pools for edge (True) and interior (False) runs: each its own where both have
    5 or more, else one pool for both; None where every residual is zero."""
    if not np.any(residuals):
        return None
    if at_edge.sum() >= 5 and (~at_edge).sum() >= 5:
        return {True: residuals[at_edge], False: residuals[~at_edge]}
    return {True: residuals, False: residuals}


def draw_by_position(
    pools: dict[bool, np.ndarray], at_edge: np.ndarray, shape: tuple, rng: np.random.Generator
) -> np.ndarray:
    """Residuals for runs at `at_edge` (n,), `shape` = (n, S) draws, each from its kind's pool."""
    out = np.empty(shape)
    for flag, pool in pools.items():
        rows = at_edge == flag
        out[rows] = rng.choice(pool, (int(rows.sum()),) + tuple(shape[1:]))
    return out
