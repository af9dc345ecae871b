"""Is the headline right, honest *and* narrow? Every simulated design of
moescale.fitting.synthetic.DESIGNS (Hunyuan-style, symmetric and asymmetric curves; 3, 6 and 9
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
import warnings

import numpy as np
import pandas as pd

from moescale.fitting.pipeline import fit_all
from moescale.fitting.synthetic import DESIGNS, Design


def score_design(
    design: Design, seeds: range, factor: float = 100.0, bootstrap: int = 200
) -> pd.DataFrame:
    """One row per seed: the headline's method, log error, coverage and log(hi/lo)."""
    rows = []
    for seed in seeds:
        table = design.sweep(seed)
        target = factor * max(design.budgets)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fit_all(table, None, design.name, "all", target, bootstrap, strict=False)
        p = fit.prediction
        truth = design.truth(target)
        low, high = p.get("n_opt_interval") or (np.nan, np.nan)
        rows.append(
            {
                "design": design.name,
                "seed": seed,
                "method": p["method"],
                "log_error": np.log(p["n_opt"] / truth),
                "covered": bool(low <= truth <= high),
                "log_width": np.log(high / low),
            }
        )
    return pd.DataFrame(rows)


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
    args = parser.parse_args()
    print(
        f"| design | headline | bias | median abs error | coverage | median hi/lo | width ratio |"
        f"  ({args.seeds} seeds, {args.factor:g}× past the largest budget)"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.designs:
        s = summarise(score_design(DESIGNS[name], range(args.seeds), args.factor, args.bootstrap))
        print(
            f"| {s['design']} | {s['headline']} | {s['bias']:+.1%} | {s['median |error|']:.1%} | "
            f"{s['coverage']:.0%} | {s['median hi/lo']:.2f} | {s['width ratio']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
