"""Fitting: the compute law, isoFLOP optima and power laws, the parametric law on Epoch's
Chinchilla data, the envelope, Clark et al.'s routed law, and extrapolation checks."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.synthetic import synthetic_sweep
from moescale import published
from moescale.errors import UserError
from moescale.fitting import (
    ComputeLaw,
    EdgeOptimumWarning,
    IsoflopFit,
    ParametricFit,
    PowerLaw,
    extrapolation_check,
    fit_compute_law,
    fit_envelope,
    fit_isoflop,
    fit_parametric,
    fit_power_law,
    fit_routed,
    group_budgets,
)
from moescale.fitting.laws import parametric
from moescale.fitting.tables import map_columns

TRUE_LAW = ParametricFit(
    E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37, objective=0, n_points=0, huber_delta=0
)
HUNYUAN_LAW = ComputeLaw(a=9.59, b=2.3e8, r2=1.0)
BUDGETS = list(np.logspace(18, 20, 7))


def true_n_law(compute_law: ComputeLaw) -> PowerLaw:
    """The power law through the exact optima of TRUE_LAW at BUDGETS."""
    optima = [TRUE_LAW.optimal(c, compute_law)["n_opt"] for c in BUDGETS]
    return fit_power_law(np.array(BUDGETS), np.array(optima))


# --- Epoch's replication of Chinchilla's Approach 3 ------------------------------------


def test_parametric_fit_reproduces_epochs_chinchilla_replication():
    table = published.epoch_chinchilla()
    fit = fit_parametric(table, huber_delta=1e-3, drop_highest=5)
    assert fit.n_points == 240
    # Besiroglu et al. 2024 (arXiv 2404.10102): the Huber minimum lands at E 1.817,
    # alpha 0.347, beta 0.367 and an allocation exponent of about 0.514.
    assert fit.E == pytest.approx(1.817, abs=0.005)
    assert fit.alpha == pytest.approx(0.347, abs=0.005)
    assert fit.beta == pytest.approx(0.367, abs=0.005)
    assert fit.allocation_exponent == pytest.approx(0.514, abs=0.01)


@pytest.mark.parametrize("points", ["chinchilla", "chinchilla below 1e20"])
def test_the_screened_start_grid_ends_where_every_start_does(points):
    """Epoch's 4,500 starts screened (a few BFGS steps each, the lowest SCREEN_KEEP go on)
    reach the objective of every start run to convergence, on Chinchilla's points (every
    data set and design: `python -m benchmarks.bench_fitting --screen`)."""
    table = published.epoch_chinchilla().sort_values("final_loss").iloc[:-5]
    if points != "chinchilla":
        table = table[table["flops"] < 1e20]
    columns = [np.log(table[c].to_numpy(float)) for c in ("n_active", "tokens", "final_loss")]
    starts = parametric.start_grid()
    assert len(starts) > parametric.SCREEN_KEEP  # the screen is used
    _, every = parametric._fit_once(*columns, 1e-3, starts, screen=False)
    _, screened = parametric._fit_once(*columns, 1e-3, starts)
    assert screened <= every * (1 + 1e-10)


def test_parametric_run_losses_past_the_fit_are_covered_on_chinchillas_points():
    """Real data: Approach 3 fitted on Chinchilla's points below 1e20 FLOPs, asked about the
    runs above (up to 30× past). The parameters' spread alone covers about a fifth of them;
    the prediction interval, with the runs' noise and the law's own extrapolation error
    measured on the fitted part (lower half → upper half), covers most, a few per cent wide."""
    table = published.epoch_chinchilla().sort_values("final_loss").iloc[:-5]
    table["budget_flops"] = table["flops"]
    below = table["flops"] < 1e20
    fit = fit_parametric(table[below], bootstrap=100)
    assert 0 < fit.noise_log_sd < 0.02 and 0 < fit.extrapolation_log_sd < 0.02
    ask = table[~below]
    mean_only, run = 0, 0
    widths = []
    for n, d, loss in ask[["n_active", "tokens", "final_loss"]].itertuples(index=False):
        draws = fit.loss_draws(n, d)
        low, high = np.percentile(draws / fit.run_scatter(draws.shape), (2.5, 97.5))
        mean_only += low <= loss <= high
        low, high = np.percentile(draws, (2.5, 97.5))
        run += low <= loss <= high
        widths.append(high / low)
    assert mean_only / len(ask) < 0.35
    assert run / len(ask) >= 0.8 and run >= 2 * mean_only  # 100 of 104 when written
    assert np.median(widths) < 1.06  # ±2.4%: the law's extrapolation error, 1.4% in log


def test_parametric_optimum_obeys_its_compute_constraint():
    law = ComputeLaw(a=6.0, b=0.0, r2=1.0)
    best = TRUE_LAW.optimal(1e21, law)
    assert 6 * best["n_opt"] * best["d_opt"] == pytest.approx(1e21, rel=1e-9)
    for factor in (0.8, 1.25):  # any other split of the same budget is worse
        n = best["n_opt"] * factor
        assert TRUE_LAW.loss(n, 1e21 / (6 * n)) > best["loss_opt"]
    # with b > 0 the same budget buys fewer tokens
    assert TRUE_LAW.optimal(1e21, HUNYUAN_LAW)["d_opt"] < best["d_opt"]


def test_parametric_fit_recovers_a_noiseless_law():
    table = synthetic_sweep(TRUE_LAW, ComputeLaw(6.0, 0.0, 1.0), BUDGETS, noise=0.0)
    fit = fit_parametric(table)
    assert (fit.alpha, fit.beta) == pytest.approx((0.35, 0.37), abs=0.01)
    assert fit.E == pytest.approx(1.8, abs=0.02)


# --- isoFLOP fits ----------------------------------------------------------------------


def test_isoflop_exponents_cover_the_truth_in_most_seeds():
    """Synthetic sweeps from a known law and the report's compute law, 0.3% loss noise:
    the 95% bootstrap interval of the N_opt exponent covers the truth in most seeds
    (measured: 18 of 20 seeds)."""
    truth = true_n_law(HUNYUAN_LAW).exponent
    covered = 0
    for seed in range(20):
        table = synthetic_sweep(TRUE_LAW, HUNYUAN_LAW, BUDGETS, noise=0.003, seed=seed)
        fit = fit_isoflop(table, bootstrap=400, seed=seed)
        low, high = fit.n_law.exponent_interval
        assert low < fit.n_exponent < high
        covered += low <= truth <= high
    assert covered >= 16


@pytest.mark.parametrize("method", ["parabola", "akima"])
def test_isoflop_recovers_noiseless_optima(method):
    table = synthetic_sweep(
        TRUE_LAW, HUNYUAN_LAW, BUDGETS, sizes_per_budget=9, spread=3.0, noise=0.0
    )
    fit = fit_isoflop(table, method=method)
    truth = true_n_law(HUNYUAN_LAW)
    assert fit.n_exponent == pytest.approx(truth.exponent, abs=0.02)
    for row in fit.budgets.itertuples():
        exact = TRUE_LAW.optimal(row.budget, HUNYUAN_LAW)
        assert row.n_opt == pytest.approx(exact["n_opt"], rel=0.1)
        assert row.loss_opt == pytest.approx(exact["loss_opt"], rel=0.002)
        assert HUNYUAN_LAW.flops_per_token(row.n_opt) * row.d_opt == pytest.approx(
            row.budget, rel=0.02
        )


def test_hunyuan_reports_laws_predict_58b_through_predict():
    # Hunyuan-Large report §2.3.1: N_opt = 5.9e-3·C^0.5305, D_opt = 3.2·C^0.50 at C ≈ 3.1e24
    fit = IsoflopFit.from_laws(PowerLaw(5.9e-3, 0.5305), PowerLaw(3.2, 0.50))
    prediction = fit.predict(3.1e24)
    assert prediction["n_opt"] == pytest.approx(58.1e9, rel=0.01)
    assert prediction["d_opt"] == pytest.approx(5.6e12, rel=0.01)


def test_budgets_group_by_proximity_not_float_equality():
    rng = np.random.default_rng(0)
    values = np.repeat([1e18, 3e18, 1e19], 5) * (1 + rng.uniform(-0.03, 0.03, 15))
    group, centres = group_budgets(values)
    assert len(centres) == 3
    assert np.all(group == np.repeat([0, 1, 2], 5))
    assert centres == pytest.approx([1e18, 3e18, 1e19], rel=0.03)
    table = synthetic_sweep(TRUE_LAW, HUNYUAN_LAW, BUDGETS[:4], noise=0.0)
    table["budget_flops"] *= 1 + rng.uniform(-0.02, 0.02, len(table))
    assert len(fit_isoflop(table).budgets) == 4


def test_edge_optima_and_unfinished_runs_are_excluded_and_reported():
    table = synthetic_sweep(TRUE_LAW, HUNYUAN_LAW, BUDGETS[:5], noise=0.0)
    # budget 0: keep only its 3 largest sizes, so its lowest loss is at the smallest size
    first = table[table["budget_flops"] == BUDGETS[0]]
    table = table.drop(first.index[:4])
    table.loc[table.index[-1], "status"] = "diverged"
    table.loc[table.index[-2], ["status", "final_loss"]] = ["failed", np.nan]
    with pytest.warns(EdgeOptimumWarning, match=re.escape(f"budget {BUDGETS[0]:.3g}")):
        fit = fit_isoflop(table)
    edge = fit.budgets[fit.budgets["at_edge"]]
    assert edge["budget"].tolist() == pytest.approx([BUDGETS[0]])
    assert any("diverged" in line for line in fit.excluded)
    assert any("failed" in line for line in fit.excluded)
    assert any(f"budget {BUDGETS[0]:.3g}" in line for line in fit.excluded)
    # the power law uses the 4 interior budgets only: refitting them alone gives the same law
    interior = table[(table["budget_flops"] != BUDGETS[0]) & (table["status"] == "completed")]
    assert fit_isoflop(interior).n_exponent == pytest.approx(fit.n_exponent)


def test_too_few_interior_budgets_is_an_error():
    table = synthetic_sweep(TRUE_LAW, HUNYUAN_LAW, BUDGETS[:2], noise=0.0)
    with pytest.raises(
        UserError, match="2 budget\\(s\\) with an interior optimum; needs at least 3"
    ):
        fit_isoflop(table)


def test_extrapolation_check_holds_out_the_largest_one_two_and_three_budgets():
    table = synthetic_sweep(TRUE_LAW, HUNYUAN_LAW, BUDGETS, noise=0.0)
    law = fit_compute_law(table)
    parametric = fit_parametric(table)
    check = extrapolation_check(table, compute_law=law, parametric=parametric)
    for method in ("isoflop", "parametric"):
        rows = check.for_method(method)
        # k = 1, 2, 3 held out: 1 + 2 + 3 held-out budgets predicted
        assert [r.held_out for r in rows] == [1, 2, 2, 3, 3, 3]
        assert sorted({r.budget for r in rows}) == pytest.approx(BUDGETS[-3:])
        for r in rows:
            assert r.n_budgets_used == len(BUDGETS) - r.held_out
            largest_fitted = BUDGETS[len(BUDGETS) - r.held_out - 1]
            assert r.factor == pytest.approx(r.budget / largest_fitted, rel=1e-6)
        assert check.max_factor(method) == pytest.approx(BUDGETS[-1] / BUDGETS[-4], rel=1e-6)
    # noiseless and drawn from the law itself: the parametric law predicts the held-out optima
    assert check.median_n_error("parametric") < 0.1
    assert max(abs(r.loss_rel_error) for r in check.rows) < 0.02
    few = synthetic_sweep(TRUE_LAW, HUNYUAN_LAW, BUDGETS[:4], noise=0.0)
    assert [r.held_out for r in extrapolation_check(few).rows] == [1, 2, 2]


# --- compute law ------------------------------------------------------------------------


def test_compute_law_recovers_a_and_b():
    n = np.array([1e7, 3e7, 1e8, 3e8, 1e9])
    runs = pd.DataFrame({"n_active": n, "flops_per_token": 9.59 * n + 2.3e8, "status": "completed"})
    runs.loc[len(runs)] = {"n_active": 5e8, "flops_per_token": 1.0, "status": "failed"}
    law = fit_compute_law(runs)
    assert (law.a, law.b, law.r2) == pytest.approx((9.59, 2.3e8, 1.0))
    assert law.n_runs == 5
    assert law.max_rel_error == pytest.approx(0.0, abs=1e-9)
    assert "9.59" in law.summary() and "6·N·D" in law.summary()


def test_compute_law_counts_every_run_equally_on_relative_error():
    """Sizes over five decades with a per-run scatter of ±3%: a fit on absolute error is
    decided by the largest models and misses the smallest by far more; on relative error the
    worst run is off by about the scatter, and that worst error is reported."""
    rng = np.random.default_rng(0)
    n = np.geomspace(1e4, 1e9, 12)
    scatter = 1 + rng.uniform(-0.03, 0.03, len(n))
    runs = pd.DataFrame({"n_active": n, "flops_per_token": (6.3 * n + 4e4) * scatter})
    law = fit_compute_law(runs)
    assert law.max_rel_error < 0.06
    a, b = np.polyfit(n, runs["flops_per_token"], 1)  # the absolute fit, for comparison
    absolute_worst = np.max(np.abs((a * n + b) / runs["flops_per_token"] - 1))
    assert absolute_worst > 3 * law.max_rel_error
    assert law.to_dict()["max_rel_error"] == law.max_rel_error


def test_exact_flop_counting_gives_a_near_6_for_moe_and_dense():
    from moescale.models import count, family

    for n_experts in (0, 16):
        configs = [family(n, n_experts=n_experts) for n in np.logspace(7, 9, 6)]
        runs = pd.DataFrame(
            {
                "n_active": [count(c, 512).n_active for c in configs],
                "flops_per_token": [count(c, 512).flops_per_token for c in configs],
            }
        )
        law = fit_compute_law(runs)
        assert 6.0 <= law.a < 6.6, n_experts
        assert law.r2 > 0.99


def test_time_cost_uses_measured_seconds_and_peak():
    n = np.array([1e6, 2e6, 4e6])
    runs = pd.DataFrame(
        {"n_active": n, "tokens": 1e6, "peak_flops": 1e11, "train_s": (12 * n + 1e6) * 1e6 / 1e11}
    )
    law = fit_compute_law(runs, cost="time")
    assert (law.a, law.b) == pytest.approx((12.0, 1e6))
    with pytest.raises(UserError, match="train_s"):
        fit_compute_law(runs.drop(columns="train_s"), cost="time")


# --- Approach 1: the envelope -----------------------------------------------------------


def test_envelope_winner_grows_with_compute():
    compute_law = ComputeLaw(6.0, 0.0, 1.0)
    rows = []
    for i, n in enumerate(np.logspace(7, 9, 9)):
        tokens = np.logspace(8, 11.5, 60)
        rows.append(
            pd.DataFrame(
                {
                    "run_id": f"r{i}",
                    "n_active": n,
                    "flops": compute_law.flops_per_token(n) * tokens,
                    "eval_loss": TRUE_LAW.loss(n, tokens),
                }
            )
        )
    fit = fit_envelope(pd.concat(rows))
    truth = TRUE_LAW.allocation_exponent
    assert fit.n_exponent == pytest.approx(truth, abs=0.08)
    interior = fit.levels[~fit.levels["at_edge"]]
    assert interior["n_active"].is_monotonic_increasing


# --- Clark et al.'s routed law on their data --------------------------------------------


def test_routed_law_fits_clark_2022_and_predicts_held_out_expert_counts():
    final = published.clark2022_routing()
    table = final[final["router_type"].isin(["S-Base", "Dense"])]
    fit = fit_routed(table, "dense_parameter_count", "num_experts", "loss_validation")
    assert fit.rmse_log10 < 0.01  # about 2% in loss
    assert fit.a < 0 and fit.b < 0  # bigger models and more experts both lower the loss
    assert fit.c > 0  # Clark et al.'s finding: routing helps less as the dense model grows
    assert 1 < fit.e_start < fit.e_max
    held_out = table["num_experts"] == 512
    partial = fit_routed(
        table[~held_out], "dense_parameter_count", "num_experts", "loss_validation"
    )
    predicted = partial.loss(table.loc[held_out, "dense_parameter_count"], 512)
    errors = predicted / table.loc[held_out, "loss_validation"].to_numpy() - 1
    assert np.abs(errors).max() < 0.03


# --- tables from outside ----------------------------------------------------------------


def test_published_tables_get_tokens_from_a_compute_law():
    table = pd.DataFrame({"N": [1e8, 2e8, 4e8], "C": [6e18, 6e18, 6e18], "L": [3.0, 2.9, 3.1]})
    mapped, law = map_columns(table, {"n_active": "N", "flops": "C", "final_loss": "L"})
    assert mapped["tokens"].tolist() == pytest.approx([1e10, 5e9, 2.5e9])
    assert law.cost == "assumed"  # the fit uses it rather than fitting one to its own counts
    hunyuan, law = map_columns(
        table, {"n_active": "N", "flops": "C", "final_loss": "L"}, HUNYUAN_LAW
    )
    assert (
        hunyuan["tokens"].iloc[0] == pytest.approx(6e18 / (9.59e8 + 2.3e8)) and law is HUNYUAN_LAW
    )
    both = table.assign(D=[1e10, 5e9, 2.5e9])
    columns = {"n_active": "N", "flops": "C", "tokens": "D", "final_loss": "L"}
    assert map_columns(both, columns)[1] is None  # nothing derived: the law is fitted
    with pytest.raises(UserError, match="missing column 'loss'"):
        map_columns(table, {"n_active": "N", "flops": "C", "final_loss": "loss"})
    table.loc[1, "L"] = np.nan
    with pytest.raises(UserError, match="column 'L' has NaN"):
        map_columns(table, {"n_active": "N", "flops": "C", "final_loss": "L"})


def test_fitting_and_analysis_never_import_torch_or_ray():
    code = (
        "import sys, moescale.fitting, moescale.fitting.pipeline, moescale.analysis.summary, moescale.results; "
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checking_and_planning_a_sweep_never_import_torch():
    """A spec's one-line error, `moescale flops` and the plan come back in under a second:
    the config, family, accounting, recipes and data specs load without torch (1.5–2.5 s)."""
    code = (
        "import sys, moescale.cli; from moescale.sweeps import load_sweep_spec, plan_sweep; "
        "from moescale.training import RunSpec, DataSpec; from moescale.models import count; "
        "from moescale.training.hardware import resolve_hardware; "
        "plan = plan_sweep(load_sweep_spec('configs/quick.yaml')); resolve_hardware('h100'); "
        "count(plan.runs[0].spec.model, 64); "
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr


# docs/design.md's picture of the house: what each part may import (every import, including
# those inside functions). The base (results, errors, yamlio, published, configs) is open to all.
BASE = {"results", "errors", "yamlio", "published", "configs", "__init__"}
MAY_IMPORT = {
    "models": set(),
    "training": {"models"},
    "sweeps": {"training", "models"},
    "fitting": set(),
    "analysis": {"fitting"},
    "validate": {"sweeps", "training", "models", "fitting", "analysis"},
    "quickstart": {"sweeps", "training", "models", "fitting", "analysis", "recommend"},
    "recommend": {"sweeps", "training", "models", "fitting"},
    "suggest": {"sweeps", "training", "models", "fitting", "recommend"},
    "cli": {
        "sweeps",
        "training",
        "models",
        "fitting",
        "analysis",
        "validate",
        "quickstart",
        "recommend",
        "suggest",
    },
}


def test_every_part_imports_only_what_the_design_draws():
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "moescale"
    parts = {
        p.stem if p.is_file() else p.name for p in package.iterdir() if p.suffix in ("", ".py")
    }
    assert set(MAY_IMPORT) | BASE >= parts - {"__pycache__"}  # every part is drawn
    wrong = []
    for path in package.rglob("*.py"):
        part = path.relative_to(package).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                bits = name.split(".")
                if bits[0] != "moescale" or len(bits) < 2 or bits[1] in BASE | {part}:
                    continue
                if bits[1] not in MAY_IMPORT.get(part, set()):
                    wrong.append(f"{path.relative_to(package)} imports {name}")
    assert not wrong, wrong


def test_no_module_imports_one_that_imports_it_back():
    """No import circle between modules either (every import, inside functions too): a
    circle is two modules that each need the other, so neither can be read alone."""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "moescale"
    names = {
        ".".join(p.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in package.rglob("*.py")
    }
    imports = {name: set() for name in names}
    for name, path in names.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in names:
                imports[name].add(node.module)
            elif isinstance(node, ast.Import):
                imports[name] |= {a.name for a in node.names if a.name in names}
        imports[name].discard(name)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in imports[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    circles = sorted(name for name in names if name in reach(name))
    assert not circles, circles


# inside fitting/: the laws stand alone; the studies are built on them; neither runs the
# pipeline (fitting/pipeline.py, which runs them both)
FITTING_MAY_IMPORT = {
    "laws": {"laws", "options"},
    "studies": {"laws", "studies", "options", "prediction"},
}


def test_laws_import_only_laws_and_studies_never_the_pipeline():
    import ast
    from pathlib import Path

    fitting = Path(__file__).resolve().parents[1] / "moescale" / "fitting"
    wrong = []
    for layer, allowed in FITTING_MAY_IMPORT.items():
        for path in (fitting / layer).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                module = node.module if isinstance(node, ast.ImportFrom) else None
                inner = (module or "").removeprefix("moescale.fitting.").split(".")[0]
                if (module or "").startswith("moescale.fitting.") and inner not in allowed:
                    wrong.append(f"{layer}/{path.name} imports {module}")
    assert not wrong, wrong


def test_no_warning_leaks_from_a_clean_fit():
    table = synthetic_sweep(TRUE_LAW, HUNYUAN_LAW, BUDGETS, noise=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_isoflop(table, bootstrap=50)


def test_a_refit_is_reused_only_for_the_same_runs_and_options():
    """refit_on is kept for the process: asked again with the same runs and the same options
    (a default given or left out alike) it answers at once; other runs, other options or
    another fit's optimum are fitted afresh."""
    table = synthetic_sweep(TRUE_LAW, HUNYUAN_LAW, BUDGETS, noise=0.003, seed=3)
    fit = parametric.fit_parametric(table)
    lower = table[table["budget_flops"] <= np.median(BUDGETS)]
    first = parametric.refit_on(lower, fit)
    assert parametric.refit_on(lower, fit, huber_delta=1e-3) is first
    from_own = parametric.fit_parametric(lower, grid=parametric.grid_at(fit))
    assert first.objective <= from_own.objective  # the lower of its two starts
    moved = lower.assign(final_loss=lower["final_loss"] * 1.01)
    assert parametric.refit_on(moved, fit).E != first.E
    assert parametric.refit_on(lower, fit, huber_delta=1e-2) is not first
    other = parametric.fit_parametric(table.iloc[:-3])
    assert parametric.refit_on(lower, other) is not first


