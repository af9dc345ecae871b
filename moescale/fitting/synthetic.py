"""Synthetic isoFLOP sweeps drawn from a known law, to check that fits recover what they should."""

from __future__ import annotations

import numpy as np
import pandas as pd

from moescale.fitting.compute_law import ComputeLaw
from moescale.fitting.parametric import ParametricFit
from moescale.results import RunStatus


def _row(law: ParametricFit, compute_law: ComputeLaw, budget: float, n: float, loss: float):
    tokens = float(compute_law.tokens(budget, n))
    return {
        "run_id": f"sim-{budget:.3g}-{n:.4g}",
        "n_active": n,
        "tokens": tokens,
        "flops_per_token": float(compute_law.flops_per_token(n)),
        "flops": budget,
        "budget_flops": budget,
        "final_loss": loss,
        "status": RunStatus.COMPLETED.value,
    }


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
            rows.append(_row(law, compute_law, budget, n, loss))
    return pd.DataFrame(rows)


def realistic_sweep(
    law: ParametricFit,
    compute_law: ComputeLaw,
    budgets: list[float],
    *,
    guess_coef: float,
    guess_exponent: float,
    sizes_per_budget: int = 7,
    step: float = 2.0,
    noise: float = 0.003,
    mistuning: float = 0.002,
    seed: int = 0,
) -> pd.DataFrame:
    """An isoFLOP table as a researcher would get it: sizes per budget around a *guessed*
    optimum N_guess = guess_coef·C^guess_exponent (so grids are not centred on the truth and
    drift off it with C), `step` apart in N; per-run noise that is not Gaussian — relative
    noise with Student-t (3 dof) tails of scale `noise`, plus a positive mistuning penalty
    (exponential, mean `mistuning` × loss: no run is better than its law, some are worse)."""
    rng = np.random.default_rng(seed)
    offsets = (np.arange(sizes_per_budget) - (sizes_per_budget - 1) / 2) * np.log(step)
    rows = []
    for budget in budgets:
        centre = guess_coef * budget**guess_exponent
        for n in centre * np.exp(offsets):
            tokens = float(compute_law.tokens(budget, n))
            clean = float(law.loss(n, tokens))
            scatter = noise * rng.standard_t(3) / np.sqrt(3.0)  # unit variance before scaling
            penalty = rng.exponential(mistuning)
            rows.append(_row(law, compute_law, budget, n, clean * (1 + scatter + penalty)))
    return pd.DataFrame(rows)


# A simulated Hunyuan-style design whose truth is known (our own law, not a published one):
# the report's compute law, so b·D is 32% of the smallest budget and 12% of the largest;
# nine budgets; seven sizes a factor 2 apart around a guessed optimum that starts at 0.6× the
# truth and drifts to 0.9× it (not centred); Student-t noise plus a positive mistuning penalty.
SIMULATED_LAW = ParametricFit(
    E=1.7, A=300.0, B=2300.0, alpha=0.34, beta=0.34, objective=0.0, n_points=0, huber_delta=0.0
)
SIMULATED_COMPUTE_LAW = ComputeLaw(a=9.59, b=2.3e8, r2=1.0)
SIMULATED_BUDGETS = tuple(float(c) for c in np.geomspace(5e18, 9.5e19, 9))
SIMULATED_GUESS = {"guess_coef": 3.1e7 / 5e18**0.55, "guess_exponent": 0.55}


def simulated_design_sweep(seed: int) -> pd.DataFrame:
    """One draw of the simulated design above."""
    return realistic_sweep(
        SIMULATED_LAW, SIMULATED_COMPUTE_LAW, list(SIMULATED_BUDGETS), seed=seed, **SIMULATED_GUESS
    )


def data_constrained_sweep(
    law,  # a DataConstrainedFit
    compute_law: ComputeLaw,
    budgets: list[float],
    *,
    unique_tokens: float,
    **design,
) -> pd.DataFrame:
    """`realistic_sweep` on one corpus of `unique_tokens`: every run's loss comes from the
    data-constrained law at its own passes over that corpus, and the table has the
    unique_tokens column a real sweep records."""

    class OneCorpus:
        @staticmethod
        def loss(n, d):
            return law.loss(n, d, unique_tokens)

    table = realistic_sweep(OneCorpus, compute_law, budgets, **design)
    table["unique_tokens"] = float(unique_tokens)
    return table
