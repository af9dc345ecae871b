"""Tuned isoFLOP curves and the laws of the best LR (#13): on a simulated sweep whose best LR
follows a known law (benchmarks/lr_law_coverage.py; --seeds 20 for the full study), the
sweep's `tune:` axis and its bracketing, and `recipe.lr_rule: law`."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks.lr_law_coverage import BUDGETS, study
from benchmarks.synthetic import (
    SIMULATED_COMPUTE_LAW,
    SIMULATED_GUESS,
    SIMULATED_LAW,
    lr_tuned_sweep,
)
from moescale.fitting.options import FitOptions
from moescale.fitting.pipeline import fit_all, load_fit, write_fit_json
from moescale.fitting.studies.tuning import tune_points
from moescale.sweeps.plan import Dropped, Plan, PlannedRun, bracket_extensions, plan_sweep
from moescale.sweeps.spec import SweepSpec
from tests.cli_helpers import QUICK_FAMILY, as_runs_table, assert_one_line_error, moescale

# one worker of `make test` takes this whole module: the LR study's fixture is made once
pytestmark = pytest.mark.xdist_group("tuning")

SEEDS = 8


@pytest.fixture(scope="module")
def scores():
    return study(SEEDS, bootstrap=60)


def test_the_lr_law_recovers_its_exponent_within_its_interval(scores):
    """Measured with 20 seeds × 100 refits: see #13's closing note."""
    assert scores["lr_exponent_covered"].mean() >= 0.75
    assert abs(scores["lr_exponent_error"].mean()) < 0.05  # truth −0.3
    assert abs(scores["size_exponent_error"].mean()) < 0.15  # truth −1.5


def test_tuning_removes_the_bias_a_fixed_lr_puts_in_n_opt(scores):
    tuned, untuned = scores["tuned_n_error"].mean(), scores["untuned_n_error"].mean()
    assert untuned < -0.06  # one LR for every size and budget: the exponent comes out low
    assert abs(tuned) < 0.04 and abs(tuned) < abs(untuned) / 2
    assert scores["tuned_n_covered"].mean() >= 0.75


def test_the_tuned_loss_is_the_vertex_in_log_lr_and_edges_are_flagged():
    lrs = [1e-3, 2e-3, 4e-3, 8e-3]
    rows = []
    for n, best in ((1000, 3e-3), (2000, 9e-3)):  # the second's best is past the grid
        for lr in lrs:
            loss = 3.0 + 0.05 * np.log(lr / best) ** 2
            rows.append({"run_id": f"{n}-{lr}", "budget_flops": 1e15, "n_active": n, "seed": 0,
                         "tokens": 1e6, "lr": lr, "final_loss": loss, "untuned": lr == 2e-3,
                         "status": "completed"})  # fmt: skip
    points = tune_points(pd.DataFrame(rows)).set_index("n_active")
    assert points.loc[1000, "lr_opt"] == pytest.approx(3e-3, rel=1e-6)  # exact on a parabola
    assert points.loc[1000, "final_loss"] == pytest.approx(3.0)
    assert points.loc[1000, "at_edge"] == ""
    assert points.loc[2000, "at_edge"] == "lr high" and points.loc[2000, "lr_opt"] == 8e-3
    assert points.loc[1000, "untuned_loss"] == pytest.approx(3.0 + 0.05 * np.log(2 / 3) ** 2)


