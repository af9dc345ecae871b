"""The critical batch, checked on simulations whose truth is known: does `fit_critical_batch`
recover B_crit(L) = B*·L^(−1/α_B) from noisy noise-scale curves, and is its 95% interval
honest; and does a fit on C_min remove the bias a batch above B_crit puts into the isoFLOP
optimum? Truth: Kaplan et al. 2020's B* = 2e8 tokens, α_B = 0.21 (their §5.1).

    python -m benchmarks.critical_batch_coverage [--seeds 100]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from benchmarks.synthetic import guessed_sizes, observed
from moescale.fitting.laws.compute_law import ComputeLaw
from moescale.fitting.laws.critical_batch import (
    CriticalBatchFit,
    fit_critical_batch,
    on_minimal_compute,
)
from moescale.fitting.laws.isoflop import fit_isoflop
from moescale.fitting.laws.parametric import ParametricFit
from moescale.fitting.laws.powerlaw import PowerLaw
from moescale.results import RunStatus

B_STAR, ALPHA_B = 2e8, 0.21
TRUE_CRITICAL = CriticalBatchFit(PowerLaw(B_STAR, -1.0 / ALPHA_B), 0, 0, (0.0, 0.0))
LOSSES_AT = (2.4, 3.2)  # where B_crit's interval is scored


def noise_curves(seed: int, n_runs: int = 12) -> pd.DataFrame:
    """Logged curves of `n_runs` runs whose noise scale follows the true law, with what the
    fit does not assume: each run its own offset (its size and LR move B_noise too), errors
    correlated along a run (AR(1), as an EMA's are) with Student-t (3 dof) tails, and a noisy
    training loss; runs of different lengths ending at different losses."""
    rng = np.random.default_rng(seed)
    rows = []
    for run in range(n_runs):
        floor = rng.uniform(1.9, 3.0)
        steps = np.arange(10, 10 * int(rng.integers(30, 120)) + 1, 10)
        loss = floor + 2.0 * (steps / 10.0) ** -0.5
        offset = 0.3 * rng.standard_normal()
        shocks = 0.15 * rng.standard_t(3, len(steps)) / np.sqrt(3.0)
        drift = np.zeros(len(steps))
        for i in range(len(steps)):
            drift[i] = (0.8 * drift[i - 1] if i else 0.0) + shocks[i]
        noise_scale = TRUE_CRITICAL(loss) * np.exp(offset + drift)
        train_loss = loss * (1 + 0.02 * rng.standard_t(3, len(steps)) / np.sqrt(3.0))
        rows.append(
            pd.DataFrame(
                {
                    "run_id": f"r{run}",
                    "step": steps,
                    "train_loss": train_loss,
                    "grad_noise_scale": noise_scale,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def score_law(seed: int, bootstrap: int = 200) -> dict:
    """One seed's fitted α_B and B_crit at LOSSES_AT, and whether each interval covers."""
    fit = fit_critical_batch(noise_curves(seed), bootstrap=bootstrap, seed=seed)
    low, high = fit.alpha_b_interval
    out = {
        "alpha_b": fit.alpha_b,
        "alpha_covered": low <= ALPHA_B <= high,
        "alpha_width": (high - low) / ALPHA_B,
    }
    for loss in LOSSES_AT:
        b_low, b_high = fit.interval(loss)
        out[f"b_crit_{loss}"] = fit(loss) / TRUE_CRITICAL(loss)
        out[f"b_crit_{loss}_covered"] = b_low <= TRUE_CRITICAL(loss) <= b_high
    return out


# A Chinchilla-shaped law (Hoffmann et al. 2022's published fit, nats/token) under 6ND, five
# budgets, every run at one batch of 2^19 tokens: at the small budgets' losses (~3.4) that is
# about twice B_crit, at the largest (~2.9) about half, so the penalty falls with the budget.
LAW = ParametricFit(
    E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, objective=0.0, n_points=0, huber_delta=0.0
)
LAW_6ND = ComputeLaw(a=6.0, b=0.0, r2=1.0)
BUDGETS = tuple(float(c) for c in np.geomspace(1e18, 1e20, 5))
BATCH_TOKENS = 2.0**19
TARGET = 1e21


def true_n_opt(flops: float) -> float:
    """N_opt of the law at C = 6ND (Hoffmann et al. 2022, eq. 4)."""
    a, b = LAW.alpha, LAW.beta
    scale = (a * LAW.A / (b * LAW.B)) ** (1 / (a + b))
    return float(scale * (flops / 6.0) ** (b / (a + b)))


def penalised_sweep(seed: int) -> pd.DataFrame:
    """An isoFLOP sweep trained at BATCH_TOKENS: each run reaches the loss of its tokens less
    the batch penalty, L = law(N, D/(1 + B/B_crit(L))) (Kaplan eq. 5.4, solved by iteration),
    with sizes around a guessed optimum (not centred) and observed()'s noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget in BUDGETS:
        for n in guessed_sizes(budget, 0.6 * true_n_opt(budget) / budget**0.5, 0.5, 7, 2.0):
            tokens = budget / (6.0 * n)
            loss = float(LAW.loss(n, tokens))
            for _ in range(60):
                loss = float(LAW.loss(n, tokens / (1 + BATCH_TOKENS / TRUE_CRITICAL(loss))))
            rows.append(
                {
                    "run_id": f"s{budget:.3g}-{n:.4g}",
                    "n_active": n,
                    "tokens": tokens,
                    "flops": budget,
                    "budget_flops": budget,
                    "batch_tokens": BATCH_TOKENS,
                    "final_loss": observed(loss, rng, 0.003, 0.001),
                    "status": RunStatus.COMPLETED.value,
                }
            )
    return pd.DataFrame(rows)


def score_adjustment(seed: int) -> dict:
    """log(N_opt fitted / true) at TARGET, fitted on the counted budget and on C_min."""
    runs = penalised_sweep(seed)
    truth = np.log(true_n_opt(TARGET))
    nominal = fit_isoflop(runs).predict(TARGET)["n_opt"]
    adjusted = fit_isoflop(on_minimal_compute(runs, TRUE_CRITICAL)).predict(TARGET)["n_opt"]
    return {"on_c": np.log(nominal) - truth, "on_c_min": np.log(adjusted) - truth}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    args = parser.parse_args()
    law = pd.DataFrame([score_law(seed) for seed in range(args.seeds)])
    print(f"B_crit(L) over {args.seeds} seeds (truth B* = {B_STAR:.3g}, α_B = {ALPHA_B}):")
    print(
        f"  α_B median {law['alpha_b'].median():.4f} (bias {law['alpha_b'].median() / ALPHA_B - 1:+.1%}), "
        f"95% interval covers {law['alpha_covered'].mean():.0%}, median width "
        f"{law['alpha_width'].median():.0%} of α_B"
    )
    for loss in LOSSES_AT:
        ratio = law[f"b_crit_{loss}"]
        print(
            f"  B_crit at L = {loss}: median fitted/true {ratio.median():.3f}, "
            f"covers {law[f'b_crit_{loss}_covered'].mean():.0%}"
        )
    shift = pd.DataFrame([score_adjustment(seed) for seed in range(args.seeds)])
    print(
        f"N_opt at {TARGET:.0e} on a sweep trained at {BATCH_TOKENS:.3g} tokens/step, "
        f"fitted/true (median over seeds): on C {np.exp(shift['on_c'].median()):.3f}, "
        f"on C_min {np.exp(shift['on_c_min'].median()):.3f}"
    )


if __name__ == "__main__":
    main()
