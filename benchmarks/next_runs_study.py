"""`moescale suggest` against extending the grid, on simulated sweeps whose truth is known.

For each seed: a sweep of a design (benchmarks.synthetic: grids not centred on the optimum,
Student-t noise plus a positive mistuning penalty — not the Gaussian the screen assumes) is
fitted; `suggest_next_runs` picks K runs within the FLOPs the sweep's next budget would cost.
Against it: the grid continued by its own rule (K sizes a step apart around the design's
drifting guess, at the next budget: what the researcher would have run) and the next budget's
K runs centred on the fitted optimum instead. Every set is "trained" `draws` times — its losses
drawn from the true law with the design's noise, the same draw for a run two sets share — and
the pipeline refitted each time: one seed's width for a set is the geometric mean over its
draws (one draw is mostly noise: the headline's lead method, and with it the width, can flip
with a single run), its coverage the share of draws whose interval holds the true N_opt.
Reported: the headline interval's width (hi/lo of N_opt at the target, 95%) now, as `suggest`
predicted it, and after each set; per seed, the suggested set's log width over the continued
grid's, and how often it is below 1.

    python -m benchmarks.next_runs_study [--seeds 20] [--design hunyuan-6] [--runs 4] [--draws 4]
"""

from __future__ import annotations

import argparse
import math
import zlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from benchmarks.synthetic import DESIGNS, Design, _row, observed
from moescale.errors import UserError
from moescale.fitting.options import FitOptions
from moescale.fitting.pipeline import fit_all
from moescale.fitting.studies.next_runs import (
    Misfit,
    Point,
    centred_next_budget,
    suggest_next_runs,
)

TARGET_FACTOR = 100.0  # the headline 100× past the largest budget, as `moescale fit` sets it
DESIGNS_COMPARED = ("suggested", "continued", "centred")


@dataclass(frozen=True)
class Outcome:
    width_now: float
    width_predicted: float  # what suggest expected after its runs
    predicted_range: tuple[float, float]  # its narrowest and widest simulated outcome
    width_suggested: float  # geometric means over the draws of the runs' noise
    width_continued: float  # the grid continued by its own rule to its next budget
    width_centred: float  # the next budget's runs centred on the fitted optimum instead
    covered_suggested: float  # the share of draws whose interval holds the truth
    covered_continued: float
    covered_centred: float
    chosen: str


def _trained(design: Design, points, seed: int, draw: int = 0) -> pd.DataFrame:
    """The points "trained": each loss drawn from the true law with the design's noise, from
    a generator seeded by the seed, the draw and the point (the same run gets the same loss
    in every set of one draw)."""
    rows = []
    for p in points:
        key = zlib.crc32(f"{seed}:{draw}:{p.budget_flops:.6g}:{p.n_active:.6g}".encode())
        clean = float(design.law.loss(p.n_active, p.tokens))
        loss = observed(clean, np.random.default_rng(key), design.noise, design.mistuning)
        rows.append(_row(design.law, design.compute_law, p.budget_flops, p.n_active, loss))
    return pd.DataFrame(rows)


