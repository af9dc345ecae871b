"""How right are the tuned answers? On a simulated LR-tuned sweep (benchmarks.synthetic:
a known Chinchilla law plus a known best-LR law η* = k·C^a·(N/N_opt)^b, an asymmetric LR
penalty the parabola does not assume, grids around a guessed optimum and around one fixed
LR, Student-t noise plus a positive mistuning penalty), fit each seed as `moescale fit` does
and score: the LR law's exponent (bias, 95%-interval coverage), and the N_opt exponent of
the tuned fit against the untuned one (the fixed LR alone) — both against the truth.

    .venv/bin/python -m benchmarks.lr_law_coverage --seeds 20
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from benchmarks.synthetic import (
    SIMULATED_BUDGETS,
    SIMULATED_COMPUTE_LAW,
    SIMULATED_GUESS,
    SIMULATED_LAW,
    SIMULATED_LR_TRUTH,
    lr_tuned_sweep,
)
from moescale.fitting.options import FitOptions
from moescale.fitting.pipeline import fit_all

BUDGETS = list(SIMULATED_BUDGETS[::2])  # five budgets over a factor 19


def true_n_exponent() -> float:
    """The truth's N_opt exponent over the sweep's budgets (b·D makes it drift a little)."""
    n = [SIMULATED_LAW.optimal(c, SIMULATED_COMPUTE_LAW)["n_opt"] for c in BUDGETS]
    return float(np.polyfit(np.log(BUDGETS), np.log(n), 1)[0])


def score_seed(seed: int, bootstrap: int) -> dict:
    table = lr_tuned_sweep(
        SIMULATED_LAW, SIMULATED_COMPUTE_LAW, BUDGETS, seed=seed, **SIMULATED_GUESS
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_all(
            table, None, "sim", FitOptions(method="isoflop", bootstrap=bootstrap), strict=False
        )
    seconds = time.perf_counter() - started
    law = fit.tuning.laws["lr"]
    low, high = law.exponent_interval()
    truth_n = true_n_exponent()
    untuned = fit.tuning.untuned
    return {
        "seed": seed,
        "lr_exponent_error": law.exponent - SIMULATED_LR_TRUTH["exponent"],
        "lr_exponent_covered": bool(low <= SIMULATED_LR_TRUTH["exponent"] <= high),
        "size_exponent_error": law.size_exponent - SIMULATED_LR_TRUTH["size_exponent"],
        "tuned_n_error": fit.tuning.tuned["n_exponent"] - truth_n,
        "tuned_n_covered": bool(
            fit.tuning.tuned["n_exponent_interval"][0]
            <= truth_n
            <= fit.tuning.tuned["n_exponent_interval"][1]
        ),
        "untuned_n_error": untuned.get("n_exponent", np.nan) - truth_n,
        "edge_points": int((fit.tuning.points["at_edge"] != "").sum()),
        "seconds": seconds,
    }


def study(seeds: int, bootstrap: int) -> pd.DataFrame:
    return pd.DataFrame([score_seed(seed, bootstrap) for seed in range(seeds)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=100)
    args = parser.parse_args()
    scores = study(args.seeds, args.bootstrap)
    print(f"{args.seeds} seeds, {args.bootstrap} bootstrap refits; truth: LR law {SIMULATED_LR_TRUTH}, "
          f"N_opt exponent {true_n_exponent():.4f}")  # fmt: skip
    print(
        scores.describe()
        .loc[["mean", "std", "min", "max"]]
        .to_string(float_format=lambda v: f"{v:.4f}")
    )
    print(
        f"LR exponent: bias {scores['lr_exponent_error'].mean():+.4f}, coverage {scores['lr_exponent_covered'].mean():.0%}"
    )
    print(f"N_opt exponent: tuned bias {scores['tuned_n_error'].mean():+.4f} (coverage {scores['tuned_n_covered'].mean():.0%}), "
          f"untuned bias {scores['untuned_n_error'].mean():+.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
