"""The full parametric fit (Epoch's 4,500-start grid, Huber δ = 1e-3 on log-loss) on the
240 Chinchilla points, by moescale and by the `chinchilla` package (PyPI, 0.2.0: scipy BFGS
per start, 128-bit floats, a process pool), given the same objective and starts; and a
1,000-sample bootstrap of an isoFLOP fit (chinchilla has no isoFLOP method: timed alone); and
`moescale fit`'s whole default work on a simulated sweep of 99 runs (the goal: under a minute).

    python -m benchmarks.bench_fitting                 # both, side by side
    python -m benchmarks.bench_fitting --only moescale # one side (for whole-process timers)
    python -m benchmarks.bench_fitting --screen        # the screened start grid against all of it

Objectives are compared as moescale computes them: the sum of Huber losses at the end point.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np
import pandas as pd

from benchmarks.synthetic import synthetic_sweep
from moescale import published
from moescale.fitting import ComputeLaw, ParametricFit, fit_isoflop, fit_parametric
from moescale.fitting.laws.parametric import (
    EPOCH_GRID,
    _fit_once,
    _objective_and_gradient,
    start_grid,
)

DELTA = 1e-3


def chinchilla_data():
    table = published.epoch_chinchilla().sort_values("final_loss").iloc[:-5]  # Epoch drops 5
    return table


def objective(theta: np.ndarray, table) -> float:
    value, _ = _objective_and_gradient(
        np.asarray(theta, float)[None, :],
        np.log(table["n_active"].to_numpy(float)),
        np.log(table["tokens"].to_numpy(float)),
        np.log(table["final_loss"].to_numpy(float)),
        DELTA,
        gradient=False,
    )
    return float(value[0])


def run_moescale(table) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    fit = fit_parametric(table, huber_delta=DELTA)
    elapsed = time.perf_counter() - start
    return elapsed, np.array([np.log(fit.A), np.log(fit.B), np.log(fit.E), fit.alpha, fit.beta])


def run_chinchilla(table) -> tuple[float, np.ndarray]:
    from chinchilla import Chinchilla

    def huber_on_log(y_true, y_pred):  # the same objective, per point (chinchilla averages)
        residual = np.log(np.clip(y_pred, 1e-30, None)) - np.log(y_true)
        size = np.abs(residual)
        return np.where(size <= DELTA, 0.5 * residual**2, DELTA * (size - 0.5 * DELTA))

    with tempfile.TemporaryDirectory() as folder:
        pd.DataFrame(
            {
                "C": table["flops"],
                "N": table["n_active"],
                "D": table["tokens"],
                "loss": table["final_loss"],
            }
        ).to_csv(f"{folder}/df.csv", index=False)
        grid = {key: tuple(values) for key, values in EPOCH_GRID.items()}
        model = Chinchilla(
            folder,
            param_grid=grid,
            loss_fn=huber_on_log,
            log_level=logging.ERROR,
            model_search_config=None,
        )
        model.visualizer.optim = lambda *args, **kwargs: None  # no plotting inside the timing
        start = time.perf_counter()
        model.fit(parallel=True)
        elapsed = time.perf_counter() - start
    theta = np.array(
        [
            np.log(float(model.A)),
            np.log(float(model.B)),
            np.log(float(model.E)),
            float(model.alpha),
            float(model.beta),
        ]
    )
    return elapsed, theta


def run_bootstrap() -> float:
    law = ParametricFit(
        E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37, objective=0, n_points=0, huber_delta=0
    )
    table = synthetic_sweep(
        law,
        ComputeLaw(9.59, 2.3e8, 1.0),
        list(np.logspace(18.7, 20, 9)),
        sizes_per_budget=9,
        noise=0.003,
    )
    start = time.perf_counter()
    fit_isoflop(table, bootstrap=1000)
    return time.perf_counter() - start


def run_fit_defaults(budgets: int = 11, sizes: int = 9) -> tuple[float, int]:
    """`moescale fit`'s work with its defaults (every method, 200 bootstrap samples, the
    hold-out check) on a simulated sweep of budgets × sizes runs: (wall s, runs)."""
    import warnings

    from benchmarks.synthetic import SIMULATED_GUESS, SIMULATED_LAW, realistic_sweep
    from moescale.fitting.options import FitOptions
    from moescale.fitting.pipeline import fit_all

    table = realistic_sweep(
        SIMULATED_LAW, ComputeLaw(9.59, 2.3e8, 1.0), list(np.geomspace(5e18, 2e20, budgets)),
        sizes_per_budget=sizes, **SIMULATED_GUESS,
    )  # fmt: skip
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_all(table, None, "bench", FitOptions(bootstrap=200))
    return time.perf_counter() - start, len(table)


def screen_problems():
    """(name, table) of every real data set in ../shared/data and one sweep of every
    simulated design: the fits the start-grid screen must not change."""
    from benchmarks.real_extrapolation import DATA, clark_curves, epoch_isoflop
    from benchmarks.synthetic import DESIGNS

    yield "epoch chinchilla, 240 points", chinchilla_data()
    iso = epoch_isoflop()
    yield "epoch isoFLOP budgets < 1e20", iso[iso["budget_flops"] < 1e20]
    olmo = pd.read_csv(DATA / "olmo_ladder" / "ladder_final_c4_summary.csv")
    yield (
        "olmo ladder",
        olmo.assign(
            n_active=olmo["n_params"], tokens=olmo["total_tokens"], final_loss=olmo["c4_loss"]
        ),
    )
    curves = clark_curves()
    usable = curves[(curves["step"] >= 50_000) & curves["loss_validation"].notna()]
    for (router, experts), part in usable.groupby(["router_type", "num_experts"]):
        points = part.groupby(["dense_parameter_count", "step"], as_index=False).agg(
            final_loss=("loss_validation", "mean"), flops_per_step=("flops_per_step", "first")
        )
        points["n_active"] = points["dense_parameter_count"]
        points["tokens"] = points["step"] * points["flops_per_step"] / (6 * points["n_active"])
        yield f"clark {router} E={experts}", points
    for name, design in DESIGNS.items():
        yield f"simulated {name}, seed 0", design.sweep(0)


def run_screen() -> None:
    """The Epoch grid screened (parametric.SCREEN_STEPS, SCREEN_KEEP) against every start run
    to convergence: objective difference (relative) and wall time of each."""
    print(
        f"{'data set':<34} {'points':>6} {'objective':>12} {'screened - all':>15} {'all s':>6} {'screened s':>10}"
    )
    worst = 0.0
    for name, table in screen_problems():
        columns = [np.log(table[c].to_numpy(float)) for c in ("n_active", "tokens", "final_loss")]
        times, values = [], []
        for screen in (False, True):
            start = time.perf_counter()
            values.append(_fit_once(*columns, DELTA, start_grid(), screen=screen)[1])
            times.append(time.perf_counter() - start)
        relative = (values[1] - values[0]) / values[0]
        worst = max(worst, relative)
        print(
            f"{name:<34} {len(table):>6} {values[0]:>12.6g} {relative:>+15.2e} {times[0]:>6.2f} {times[1]:>10.2f}"
        )
    print(f"worst relative excess of the screened objective: {worst:+.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["moescale", "chinchilla"])
    parser.add_argument("--screen", action="store_true", help="the start-grid screen's check")
    args = parser.parse_args()
    if args.screen:
        run_screen()
        return
    table = chinchilla_data()
    rows = []
    for name, runner in (("moescale", run_moescale), ("chinchilla 0.2.0", run_chinchilla)):
        if args.only and not name.startswith(args.only):
            continue
        elapsed, theta = runner(table)
        a, b, e, alpha, beta = theta
        rows.append((name, elapsed, objective(theta, table), np.exp(e), alpha, beta))
    print(
        f"{'fit (4,500 starts, 240 points)':<32} {'wall s':>8} {'objective':>14} {'E':>7} {'alpha':>7} {'beta':>7}"
    )
    for name, elapsed, value, e, alpha, beta in rows:
        print(f"{name:<32} {elapsed:>8.1f} {value:>14.10f} {e:>7.4f} {alpha:>7.4f} {beta:>7.4f}")
    if len(rows) == 2:
        print(
            f"speed-up (chinchilla wall / moescale wall): {rows[1][1] / rows[0][1]:.1f}x; "
            f"objective difference (chinchilla - moescale): {rows[1][2] - rows[0][2]:+.3g}"
        )
    if args.only != "chinchilla":
        print(
            f"isoFLOP fit, 9 budgets x 9 sizes, 1,000 bootstrap samples: {run_bootstrap():.2f} s (moescale)"
        )
        seconds, n = run_fit_defaults()
        print(
            f"moescale fit with its defaults (all methods, intervals, hold-out check), {n} runs: {seconds:.1f} s"
        )


if __name__ == "__main__":
    main()
