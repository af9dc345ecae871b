"""Sweeps: spec validation, isoFLOP planning, bracketing, and real runs on local Ray
(one node and a two-node cluster started here)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from cli_helpers import ROOT, assert_one_line_error, moescale
from processes import local_ray_cluster
from sweep_specs import FAMILY, RECIPE

from moescale.errors import UserError
from moescale.models import count
from moescale.results import RUNS_SCHEMA, load_curves, load_runs
from moescale.sweeps import load_sweep_spec, plan_sweep
from moescale.sweeps.plan import Dropped, PlannedRun, bracket_extensions
from moescale.sweeps.spec import SweepSpec

# one worker of `make test` takes this module and `moescale validate`'s test: they share the
# real sweep of tests/conftest.py, made once
pytestmark = pytest.mark.xdist_group("sweeps")

TINY = {
    "name": "tiny",
    "budgets": [1.0e10, 2.0e10],  # 56 to 209 steps: the two-node sweep trains 482 in all
    "family": FAMILY,
    "sizes": {"n_active": [12000, 24000]},
    "recipe": RECIPE,
    "min_steps": 20,
    "bracket": {"enabled": False},
}


# --- planning -------------------------------------------------------------------------


def test_plan_spends_each_budget_in_whole_batches():
    spec = SweepSpec.model_validate(TINY)
    plan = plan_sweep(spec)
    assert len(plan.runs) == 4
    for run in plan.runs:
        assert run.tokens % 1024 == 0
        assert run.flops_per_token == count(run.spec.model, 64).flops_per_token
        # the budget is met to within half a batch
        assert (
            abs(run.tokens * run.flops_per_token - run.budget_flops)
            <= 0.5 * 1024 * run.flops_per_token
        )
        assert run.spec.tokens == run.tokens and run.steps == run.tokens // 1024
    assert len({r.run_id for r in plan.runs}) == 4


def test_plan_drops_runs_with_too_few_steps_and_says_why():
    spec = SweepSpec.model_validate(
        {**TINY, "sizes": {"n_active": [12000, 24000, 400000]}, "min_steps": 30}
    )
    plan = plan_sweep(spec)
    assert all(r.n_active < 400000 for r in plan.runs)
    assert any("steps < min_steps 30" in line for line in plan.dropped)


def test_sizes_follow_the_budget_with_a_guess_rule():
    spec = SweepSpec.model_validate(
        {
            **TINY,
            "budgets": [1e11, 1e12],
            "sizes": {"guess_coef": 0.05, "guess_exponent": 0.5, "count": 5, "spread": 4},
            "min_steps": 1,
        }
    )
    plan = plan_sweep(spec)
    for index, budget in enumerate(spec.budgets):
        sizes = sorted(r.n_active for r in plan.runs if r.budget_index == index)
        guess = 0.05 * budget**0.5
        assert sizes[0] < guess < sizes[-1]
        assert sizes[-1] / sizes[0] == pytest.approx(4, rel=0.25)


def test_no_size_fits_is_an_error_naming_the_budget():
    with pytest.raises(UserError, match="no size fits budget 1e\\+06"):
        plan_sweep(SweepSpec.model_validate({**TINY, "budgets": [1e6]}))


def test_bracketing_adds_the_next_size_beyond_the_edge():
    spec = SweepSpec.model_validate(
        {
            **TINY,
            "sizes": {"n_active": [12000, 24000, 48000]},
            "bracket": {"enabled": True, "max_extensions": 1},
            "min_steps": 1,
        }
    )
    plan = plan_sweep(spec)
    losses = {}
    for run in plan.runs:  # budget 0: lowest at the smallest size; budget 1: interior
        if run.budget_index == 0:
            losses[run.run_id] = 3.0 + run.n_active / 1e5
        else:
            losses[run.run_id] = 3.0 + abs(np.log(run.n_active / 24000))
    finished = pd.DataFrame({"run_id": list(losses), "final_loss": list(losses.values())})
    added = bracket_extensions(spec, plan, finished)
    assert len(added) == 1 and isinstance(added[0], PlannedRun)
    assert added[0].budget_index == 0 and added[0].extension == -1
    assert added[0].n_active == pytest.approx(6000, rel=0.1)
    # once the extension is spent, a budget still at its edge is reported, not extended
    plan.runs.append(added[0])
    losses[added[0].run_id] = 1.0
    again = bracket_extensions(
        spec, plan, pd.DataFrame({"run_id": list(losses), "final_loss": list(losses.values())})
    )
    assert (
        len(again) == 1
        and isinstance(again[0], Dropped)
        and "smallest size after 1 extension" in again[0].reason
    )


def test_the_hunyuan_isoflop_design_plans_sanely():
    spec = load_sweep_spec(ROOT / "configs" / "hunyuan-isoflop.yaml")
    plan = plan_sweep(spec)
    assert len(spec.budgets) == 9 and spec.budgets[0] == 5e18 and spec.budgets[-1] == 9.5e19
    assert min(r.n_active for r in plan.runs) >= 9e6 and max(r.n_active for r in plan.runs) <= 1.1e9
    for index, budget in enumerate(spec.budgets):
        runs = [r for r in plan.runs if r.budget_index == index]
        # the report's own law (on C, batch adjustment aside) puts the optimum inside each budget's sizes
        expected = 5.9e-3 * budget**0.5305
        assert min(r.n_active for r in runs) < expected < max(r.n_active for r in runs), budget
        assert len(runs) >= 5
        for run in runs:
            assert run.steps >= spec.min_steps
            assert spec.tokens_per_param[0] <= run.tokens_per_param <= spec.tokens_per_param[1]
            assert run.spec.model.n_experts == 16 and run.spec.model.top_k == 1
            assert (
                run.spec.model.cla_share == 2 and run.spec.model.n_kv_heads < run.spec.model.n_heads
            )


def test_dry_run_prints_the_plan_and_writes_only_the_csv(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(TINY))
    csv = tmp_path / "plan.csv"
    result = moescale(
        "sweep",
        str(config),
        "--dry-run",
        "--plan-csv",
        str(csv),
        "--results",
        str(tmp_path / "results"),
    )
    assert result.returncode == 0, result.stderr
    assert "4 runs over 2 budgets" in result.stdout and "est." in result.stdout
    table = pd.read_csv(csv)
    assert {
        "run_id",
        "budget_flops",
        "n_active",
        "n_total",
        "flops_per_token",
        "tokens",
        "steps",
    } <= set(table)
    assert len(table) == 4
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: x\nbudgets: [1e12\n", "malformed YAML"),
        (
            "name: x\nbudgets: [1e12]\nsizes: {n_active: [1e4]}\ncolour: red\n",
            "colour: unknown key",
        ),
        ("name: x\nbudgets: lots\nsizes: {n_active: [1e4]}\n", "budgets"),
        (
            "name: x\nbudgets: [1e12]\nsizes: {n_active: [1e4]}\nfamily: {n_layers: 3, cla_share: 2}\n",
            "cla_share",
        ),
        (
            "name: x\nbudgets: [1e12]\nsizes: {n_active: [1e4]}\nfamily: {wings: 2}\n",
            "unknown shape rule 'wings'",
        ),
        ("name: x\nbudgets: [1e5]\nsizes: {n_active: [1e4, 2e4]}\n", "no size fits budget 1e+05"),
        ("name: x\nbudgets: [1e12]\nsizes: {n_active: [1e4], guess_coef: 1}\n", "exactly one of"),
    ],
)
def test_invalid_sweep_specs_are_one_line_errors(tmp_path, content, expected):
    config = tmp_path / "sweep.yaml"
    config.write_text(content)
    result = moescale("sweep", str(config), "--results", str(tmp_path / "results"))
    assert_one_line_error(result, expected)
    assert not (tmp_path / "results").exists()


# --- real runs on Ray -----------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_sweep_on_local_ray_writes_the_documented_tables(tiny_sweep):
    spec, root, first = tiny_sweep
    results = root / spec.name
    runs = load_runs(results)
    assert set(RUNS_SCHEMA) <= set(runs.columns)
    assert len(runs) == 9 and (runs["status"] == "completed").all()
    assert sorted(first.trained) == sorted(runs["run_id"])
    assert runs["final_loss"].between(1.0, 5.0).all()
    curves = load_curves(results)
    assert set(curves["run_id"]) == set(runs["run_id"])
    for run_id in runs["run_id"]:
        assert (results / "runs" / run_id / "run.json").exists()
        # trials ran at the sweep's own priority, not Ray's nice 15 for workers
        trial = json.loads((results / "runs" / run_id / "trial.json").read_text())
        assert trial["niceness"] == os.nice(0)
    assert (results / "sweep.yaml").exists()
    assert (results / "ray").is_dir()  # Ray Tune's own experiment state


def test_running_again_trains_nothing_and_a_deleted_run_is_redone(tiny_sweep):
    from moescale.sweeps.runner import run_sweep

    spec, root, _ = tiny_sweep
    results = root / spec.name
    before = load_runs(results).set_index("run_id")["wall_s"]
    again = run_sweep(spec, root, show_progress=False)
    assert again.trained == []
    victim = before.index[0]
    shutil.rmtree(results / "runs" / victim)
    third = run_sweep(spec, root, show_progress=False)
    assert third.trained == [victim]
    after = load_runs(results).set_index("run_id")["wall_s"]
    assert (after.drop(victim) == before.drop(victim)).all()  # the others kept their records


@pytest.mark.slow
def test_a_sweep_across_a_two_node_cluster_uses_both_nodes(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps({**TINY, "name": "cluster", "resources": {"cpus": 1}}))
    with local_ray_cluster(n_nodes=2) as cluster:
        result = moescale(
            "sweep",
            str(config),
            "--results",
            str(tmp_path),
            "--address",
            cluster.address,
            env=cluster.env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    runs = load_runs(tmp_path / "cluster")
    assert (runs["status"] == "completed").all()
    nodes = {
        json.loads((tmp_path / "cluster" / "runs" / r / "trial.json").read_text())["node_id"]
        for r in runs["run_id"]
    }
    assert len(nodes) == 2


def test_a_spec_with_several_problems_names_them_all_on_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "name: x\nbudgets: [1.0e+10, 2.0e+10]\nsizez: {n_active: [1000]}\n"
        "recipe: {base: tiny-cpu, seq_lenn: 64}\nmin_steps: -3\n"
    )
    result = moescale("sweep", str(config), "--dry-run")
    assert_one_line_error(result, "sizes: Field required")
    line = result.stderr.strip()
    assert "sizez: unknown key (did you mean 'sizes'?)" in line
    assert "recipe.seq_lenn: unknown key (did you mean 'seq_len'?)" in line
    assert "min_steps: Input should be greater than or equal to 1" in line


def _events(path) -> list:
    """The records of a TensorBoard event file (TFRecord: length, its CRC, data, data CRC)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    data, events, at = path.read_bytes(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        events.append(Event.FromString(data[at + 12 : at + 12 + length]))
        at += 12 + length + 4
    return events


def test_tensorboard_gets_every_run_by_its_id_with_its_curve(tiny_sweep):
    spec, root, _ = tiny_sweep
    results = root / spec.name
    runs = load_runs(results)
    for row in runs.itertuples():
        # the trial is named by its run id (a run redone by a later round: its latest)
        folders = sorted((results / "ray").glob(f"round-*/run-{row.run_id}"))
        assert folders, row.run_id
        files = list(folders[-1].glob("events.out.tfevents.*"))
        assert files
        scalars: dict[str, list[float]] = {}
        for event in _events(files[0]):
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(value.simple_value)
        # the loss curve as it was logged, and the run's final loss at the end
        assert len(scalars["ray/tune/train_loss"]) >= 3
        assert scalars["ray/tune/final_loss"][-1] == pytest.approx(row.final_loss, rel=1e-6)
        params = json.loads((folders[-1] / "params.json").read_text())
        assert params["n_active"] == row.n_active and params["tokens"] == row.tokens
        assert params["budget_flops"] == row.budget_flops


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_tracker_whose_package_is_missing_is_a_one_line_error(tmp_path, tracker):
    import importlib.util

    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed here")
    config = tmp_path / "tracked.yaml"
    config.write_text(json.dumps({**TINY, "tracking": {tracker: {"project": "x"}}}))
    result = moescale("sweep", str(config), "--results", str(tmp_path / "results"))
    assert_one_line_error(result, f"tracking.{tracker} needs the {tracker} package")
    assert not (tmp_path / "results").exists()


def test_the_committed_examples_runs_are_planned_again_with_the_same_ids():
    """A run's id hashes its spec: a new field must not change the ids of runs already made
    (results/example was trained before the 2026 recipe fields and tokenizer_path existed)."""
    example = ROOT / "results" / "example"
    planned = {r.run_id for r in plan_sweep(load_sweep_spec(example / "sweep.yaml")).runs}
    runs = load_runs(example)
    swept = set(runs.loc[~runs["validation"].astype(bool), "run_id"])
    assert swept and swept <= planned
