"""Many budgets from one run per size: WSD trunks with cooldown branches — planned, run on
local Ray, killed mid-trunk and mid-branch, and extended by a new budget and by bracketing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import ROOT, assert_one_line_error, moescale
from processes import kill_processes_mentioning, wait_for
from test_reliability import SLOW

from moescale.results import load_curves, load_runs
from moescale.sweeps import plan_sweep
from moescale.sweeps.runner import ray_temp_dir, run_sweep
from moescale.sweeps.spec import SweepSpec
from moescale.training import RunSpec, train_run

# one worker of `make test` takes this whole module: its uninterrupted WSD sweep is made once
pytestmark = pytest.mark.xdist_group("branching")

# Two sizes, three budgets: two trunks, six branches. Half of each run cools down, so that a
# branch is caught mid-cooldown; checkpoints often, so that a trunk is caught mid-plateau.
WSD = {
    **SLOW,  # the reliability tests' runs: checkpointed every 10 steps
    "name": "wsd",
    "budgets": [1.0e10, 2.0e10, 4.0e10],
    "recipe": {**SLOW["recipe"], "schedule": "wsd", "warmup_steps": 10, "cooldown_frac": 0.5},
    "branching": True,
}


def test_the_plan_groups_budgets_into_trunks_and_counts_the_real_cost():
    plan = plan_sweep(SweepSpec.model_validate(WSD))
    trunks = plan.trunks()
    assert len(plan.runs) == 6 and len(trunks) == 2
    for trunk in trunks.values():
        assert len(trunk.branches) == 3  # one per budget
        assert len({b.n_active for b in trunk.branches}) == 1
        for branch in trunk.branches:
            assert branch.branch_step == branch.steps - round(0.5 * branch.steps)
        assert trunk.steps == max(b.branch_step for b in trunk.branches)
    real = sum(r.flops_trained for r in plan.runs)
    nominal = sum(r.tokens * r.flops_per_token for r in plan.runs)
    trunk_flops = sum(t.flops for t in trunks.values())
    cooldowns = sum((r.steps - r.branch_step) * 1024 * r.flops_per_token for r in plan.runs)
    assert real == pytest.approx(trunk_flops + cooldowns)  # each stretch counted once
    assert real < 0.8 * nominal
    separate = plan_sweep(SweepSpec.model_validate({**WSD, "branching": False}))
    assert {r.run_id for r in separate.runs} == {r.run_id for r in plan.runs}  # same points


@pytest.mark.parametrize(
    "recipe, expected",
    [
        ({"schedule": "cosine"}, "branching needs recipe.schedule: wsd (not cosine)"),
        ({"warmup_steps": None, "warmup_frac": 0.05}, "set recipe.warmup_steps or recipe.warmup_tokens"),
    ],
)  # fmt: skip
def test_branching_without_a_shareable_schedule_is_a_one_line_error(tmp_path, recipe, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(json.dumps({**WSD, "recipe": {**WSD["recipe"], **recipe}}))
    result = moescale("sweep", str(config), "--results", str(tmp_path / "results"), "--dry-run")
    assert_one_line_error(result, expected)
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("branched")
    outcome = run_sweep(SweepSpec.model_validate(WSD), root, show_progress=False)
    assert len(outcome.trained) == 6
    return root / "wsd"


def test_a_branched_sweep_writes_one_row_per_point_and_each_equals_a_separate_run(
    uninterrupted, tmp_path
):
    runs = load_runs(uninterrupted)
    assert len(runs) == runs["run_id"].nunique() == 6 and (runs["status"] == "completed").all()
    assert runs["trunk_id"].nunique() == 2 and (runs["branch_step"] > 0).all()
    assert (runs["tokens"] == runs["steps"] * 1024).all()  # each row spends its own budget
    curves = load_curves(uninterrupted)
    for row in runs.itertuples():  # each branch's curve is its cooldown
        steps = curves.loc[curves["run_id"] == row.run_id, "step"]
        assert steps.min() > row.branch_step and steps.max() == row.steps
    for trunk_id in runs["trunk_id"].unique():  # each trunk's plateau once
        assert curves.loc[curves["run_id"] == trunk_id, "step"].is_unique
    shown = moescale("status", str(uninterrupted))
    assert "WSD trunks: 2 of 2 at their last branch point" in shown.stdout
    # the branch states were deleted once their branches finished; each trunk keeps its end
    assert not list((uninterrupted / "trunks").glob("*/state-*.pt"))
    assert len(list((uninterrupted / "trunks").glob("*/checkpoint.pt"))) == 2
    # the largest budget's smaller size, trained on its own, gives the very same loss
    row = runs.sort_values(["budget_flops", "n_active"]).iloc[-2]
    record = json.loads((uninterrupted / "runs" / row["run_id"] / "run.json").read_text())
    separate = train_run(RunSpec.model_validate(record["spec"]), tmp_path / "separate")
    assert separate.final_loss == row["final_loss"]


@pytest.mark.slow
def test_a_killed_trunk_and_a_killed_branch_change_nothing(uninterrupted, tmp_path):
    config = tmp_path / "wsd.yaml"
    config.write_text(json.dumps(WSD))
    results = tmp_path / "results"
    folder = results / "wsd"
    driver = subprocess.Popen(
        [sys.executable, "-m", "moescale.cli", "sweep", str(config), "--results", str(results)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:

        def trunk_mid_plateau():
            for trial in folder.glob("trunks/*/trial.json"):
                if (trial.parent / "checkpoint.pt").exists() and not list(
                    trial.parent.glob("state-*.pt")
                ):
                    return trial
            return None

        victim = wait_for(
            trunk_mid_plateau, 120, "a trunk with a checkpoint", every=0.05, process=driver
        )
        trunk_pid = json.loads(victim.read_text())["pid"]
        os.kill(trunk_pid, signal.SIGKILL)

        def branch_mid_cooldown():
            for trial in folder.glob("runs/*/trial.json"):
                attempt = json.loads(trial.read_text())
                if attempt["kind"] == "branch" and not (trial.parent / "run.json").exists():
                    return trial
            return None

        branch = wait_for(branch_mid_cooldown, 120, "a branch training", every=0.05, process=driver)
        branch_pid = json.loads(branch.read_text())["pid"]
        os.kill(branch_pid, signal.SIGKILL)
        out, err = driver.communicate(timeout=300)
    finally:
        driver.kill()
        kill_processes_mentioning(str(ray_temp_dir(folder)))
    assert driver.returncode == 0, out + err
    assert json.loads(victim.read_text())["pid"] != trunk_pid  # Ray retried the trunk
    assert json.loads(branch.read_text())["pid"] != branch_pid  # and the branch
    runs = load_runs(folder).set_index("run_id").sort_index()
    expected = load_runs(uninterrupted).set_index("run_id").sort_index()
    assert len(runs) == 6 and (runs["status"] == "completed").all()  # every point once
    pd.testing.assert_series_equal(runs["final_loss"], expected["final_loss"], check_exact=True)
    curves, clean = load_curves(folder), load_curves(uninterrupted)
    for name in runs["trunk_id"].unique():  # the trunk resumed: no step twice, same curve
        mine = curves[curves["run_id"] == name].drop(columns="tokens_per_s")
        theirs = clean[clean["run_id"] == name].drop(columns="tokens_per_s")
        pd.testing.assert_frame_equal(mine.reset_index(drop=True), theirs.reset_index(drop=True))


def test_a_new_budget_and_bracketing_extend_trunks_and_train_nothing_twice(uninterrupted, tmp_path):
    import shutil

    root = tmp_path / "extended"
    shutil.copytree(uninterrupted, root / "wsd", ignore=shutil.ignore_patterns("ray", ".ray"))
    folder = root / "wsd"
    finished = {p.parent.name: p.stat().st_mtime_ns for p in folder.glob("runs/*/run.json")}
    old_trunks = set(load_runs(folder)["trunk_id"])
    wider = {
        **WSD,
        "budgets": WSD["budgets"] + [6.0e10],  # a new budget: a branch on each trunk
        "bracket": {"enabled": True, "max_extensions": 1},  # a new size: a new trunk
    }
    outcome = run_sweep(SweepSpec.model_validate(wider), root, show_progress=False)
    runs = load_runs(folder)
    assert set(finished) <= set(runs["run_id"])
    assert not set(outcome.trained) & set(finished)  # nothing trained twice
    for run_id, mtime in finished.items():
        assert (folder / "runs" / run_id / "run.json").stat().st_mtime_ns == mtime
    assert any("bracketing" in note for note in outcome.notes)
    new_trunks = set(runs["trunk_id"]) - old_trunks
    assert len(new_trunks) == 1  # the bracketed size
    assert (runs.loc[runs["budget_flops"] == 6.0e10, "trunk_id"].isin(old_trunks)).sum() == 2
    curves = load_curves(folder)
    for name in old_trunks:  # extended from their checkpoint: each plateau step once
        steps = curves.loc[curves["run_id"] == name, "step"]
        assert steps.is_unique and steps.is_monotonic_increasing
        assert steps.max() > load_curves(uninterrupted).query("run_id == @name")["step"].max()
    assert (runs["status"] == "completed").all()
