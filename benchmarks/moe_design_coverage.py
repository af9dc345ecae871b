"""How right are the MoE design answers? On the simulated design study of
benchmarks.synthetic (a known joint law in the per-E form, four variants — dense, 8 and
32 experts, 8 experts cut 4-fine — on grids around a guessed optimum that is not any
variant's, Student-t noise plus a positive mistuning penalty), fit each seed's sweep as
`moescale fit` does and score: how often the form is chosen right, each law parameter's
bias and 95%-interval coverage, held-out variants' optimal loss against the truth, and the
compute multiplier at 100× the largest budget against the truth — a recipe variant's too
(e8-k1-bias: e8-k1's shape with 1.3× as effective parameters, measured against e8-k1).

    .venv/bin/python -m benchmarks.moe_design_coverage --seeds 20
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from benchmarks.synthetic import (
    SIMULATED_MOE_BUDGETS,
    SIMULATED_MOE_THETA,
    SIMULATED_MOE_VARIANTS,
    SIMULATED_RECIPE_VARIANTS,
    moe_design_sweep,
)
from moescale.fitting.laws.compute_law import ComputeLaw
from moescale.fitting.laws.isoflop import fit_isoflop
from moescale.fitting.laws.joint_law import JointLaw
from moescale.fitting.studies.moe_design import compute_multiplier, fit_moe_design

TRUTH = JointLaw("per-E", SIMULATED_MOE_THETA, "additive", 0.0, 0, (1.0, 32.0), (1.0, 4.0))
LAW_6ND = ComputeLaw(a=6.0, b=0.0, r2=1.0)
GUESS = {"guess_coef": 0.015, "guess_exponent": 0.5}  # 1.3× dense's truth, 2.5× e32's
FACTOR = 100.0


def _e_g(name: str) -> tuple[float, float]:
    experts, top_k, g = SIMULATED_MOE_VARIANTS[name]
    return (experts / top_k if experts else 1.0), float(g)


def score_seed(seed: int, bootstrap: int) -> dict:
    """One seed's fit, scored against the truth."""
    runs = moe_design_sweep(
        TRUTH, LAW_6ND, list(SIMULATED_MOE_BUDGETS), SIMULATED_MOE_VARIANTS, seed=seed,
        recipes=SIMULATED_RECIPE_VARIANTS, **GUESS,
    )  # fmt: skip
    target = FACTOR * max(SIMULATED_MOE_BUDGETS)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {
            name: fit_isoflop(part, bootstrap=bootstrap) for name, part in runs.groupby("variant")
        }
        design = fit_moe_design(runs, fits, target, LAW_6ND, bootstrap)
    seconds = time.perf_counter() - started
    truth = TRUTH.params()
    truth["A"] += truth["g"]  # two G values: the law's A is the truth's A + g at G = 1
    params = {}
    for name, value in design.law.params().items():
        if name in ("g", "gamma_g"):
            continue  # two G values: the law's G factor is not the truth's additive term
        low, high = design.law.intervals.get(name) or (np.nan, np.nan)
        params[name] = {"error": value - truth[name], "covered": bool(low <= truth[name] <= high)}
    held = []
    for h in design.held_out:
        if "budgets" not in h or _e_g(h["variant"])[1] > 1:
            continue  # the granular variant cannot be predicted without a G > 1 variant
        e, g = _e_g(h["variant"])
        for b in h["budgets"]:
            true_loss = float(TRUTH.optimum(b["budget"], e, g, compute_law=LAW_6ND)[0][0])
            low, high = b["interval"] or (np.nan, np.nan)
            held.append(low <= true_loss <= high)
    multipliers = {}
    for m in design.multipliers:
        if m["where"] != "target":
            continue
        if m["variant"] in SIMULATED_RECIPE_VARIANTS:
            true_m = SIMULATED_RECIPE_VARIANTS[m["variant"]][1]  # at every budget
        else:
            e, g = _e_g(m["variant"])
            true_m = float(compute_multiplier(TRUTH, target, e, g, LAW_6ND)[0])
        low, high = m["interval"] or (np.nan, np.nan)
        print(
            f"seed {seed} {design.selection['chosen']} {m['variant']}: {m['law']:.3f} vs {true_m:.3f} [{low:.3f}, {high:.3f}]"
        )
        multipliers[m["variant"]] = {
            "error": m["law"] / true_m - 1,
            "covered": bool(low <= true_m <= high),
        }
    return {
        "seed": seed,
        "form": design.selection["chosen"],
        "params": params,
        "held_out_covered": held,
        "multipliers": multipliers,
        "seconds": seconds,
    }


def study(seeds: int, bootstrap: int) -> dict:
    """Many seeds, summarised: form choice, parameter bias and coverage, held-out coverage,
    multiplier error and coverage."""
    scores = [score_seed(seed, bootstrap) for seed in range(seeds)]
    params = (
        pd.DataFrame([{"param": k, **v} for s in scores for k, v in s["params"].items()])
        .groupby("param")
        .agg(bias=("error", "mean"), coverage=("covered", "mean"))
    )
    mult = pd.DataFrame([{"variant": k, **v} for s in scores for k, v in s["multipliers"].items()])
    mult["abs_error"] = mult["error"].abs()
    held = [c for s in scores for c in s["held_out_covered"]]
    return {
        "per_e_chosen": float(np.mean([s["form"] == "per-E" for s in scores])),
        "params": params,
        "held_out_coverage": float(np.mean(held)),
        "multipliers": mult.groupby("variant").agg(
            bias=("error", "mean"),
            max_abs_error=("abs_error", "max"),
            coverage=("covered", "mean"),
        ),
        "seconds": float(np.median([s["seconds"] for s in scores])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=100)
    args = parser.parse_args()
    result = study(args.seeds, args.bootstrap)
    print(f"{args.seeds} seeds, {args.bootstrap} bootstrap refits each; truth: {TRUTH.params()}")
    print(f"per-E form chosen in {result['per_e_chosen']:.0%} of seeds")
    print("law parameters (bias = fitted − true; coverage of the true value by the 95% interval):")
    print(result["params"].to_string(float_format=lambda v: f"{v:.4f}"))
    print(
        f"held-out variants (E only): true optimal loss inside the interval {result['held_out_coverage']:.0%}"
    )
    print(f"compute multiplier at {FACTOR:g}× the largest budget against the truth:")
    print(result["multipliers"].to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"median seconds per fit (variants' isoFLOP fits + design): {result['seconds']:.1f}")


if __name__ == "__main__":
    main()