def test_every_draws_optimum_is_the_one_a_scalar_minimiser_finds():
    """`parametric.optima_of` (one golden-section search for all bootstrap draws at once)
    against scipy's bounded Brent search, law by law, on 200 random laws and budgets under the
    Hunyuan-Large compute law: never a higher loss, and wherever the optimum is inside the
    bracket, the same log N_opt to within what float64 can tell apart there (a minimum is
    flat: the loss cannot resolve log N closer than about sqrt(8·eps·L / L''))."""
    from scipy.optimize import minimize_scalar

    law = ComputeLaw(9.59, 2.3e8, 1.0)
    rng = np.random.default_rng(0)
    thetas = np.column_stack(
        [
            rng.uniform(0, 25, 200),
            rng.uniform(0, 25, 200),
            rng.uniform(-1, 1.5, 200),
            rng.uniform(0.05, 2, 200),
            rng.uniform(0.05, 2, 200),
        ]
    )
    inside = 0
    for theta, flops in zip(thetas, 10 ** rng.uniform(15, 26, 200), strict=True):
        fit = ParametricFit.from_theta(theta, objective=0.0, n_points=0, huber_delta=0.0)

        def loss(log_n, fit=fit, flops=flops):
            return float(fit.loss(np.exp(log_n), law.tokens(flops, np.exp(log_n))))

        found = parametric.optima_of(theta[None, :], flops, law)
        upper = np.log(flops / law.a)
        brent = minimize_scalar(
            loss, bounds=(0.0, upper), method="bounded", options={"xatol": 1e-10}
        )
        assert found["loss_opt"][0] <= brent.fun * (1 + 1e-14)
        if brent.x < upper - 0.1:
            inside += 1
            h = 0.01
            curvature = (loss(brent.x + h) - 2 * brent.fun + loss(brent.x - h)) / h**2
            resolution = np.sqrt(8 * np.finfo(float).eps * brent.fun / max(curvature, 1e-300))
            assert abs(np.log(found["n_opt"][0]) - brent.x) <= 10 * resolution + 1e-9
    assert inside > 150  # most optima are inside the bracket: the check above is not empty
