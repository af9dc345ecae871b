"""How right is the headline? On the simulated design of benchmarks.synthetic (known
truth, grids not centred on it, Student-t noise plus a positive mistuning penalty), fit each
seed's sweep with `fit_all` as `moescale fit` does and score the headline N_opt at 100× and
10,000× past the largest budget: bias, median |error|, 95%-interval coverage, interval width,
and whether (a·N_opt + b)·D_opt spends the budget. Also times one fit.

    .venv/bin/python -m benchmarks.headline_coverage --seeds 20
    .venv/bin/python -m benchmarks.headline_coverage --save-tables /tmp/sim   # for another version

With --tables DIR it fits saved tables instead (so an older moescale can score the same draws).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from moescale.fitting.options import FitOptions
from moescale.fitting.pipeline import fit_all

FACTORS = (100.0, 10_000.0)


def truth_at(flops: float) -> float:
    from benchmarks.synthetic import SIMULATED_COMPUTE_LAW, SIMULATED_LAW

    return SIMULATED_LAW.optimal(flops, SIMULATED_COMPUTE_LAW)["n_opt"]


def score(table: pd.DataFrame, bootstrap: int, method: str | None = None) -> list[dict]:
    largest = float(table["budget_flops"].max())
    rows = []
    for factor in FACTORS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = time.perf_counter()
            fit = fit_all(
                table,
                None,
                "sim",
                FitOptions(target_flops=factor * largest, bootstrap=bootstrap),
                strict=False,
            )
            seconds = time.perf_counter() - started
        p = fit.prediction if method is None else fit.predictions[method]
        truth = truth_at(factor * largest)
        low, high = p.n_opt_interval or (np.nan, np.nan)
        law = fit.compute_law
        rows.append(
            {
                "factor": factor,
                "method": p.method,
                "error": p.n_opt / truth - 1,
                "covered": bool(low <= truth <= high),
                "width": high / low,
                "spent": law.flops_per_token(p.n_opt) * p.d_opt / (factor * largest) - 1,
                "seconds": seconds,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--save-tables", type=Path)
    parser.add_argument("--tables", type=Path)
    parser.add_argument(
        "--method", choices=("isoflop", "parametric"), help="score this method, not the headline"
    )
    args = parser.parse_args()
    rows = []
    for seed in range(args.seeds):
        if args.tables:
            table = pd.read_parquet(args.tables / f"seed{seed}.parquet")
        else:
            from benchmarks.synthetic import simulated_design_sweep

            table = simulated_design_sweep(seed)
        if args.save_tables:
            args.save_tables.mkdir(parents=True, exist_ok=True)
            table.to_parquet(args.save_tables / f"seed{seed}.parquet")
            continue
        for row in score(table, args.bootstrap, args.method):
            rows.append({"seed": seed, **row})
            print(
                f"seed {seed:2d} {row['factor']:>7.0f}×  {row['method']:10s} error {row['error']:+.1%}  "
                f"covered {row['covered']!s:5s}  hi/lo {row['width']:.2f}  fit {row['seconds']:.1f} s",
                flush=True,
            )
    if not rows:
        return
    frame = pd.DataFrame(rows)
    print(
        "\n| target | headline method(s) | median error | median abs error | coverage | median hi/lo | worst budget spent | median fit s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for factor, group in frame.groupby("factor"):
        methods = ", ".join(f"{m} {n}" for m, n in group.method.value_counts().items())
        print(
            f"| {factor:.0f}× | {methods} | {group['error'].median():+.1%} | {group['error'].abs().median():.1%} | "
            f"{group['covered'].sum()} of {len(group)} | {group['width'].median():.2f} | "
            f"{group['spent'].abs().max():.1%} | {group['seconds'].median():.1f} |"
        )


if __name__ == "__main__":
    main()