def test_fit_json_predicts_the_lr_at_the_target_and_a_sweep_can_use_it(tmp_path):
    table = lr_tuned_sweep(SIMULATED_LAW, SIMULATED_COMPUTE_LAW, BUDGETS, seed=3, **SIMULATED_GUESS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = fit_all(table, None, "sim", FitOptions(method="isoflop", bootstrap=20))
    # one row per point reaches the isoFLOP fit, never the LR grid's runs as repeats
    assert report.isoflop.points["run_id"].nunique() == len(report.isoflop.points)
    assert len(report.isoflop.points) == len(table.groupby(["budget_flops", "n_active"]))
    prediction = report.prediction
    assert prediction.tuned["lr_opt"] == pytest.approx(
        report.tuning.laws["lr"](report.target_flops)
    )
    low, high = prediction.tuned["lr_opt_interval"]
    assert low < prediction.tuned["lr_opt"] < high
    path = tmp_path / "fit.json"
    write_fit_json(report, path)
    assert load_fit(path).tuning.laws["lr"].exponent == report.tuning.laws["lr"].exponent
    spec = SweepSpec.model_validate(
        BASE | {"recipe": BASE["recipe"] | {"lr_rule": "law", "lr_law": str(path)}, "tune": None}
    )
    for run in plan_sweep(spec).runs:
        assert run.spec.recipe.lr == pytest.approx(report.tuning.laws["lr"](run.budget_flops))


BASE = {
    "name": "tuned",
    "budgets": [3e11, 1e12],
    "family": QUICK_FAMILY,
    "sizes": {"n_active": [11000, 21000, 50000]},
    "recipe": {"base": "tiny-cpu", "lr": 0.01, "seq_len": 64, "batch_tokens": 2048},
    "tune": {"lr": [0.5, 1, 2], "max_extensions": 1},
    "min_steps": 10,
}


def test_lr_bracketing_extends_an_edge_and_never_trains_a_point_twice():
    spec = SweepSpec.model_validate(BASE)
    plan = plan_sweep(spec)
    assert len(plan.runs) == 2 * 3 * 3
    assert sorted({r.spec.recipe.lr for r in plan.runs}) == pytest.approx([0.005, 0.01, 0.02])
    assert sum(r.untuned for r in plan.runs) == 6
    # every point's best LR at the top of its grid (the size optimum interior)
    losses = {r.run_id: 3 + np.log(r.n_active / 21000) ** 2 - r.spec.recipe.lr for r in plan.runs}
    finished = pd.DataFrame({"run_id": list(losses), "final_loss": list(losses.values())})
    added = [r for r in bracket_extensions(spec, plan, finished) if isinstance(r, PlannedRun)]
    assert len(added) == 6 and [r.spec.recipe.lr for r in added] == pytest.approx([0.04] * 6)
    assert len({r.run_id for r in added}) == 6 and not {r.run_id for r in added} & set(losses)
    # the extension is still the best: past max_extensions nothing more is trained, and the
    # reason is said
    grown = Plan(plan.runs + added)
    losses |= {r.run_id: 3 + np.log(r.n_active / 21000) ** 2 - r.spec.recipe.lr for r in added}
    finished = pd.DataFrame({"run_id": list(losses), "final_loss": list(losses.values())})
    again = bracket_extensions(spec, grown, finished)
    assert all(isinstance(r, Dropped) and "still at the grid's edge" in r.reason for r in again)
    assert len(again) == 6


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tune": {"lr": []}}, "tune.lr: empty grid"),
        ({"tune": {"lr": [0.5, -1]}}, "grid values must be > 0"),
        ({"tune": {"lr": {"values": [1e-3], "multipliers": [1]}}}, "give multipliers or values"),
        ({"tune": {}}, "tune: give at least one of"),
    ],
)
def test_bad_tune_grids_are_one_line_errors(tmp_path, change, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(BASE | change))
    assert_one_line_error(moescale("sweep", str(path), "--dry-run", "--hardware", "h100"), expected)


def test_lr_rule_law_needs_a_fit_with_an_lr_law(tmp_path):
    fit = tmp_path / "fit.json"
    fit.write_text(json.dumps({"source": "x", "target_flops": 1e20}))
    path = tmp_path / "law.yaml"
    recipe = BASE["recipe"] | {"lr_rule": "law", "lr_law": str(fit)}
    path.write_text(yaml.safe_dump(BASE | {"recipe": recipe, "tune": None}))
    assert_one_line_error(
        moescale("sweep", str(path), "--dry-run", "--hardware", "h100"), "has no LR law"
    )
    path.write_text(yaml.safe_dump(BASE | {"recipe": BASE["recipe"] | {"lr_rule": "law"}}))
    assert_one_line_error(
        moescale("sweep", str(path), "--dry-run", "--hardware", "h100"), "go together"
    )


def test_the_report_shows_the_tuned_points_and_laws(tmp_path):
    from moescale.analysis.report import build_sections

    table = lr_tuned_sweep(SIMULATED_LAW, SIMULATED_COMPUTE_LAW, BUDGETS, seed=5, **SIMULATED_GUESS)
    table = as_runs_table(table)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = fit_all(table, None, "sim", FitOptions(bootstrap=10))
    sections = build_sections(table, None, report, None, False)
    tuned = next(s for s in sections if s.title == "Tuned hyperparameters")
    assert [stem for stem, _, _ in tuned.figures] == ["lr_sweeps", "tuned_laws"]
    assert len(tuned.table) == len(table.groupby(["budget_flops", "n_active"]))
    assert any("tuning moved it by" in p for p in tuned.paragraphs)
    assert "peak LR ≈" in sections[0].paragraphs[0] or any(
        "peak LR ≈" in p for p in sections[0].paragraphs
    )
