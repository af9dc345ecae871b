"""`moescale suggest` against extending the grid, on simulated sweeps whose truth is known.

For each seed: a sweep of a design (benchmarks.synthetic: grids not centred on the optimum,
Student-t noise plus a positive mistuning penalty — not the Gaussian the screen assumes) is
fitted; `suggest_next_runs` picks K runs within the FLOPs the regular grid's next budget
would cost; both sets are then "trained" — their losses drawn from the true law with the
design's noise, the same draw for a run both sets share — and the pipeline refitted. Reported:
the headline interval's width (hi/lo of N_opt at the target, 95%) now, as `suggest` predicted
it, and after each, and whether each covers the true N_opt.

    python -m benchmarks.next_runs_study [--seeds 20] [--design hunyuan-6] [--runs 4]
"""

from __future__ import annotations

import argparse
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmarks.synthetic import DESIGNS, Design, _row, observed
from moescale.errors import UserError
from moescale.fitting.options import FitOptions
from moescale.fitting.pipeline import fit_all
from moescale.fitting.studies.next_runs import Point, regular_next_budget, suggest_next_runs

TARGET_FACTOR = 100.0  # the headline 100× past the largest budget, as `moescale fit` sets it


@dataclass(frozen=True)
class Outcome:
    width_now: float
    width_predicted: float  # what suggest expected after its runs
    width_suggested: float
    width_regular: float
    covered_suggested: bool
    covered_regular: bool
    chosen: str


def _trained(design: Design, points, seed: int) -> pd.DataFrame:
    """The points "trained": each loss drawn from the true law with the design's noise, from
    a generator seeded by the seed and the point (the same run gets the same loss)."""
    rows = []
    for p in points:
        key = zlib.crc32(f"{seed}:{p.budget_flops:.6g}:{p.n_active:.6g}".encode())
        clean = float(design.law.loss(p.n_active, p.tokens))
        loss = observed(clean, np.random.default_rng(key), design.noise, design.mistuning)
        rows.append(_row(design.law, design.compute_law, p.budget_flops, p.n_active, loss))
    return pd.DataFrame(rows)


def compare(design: Design, seed: int, k: int = 4, simulations: int = 4, bootstrap: int = 100):
    """One seed: the suggested runs against the regular grid's next budget (module docstring)."""
    runs = design.sweep(seed)
    target = TARGET_FACTOR * design.budgets[-1]
    options = FitOptions(bootstrap=bootstrap, holdout_check=False, target_flops=target)
    fit = fit_all(runs, None, "simulated", options)
    law = fit.law

    def point_at(budget: float, n: float) -> Point:
        return Point(budget, n, float(law.tokens(budget, n)), budget)

    def headline(extra: pd.DataFrame):
        try:
            report = fit_all(pd.concat([runs, extra], ignore_index=True), None, "sim", options)
        except UserError:
            return None
        return report.prediction.n_opt_interval

    def refit(points, losses):
        rows = [_row(design.law, law, p.budget_flops, p.n_active, float(loss))
                for p, loss in zip(points, losses, strict=True)]  # fmt: skip
        return headline(pd.DataFrame(rows))

    budgets = list(design.budgets)
    chosen = suggest_next_runs(
        fit.parametric, law, target, fit.prediction.n_opt_interval, budgets, k, point_at,
        refit, size_step=design.step, simulations=simulations, seed=seed,
    )  # fmt: skip
    regular = regular_next_budget(fit.parametric, law, budgets, k, point_at, design.step)
    truth = design.truth(target)
    after = {}
    for name, points in (("suggested", chosen.chosen.points), ("regular", regular)):
        low, high = headline(_trained(design, points, seed))
        after[name] = (high / low, low <= truth <= high)
    return Outcome(
        width_now=chosen.width_now,
        width_predicted=chosen.chosen.width,
        width_suggested=after["suggested"][0],
        width_regular=after["regular"][0],
        covered_suggested=after["suggested"][1],
        covered_regular=after["regular"][1],
        chosen=chosen.chosen.name,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--design", default="hunyuan-6", choices=sorted(DESIGNS))
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--simulations", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    rows = []
    for seed in range(args.seeds):
        o = compare(DESIGNS[args.design], seed, args.runs, args.simulations, args.bootstrap)
        rows.append(o)
        print(
            f"seed {seed:2d}: now ×{o.width_now:.3f}  predicted ×{o.width_predicted:.3f}  "
            f"suggested ×{o.width_suggested:.3f} ({'covers' if o.covered_suggested else 'MISSES'})  "
            f"regular ×{o.width_regular:.3f} ({'covers' if o.covered_regular else 'MISSES'})  "
            f"[{o.chosen}]",
            flush=True,
        )
    table = pd.DataFrame([o.__dict__ for o in rows])
    print(f"\n{args.design}, {args.seeds} seeds, K = {args.runs}: median width (hi/lo of N_opt)")
    for column in ("width_now", "width_predicted", "width_suggested", "width_regular"):
        print(f"  {column:16s} ×{table[column].median():.3f}")
    ratio = np.log(table["width_suggested"]) / np.log(table["width_regular"])
    print(f"  log-width suggested / regular: median {ratio.median():.3f}")
    print(
        f"  coverage: suggested {table['covered_suggested'].mean():.0%}, "
        f"regular {table['covered_regular'].mean():.0%}"
    )
    print("  chosen designs:", table["chosen"].value_counts().to_dict())


if __name__ == "__main__":
    main()
