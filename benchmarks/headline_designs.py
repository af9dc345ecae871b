"""Is the headline right, honest *and* narrow? Every simulated design of
benchmarks.synthetic.DESIGNS (Hunyuan-style, symmetric and asymmetric curves; 3, 6 and 9
budgets; off-centre grids; Student-t noise of 0.5–0.7% with outliers at the grid edges; and a
design like a real sweep) is fitted seed by seed as `moescale fit` does, and the headline
N_opt scored at a factor past the largest budget: bias (median error), median |error|,
95%-interval coverage, and the width test — the median log(hi/lo) against 2 × 1.96 × the
s.d. of log N_opt across the seeds (an interval that covers by being vague has a large ratio).

    .venv/bin/python -m benchmarks.headline_designs --seeds 20            # every design
    .venv/bin/python -m benchmarks.headline_designs --designs real-like --factor 10
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from benchmarks.synthetic import DESIGNS
from moescale.fitting.options import FitOptions
from moescale.fitting.pipeline import fit_all


def score_seed(name: str, seed: int, factors: tuple[float, ...], bootstrap: int) -> list[dict]:
    """One seed of one design fitted once as `moescale fit` does (its target the largest
    factor; less the hold-out check, which moves no number scored here), its headline
    scored at each of `factors` past the largest budget: the method, log error, coverage and
    log(hi/lo). One fit serves every factor: which method leads does not depend on the target
    (`choose_method`), and each method predicts at any budget."""
    design = DESIGNS[name]
    table = design.sweep(seed)
    largest = max(design.budgets)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_all(
            table,
            None,
            design.name,
            # the hold-out check only words the headline's reach: nothing scored here
            FitOptions(
                target_flops=max(factors) * largest, bootstrap=bootstrap, holdout_check=False
            ),
            strict=False,
        )
    rows = []
    for factor in factors:
        p = fit.predict_at(factor * largest)[fit.lead_method]
        truth = design.truth(factor * largest)
        low, high = p.n_opt_interval or (np.nan, np.nan)
        rows.append(
            {
                "design": design.name,
                "factor": factor,
                "seed": seed,
                "method": p.method,
                "log_error": np.log(p.n_opt / truth),
                "covered": bool(low <= truth <= high),
                "log_width": np.log(high / low),
            }
        )
    return rows


def score_designs(
    cases: list[tuple[str, float]], seeds: range, bootstrap: int = 200, workers: int = 1
) -> pd.DataFrame:
    """One row per (design, factor) case and seed, each design and seed fitted once;
    `workers` processes fit the seeds side by side (each fit is single-threaded numpy)."""
    factors: dict[str, list[float]] = {}
    for name, factor in cases:
        factors.setdefault(name, []).append(factor)
    tasks = [(name, seed, tuple(f), bootstrap) for name, f in factors.items() for seed in seeds]
    if workers <= 1:
        return pd.DataFrame([row for task in tasks for row in score_seed(*task)])
    # one BLAS thread a process: the workers already fill the cores
    single = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
    saved = {key: os.environ.get(key) for key in single}
    os.environ.update(single)  # read by each spawned worker's numpy at import
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            scored = pool.map(score_seed, *zip(*tasks, strict=True))
            return pd.DataFrame([row for rows in scored for row in rows])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def summarise(scores: pd.DataFrame) -> dict:
    """Bias, median |error|, coverage, median hi/lo and the width ratio of one design."""
    spread = scores["log_error"].std(ddof=1)
    return {
        "design": scores["design"].iloc[0],
        "headline": ", ".join(f"{m} {n}" for m, n in scores["method"].value_counts().items()),
        "bias": float(np.expm1(scores["log_error"].median())),
        "median |error|": float(np.expm1(scores["log_error"].abs().median())),
        "coverage": float(scores["covered"].mean()),
        "median hi/lo": float(np.exp(scores["log_width"].median())),
        "width ratio": float(scores["log_width"].median() / (2 * 1.96 * spread)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--factor", type=float, default=100.0)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--designs", nargs="*", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--workers", type=int, default=1, help="processes fitting side by side")
    args = parser.parse_args()
    print(
        f"| design | headline | bias | median abs error | coverage | median hi/lo | width ratio |"
        f"  ({args.seeds} seeds, {args.factor:g}× past the largest budget)"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.designs:
        scores = score_designs(
            [(name, args.factor)], range(args.seeds), args.bootstrap, args.workers
        )
        s = summarise(scores)
        print(
            f"| {s['design']} | {s['headline']} | {s['bias']:+.1%} | {s['median |error|']:.1%} | "
            f"{s['coverage']:.0%} | {s['median hi/lo']:.2f} | {s['width ratio']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