def compare(
    design: Design,
    seed: int,
    k: int = 4,
    simulations: int = 4,
    bootstrap: int = 100,
    draws: int = 4,
    misfit: bool = True,
) -> Outcome:
    """One seed: the suggested runs against the grid continued (module docstring). With
    `misfit`, as `moescale suggest` does, the fit's hold-out check sizes the law's own error
    in the simulated outcomes (here the law is exact: what the check measures is noise)."""
    runs = design.sweep(seed)
    target = TARGET_FACTOR * design.budgets[-1]
    options = FitOptions(bootstrap=bootstrap, holdout_check=False, target_flops=target)
    fit = fit_all(runs, None, "simulated", replace(options, holdout_check=misfit))
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
    nxt = design.next_budget()
    continued = tuple(point_at(nxt, n) for n in design.grid(nxt, k))
    chosen = suggest_next_runs(
        fit.parametric, law, target, fit.prediction.n_opt_interval, budgets, k, point_at,
        refit, size_step=design.step, simulations=simulations, seed=seed, grid=continued,
        misfit=Misfit.of(fit.extrapolation) if misfit else None,
    )  # fmt: skip
    designs = {
        "suggested": chosen.chosen.points,
        "continued": continued,
        "centred": centred_next_budget(fit.parametric, law, budgets, k, point_at, design.step),
    }
    truth = design.truth(target)
    after, done = {}, {}  # a set of runs already refitted (suggest often picks a default)
    for name, points in designs.items():
        key = frozenset((p.budget_flops, p.n_active) for p in points)
        if key not in done:
            log_widths, covered = [], []
            for draw in range(draws):
                low, high = headline(_trained(design, points, seed, draw))
                log_widths.append(math.log(high / low))
                covered.append(low <= truth <= high)
            done[key] = (math.exp(np.mean(log_widths)), float(np.mean(covered)))
        after[name] = done[key]
    return Outcome(
        width_now=chosen.width_now,
        width_predicted=chosen.chosen.width,
        predicted_range=chosen.chosen.width_range,
        **{f"width_{name}": width for name, (width, _) in after.items()},
        **{f"covered_{name}": covered for name, (_, covered) in after.items()},
        chosen=chosen.chosen.name,
    )


def log_width_ratio(outcomes: list[Outcome], baseline: str = "continued") -> np.ndarray:
    """Per seed: the suggested runs' log width over the baseline's (below 1: narrower)."""
    return np.array(
        [math.log(o.width_suggested) / math.log(getattr(o, f"width_{baseline}")) for o in outcomes]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--design", default="hunyuan-6", choices=sorted(DESIGNS))
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--simulations", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--draws", type=int, default=4, help="trainings of each set per seed")
    parser.add_argument(
        "--exact-law", action="store_true", help="simulate outcomes without the law's misfit"
    )
    args = parser.parse_args()
    rows = []
    for seed in range(args.seeds):
        o = compare(
            DESIGNS[args.design], seed, args.runs, args.simulations, args.bootstrap, args.draws,
            misfit=not args.exact_law,
        )  # fmt: skip
        rows.append(o)
        print(
            f"seed {seed:2d}: now ×{o.width_now:.3f}  predicted ×{o.width_predicted:.3f}  "
            + "  ".join(
                f"{name} ×{getattr(o, 'width_' + name):.3f}"
                f" (covers {getattr(o, 'covered_' + name):.0%})"
                for name in DESIGNS_COMPARED
            )
            + f"  [{o.chosen}]",
            flush=True,
        )
    table = pd.DataFrame([o.__dict__ for o in rows])
    print(
        f"\n{args.design}, {args.seeds} seeds × {args.draws} trainings, K = {args.runs}: "
        "median width (hi/lo of N_opt, 95%)"
    )
    for column in ("now", "predicted", *DESIGNS_COMPARED):
        print(f"  {column:10s} ×{table['width_' + column].median():.3f}")
    for name in DESIGNS_COMPARED[1:]:
        ratio = log_width_ratio(rows, name)
        print(
            f"  log width suggested / {name}: median {np.median(ratio):.3f}, "
            f"mean {ratio.mean():.3f}, narrower in {np.mean(ratio < 1):.0%} of seeds "
            f"(wider in {np.mean(ratio > 1):.0%})"
        )
    coverage = ", ".join(f"{n} {table['covered_' + n].mean():.0%}" for n in DESIGNS_COMPARED)
    print(f"  coverage: {coverage}")
    inside = [
        low <= w <= high
        for (low, high), w in zip(table["predicted_range"], table["width_suggested"], strict=True)
    ]
    print(f"  suggested width inside its predicted outcomes' range: {np.mean(inside):.0%}")
    print("  chosen designs:", table["chosen"].value_counts().to_dict())


if __name__ == "__main__":
    main()
