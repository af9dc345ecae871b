"""Faults really injected: killed trials, interrupted drivers, a dead worker node, a crash
between write and rename, divergence, two drivers on one folder; and the bad-input matrix."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import ROOT, assert_one_line_error, moescale
from processes import (
    descendants,
    kill_processes_mentioning,
    local_ray_cluster,
    pids_mentioning,
    wait_for,
)
from sweep_specs import FAMILY

from moescale.results import atomic_write_parquet, load_runs, read_parquet
from moescale.sweeps.runner import ray_temp_dir
from moescale.sweeps.store import finished_status

# Runs of a few seconds each on one thread, checkpointed every 10 steps, so a fault lands
# mid-run and after a checkpoint.
SLOW = {
    "family": FAMILY,
    "sizes": {"n_active": [12000, 24000]},
    "recipe": {
        "base": "tiny-cpu",
        "seq_len": 64,
        "batch_tokens": 1024,
        "eval_every": 100,
        "eval_tokens": 4096,
        "log_every": 10,
        "checkpoint_every": 10,
    },
    "min_steps": 20,
    "bracket": {"enabled": False},
    "max_failures": 3,
}


def write_spec(folder: Path, name: str, budgets: list[float], **changes) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "budgets": budgets, **SLOW, **changes}))
    return path


def start_sweep(config: Path, results: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "moescale.cli", "sweep", str(config), "--results", str(results)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def statuses(results: Path) -> dict[str, str]:
    path = results / "runs.parquet"
    if not path.exists():
        return {}
    try:
        runs = read_parquet(path)
    except Exception:
        return {}
    return dict(zip(runs["run_id"], runs["status"], strict=True))


@pytest.fixture
def cleanup():
    """Kills, after the test, every process that names a registered folder (its Ray session)."""
    folders: list[str] = []
    yield folders.append
    for folder in folders:
        kill_processes_mentioning(folder)
        if folder.startswith("/tmp/"):
            shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_a_killed_trial_is_retried_and_resumes_from_its_checkpoint(tmp_path, cleanup):
    # 58, 113 and 209 steps: every trial is checkpointed (every 10 steps) long before it ends
    config = write_spec(tmp_path, "killed", [2e10], sizes={"n_active": [12000, 24000, 48000]})
    results = tmp_path / "results"
    cleanup(str(ray_temp_dir(results / "killed")))
    driver = start_sweep(config, results)
    runs_dir = results / "killed" / "runs"

    def checkpointed_trial():
        for trial in runs_dir.glob("*/trial.json"):
            if (trial.parent / "checkpoint.pt").exists() and not (
                trial.parent / "run.json"
            ).exists():
                return trial.parent
        return None

    victim = wait_for(checkpointed_trial, 120, "a trial with a checkpoint", process=driver)
    first_pid = json.loads((victim / "trial.json").read_text())["pid"]
    os.kill(first_pid, signal.SIGKILL)
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, out + err
    runs = load_runs(results / "killed")
    assert len(runs) == runs["run_id"].nunique() == 3  # every planned run exactly once
    assert (runs["status"] == "completed").all()
    assert json.loads((victim / "trial.json").read_text())["pid"] != first_pid  # Ray retried it
    curve = pd.read_parquet(victim / "curve.parquet")
    assert (
        curve["step"].is_unique and curve["step"].is_monotonic_increasing
    )  # resumed, not restarted twice over
    # resumed from its checkpoint, it ends exactly where an uninterrupted run of its spec ends
    from moescale.training import RunSpec, train_run

    spec = RunSpec.model_validate(json.loads((victim / "run.json").read_text())["spec"])
    straight = train_run(spec, tmp_path / "straight")
    assert straight.final_loss == runs.set_index("run_id").loc[victim.name, "final_loss"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_driver_finishes_only_the_missing_runs(tmp_path, cleanup, sig):
    # 56, 105, 112 and 209 steps on two slots: the first run ends while the others have
    # hundreds of steps to go, so the signal lands with 1 to 3 runs finished
    config = write_spec(tmp_path, "interrupted", [1e10, 2e10])
    results = tmp_path / "results"
    cleanup(str(ray_temp_dir(results / "interrupted")))
    driver = start_sweep(config, results)
    wait_for(
        lambda: "completed" in statuses(results / "interrupted").values(),
        180,
        "a completed run",
        process=driver,
    )
    driver.send_signal(sig)
    driver.wait(timeout=60)
    kill_processes_mentioning(
        str(ray_temp_dir(results / "interrupted"))
    )  # what a SIGKILL leaves behind
    # finished records on disk: a trial can still finish between the driver's death and its
    # workers', after the driver last wrote runs.parquet
    before = statuses(results / "interrupted")
    done = [r for r in before if finished_status(results / "interrupted", r) == "completed"]
    finished_at = {
        r: (results / "interrupted" / "runs" / r / "run.json").stat().st_mtime_ns for r in done
    }
    curves = {
        r: pd.read_parquet(results / "interrupted" / "runs" / r / "curve.parquet") for r in done
    }
    assert 1 <= len(done) < 4
    again = moescale("sweep", str(config), "--results", str(results))
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"({4 - len(done)} run(s) trained this time)" in again.stdout.replace("\n", " ")
    runs = load_runs(results / "interrupted")
    assert (runs["status"] == "completed").all() and len(runs) == 4
    for run_id in done:  # completed runs keep their finish times and curves
        assert (
            results / "interrupted" / "runs" / run_id / "run.json"
        ).stat().st_mtime_ns == finished_at[run_id]
        pd.testing.assert_frame_equal(
            pd.read_parquet(results / "interrupted" / "runs" / run_id / "curve.parquet"),
            curves[run_id],
        )


@pytest.mark.slow
def test_a_dead_worker_nodes_trials_finish_on_the_head(tmp_path):
    config = write_spec(tmp_path, "nodes", [3e10], sizes={"n_active": [12000, 24000, 48000]})
    results = tmp_path / "results"
    with local_ray_cluster(n_nodes=2) as cluster:
        worker_dir = cluster.node_dirs[1]
        driver = subprocess.Popen(
            [sys.executable, "-m", "moescale.cli", "sweep", str(config), "--results", str(results), "--address", cluster.address],
            cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

        def trial_on_worker():
            on_worker = descendants(set(pids_mentioning(str(worker_dir))))  # its raylet and workers
            for trial in (results / "nodes" / "runs").glob("*/trial.json"):
                if json.loads(trial.read_text())["pid"] in on_worker:
                    return trial.parent
            return None

        wait_for(trial_on_worker, 120, "a trial on the worker node", process=driver)
        assert kill_processes_mentioning(str(worker_dir)) > 0
        out, err = driver.communicate(timeout=400)
    assert driver.returncode == 0, out + err
    runs = load_runs(results / "nodes")
    assert (runs["status"] == "completed").all() and len(runs) == 3


def test_a_crash_between_write_and_rename_leaves_the_old_file(tmp_path):
    path = tmp_path / "runs.parquet"
    atomic_write_parquet(path, pd.DataFrame({"run_id": ["a"], "final_loss": [2.5]}))
    code = (
        "import os, sys, time, pandas as pd\n"
        "import moescale.results as r\n"
        "os.replace = lambda *a: (print('written', flush=True), time.sleep(60))\n"
        f"r.atomic_write_parquet({str(path)!r}, pd.DataFrame({{'run_id': ['b'] * 1000, 'final_loss': [1.0] * 1000}}))\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert (
        writer.stdout.readline().strip() == "written"
    )  # the new bytes are on disk, not yet renamed
    writer.kill()
    writer.wait()
    table = read_parquet(path)
    assert table["run_id"].tolist() == ["a"] and table["final_loss"].tolist() == [2.5]


def test_a_table_rewritten_while_it_is_read_is_read_whole(tmp_path):
    """A live run rewrites its curve while the driver reads it (a new file renamed over the
    old): every read gets one version whole, never the footer of one and the pages of the
    other (which `pq.read_table(path)`, opening the path twice, did in ~5% of reads here)."""
    import threading

    path = tmp_path / "curve.parquet"
    versions = [
        pd.DataFrame({"step": np.arange(n), "loss": np.linspace(5, 3, n)}) for n in (10, 300)
    ]
    atomic_write_parquet(path, versions[0])
    done = threading.Event()

    def rewrite():
        turn = 0
        while not done.is_set():
            turn += 1
            atomic_write_parquet(path, versions[turn % 2])

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        lengths = {len(read_parquet(path)) for _ in range(1500)}
    finally:
        done.set()
        writer.join()
    assert lengths <= {10, 300}


def test_a_second_driver_on_the_same_folder_refuses_at_once(tmp_path):
    config = write_spec(tmp_path, "locked", [2e10])
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from moescale.sweeps.lock import SweepLock; import time\nwith SweepLock({str(tmp_path / 'results' / 'locked')!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        result = moescale("sweep", str(config), "--results", str(tmp_path / "results"))
        assert time.monotonic() - started < 30
        assert_one_line_error(result, f"is in use by pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name → (command, expected words), for every kind of bad input a user can give."""
    (tmp / "malformed.yaml").write_text("name: x\nbudgets: [1e12\n")
    (tmp / "unknown.yaml").write_text(
        "name: x\nbudgets: [1e12]\nsizes: {n_active: [1e4]}\ncolour: red\n"
    )
    (tmp / "wrongtype.yaml").write_text("name: x\nbudgets: lots\nsizes: {n_active: [1e4]}\n")
    (tmp / "shape.yaml").write_text("model: {d_model: 64, n_heads: 3}\ntokens: 1000\n")
    (tmp / "small.yaml").write_text("name: x\nbudgets: [1e5]\nsizes: {n_active: [1e4, 2e4]}\n")
    (tmp / "nodata.yaml").write_text(
        "model: {d_model: 32}\ndata: {source: text, path: /no/such/corpus}\ntokens: 100000\n"
    )
    empty = tmp / "empty_corpus"
    empty.mkdir()
    (tmp / "emptycorpus.yaml").write_text(
        f"model: {{d_model: 32}}\ndata: {{source: text, path: {empty}}}\ntokens: 100000\n"
    )
    (tmp / "truncated").mkdir()
    (tmp / "truncated" / "runs.parquet").write_bytes(b"PAR1" + os.urandom(200))
    (tmp / "empty_results").mkdir()
    pd.DataFrame(
        {"N": [1e8, 2e8, 4e8] * 3, "C": np.repeat([1e18, 3e18, 9e18], 3), "L": [3.0, 2.9, 3.1] * 3}
    ).to_csv(tmp / "table.csv", index=False)
    nan_table = pd.read_csv(tmp / "table.csv")
    nan_table.loc[4, "L"] = float("nan")
    nan_table.loc[5, "N"] = -1
    nan_table.to_csv(tmp / "nan.csv", index=False)
    mapping = ["--n-col", "N", "--flops-col", "C", "--loss-col", "L"]
    twice = pd.read_csv(tmp / "table.csv").assign(run_id=[f"r{i}" for i in range(9)])
    twice.loc[8, "run_id"] = "r0"
    twice.to_csv(tmp / "twice.csv", index=False)
    (tmp / "a_folder").mkdir()
    sizes = "sizes: {n_active: [1e4]}"
    for name, budget in (("inf", ".inf"), ("nan", ".nan"), ("overflow", "1e400")):
        (tmp / f"budget_{name}.yaml").write_text(f"name: x\nbudgets: [{budget}]\n{sizes}\n")
    (tmp / "huge.yaml").write_text("name: x\nbudgets: [1e20]\nsizes: {n_active: [1e30, 1e31]}\n")
    (tmp / "longname.yaml").write_text(f"name: {'a' * 300}\nbudgets: [1e12]\n{sizes}\n")
    compare = ["compare", "results/example", "results/example"]
    only = tmp / "only_validations"
    only.mkdir()
    example = read_parquet(ROOT / "results" / "example" / "runs.parquet")
    atomic_write_parquet(only / "runs.parquet", example[example["validation"]])
    (tmp / "misplaced.yaml").write_text(f"name: x\nbudgets: [1e12]\n{sizes}\nseq_len: 64\n")
    return {
        "budget_inf": (["sweep", "--dry-run", str(tmp / "budget_inf.yaml")], "got inf"),
        "budget_nan": (["sweep", "--dry-run", str(tmp / "budget_nan.yaml")], "got nan"),
        "budget_overflow": (["flops", str(tmp / "budget_overflow.yaml")], "got inf"),
        "sizes_huge": (["sweep", "--dry-run", str(tmp / "huge.yaml")], "at most 1e+14"),
        "name_too_long": (["sweep", "--dry-run", str(tmp / "longname.yaml")], "at most 100"),
        "target_below_budgets": (
            ["fit", str(tmp / "table.csv"), *mapping, "--target-flops", "1e10"],
            "below every budget",
        ),
        "out_is_a_folder": (
            ["fit", str(tmp / "table.csv"), *mapping, "--out", str(tmp / "a_folder")],
            "is a folder",
        ),
        "run_id_twice": (["fit", str(tmp / "twice.csv"), *mapping], "run_id r0 more than once"),
        "malformed_yaml": (["sweep", str(tmp / "malformed.yaml")], "malformed YAML"),
        "unknown_key": (["sweep", str(tmp / "unknown.yaml")], "colour: unknown key"),
        "wrong_type": (["sweep", str(tmp / "wrongtype.yaml")], "budgets"),
        "impossible_shape": (
            ["train", str(tmp / "shape.yaml")],
            "MoEConfig.n_heads must divide d_model",
        ),
        "budgets_too_small": (["sweep", str(tmp / "small.yaml")], "no size fits budget"),
        "missing_data_path": (
            ["train", str(tmp / "nodata.yaml")],
            "/no/such/corpus: no such file or folder",
        ),
        "empty_corpus": (["train", str(tmp / "emptycorpus.yaml")], "empty corpus"),
        "truncated_parquet": (["fit", str(tmp / "truncated")], "not a readable Parquet file"),
        "empty_results_fit": (["fit", str(tmp / "empty_results")], "empty results folder"),
        "empty_results_report": (["report", str(tmp / "empty_results")], "empty results folder"),
        "csv_missing_column": (
            [
                "fit",
                str(tmp / "table.csv"),
                "--n-col",
                "params",
                "--flops-col",
                "C",
                "--loss-col",
                "L",
            ],
            "missing column 'params'",
        ),
        "nan_and_negative": (["fit", str(tmp / "nan.csv"), *mapping], "NaN or non-positive"),
        # the command line itself: one line, not click's usage box
        "bootstrap_negative": (
            ["fit", str(tmp / "table.csv"), *mapping, "--bootstrap", "-3"],
            "--bootstrap must be at least 0, got -3",
        ),
        "seq_len_not_an_integer": (
            ["flops", "configs/published/hunyuan-large.yaml", "--seq-len", "1e3"],
            "Invalid value for '--seq-len'",
        ),
        "missing_argument": (["fit"], "Missing argument 'source'"),
        "unknown_flag": (["sweep", "--no-such-flag", "x"], "No such option: --no-such-flag"),
        "unknown_command": (["nosuchcommand"], "No such command 'nosuchcommand'"),
        "compare_target_inf": (
            [*compare, "--target-flops", "inf", "--out", str(tmp / "cmp")],
            "--target-flops must be a positive number, got inf",
        ),
        "validate_budget_nan": (
            ["validate", "results/example", "--budget", "nan"],
            "--budget must be a positive number of FLOPs, got nan",
        ),
        "validate_budget_inside": (
            ["validate", "results/example", "--budget", "1e12"],
            "is not past the sweep's largest budget",
        ),
        "validate_one_size": (
            ["validate", "results/example", "--budget", "3e14", "--sizes", "1"],
            "--sizes must be at least 3",
        ),
        "validate_not_a_sweep": (
            ["validate", str(tmp / "empty_results"), "--budget", "1e14"],
            "not a sweep's results folder",
        ),
        "status_missing": (["status", str(tmp / "nowhere")], "no such results folder"),
        "status_empty": (["status", str(tmp / "empty_results")], "empty results folder"),
        "only_validation_runs": (
            ["fit", str(only)],
            "no completed runs to fit (10 validation runs, which are never fitted)",
        ),
        "key_in_the_wrong_place": (
            ["sweep", "--dry-run", str(tmp / "misplaced.yaml")],
            "seq_len: unknown key here (it belongs at 'recipe.seq_len')",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["malformed_yaml", "unknown_key", "wrong_type", "impossible_shape", "budgets_too_small", "missing_data_path", "empty_corpus",
     "truncated_parquet", "empty_results_fit", "empty_results_report", "csv_missing_column", "nan_and_negative",
     # issue 27's
     "budget_inf", "budget_nan", "budget_overflow", "sizes_huge", "name_too_long", "target_below_budgets",
     "out_is_a_folder", "run_id_twice",
     # and the next ones found: the command line, compare, validate, status
     "bootstrap_negative", "seq_len_not_an_integer", "missing_argument", "unknown_flag", "unknown_command",
     "compare_target_inf", "validate_budget_nan", "validate_budget_inside", "validate_one_size",
     "validate_not_a_sweep", "status_missing", "status_empty", "key_in_the_wrong_place",
     "only_validation_runs"],
)  # fmt: skip
def test_bad_input_matrix_is_one_line_exit_2_and_writes_nothing(tmp_path, case):
    command, expected = _bad_inputs(tmp_path)[case]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    assert_one_line_error(moescale(*command), expected)
    assert {
        p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")
    } == before  # nothing written at all
    assert not (ROOT / "results" / "x").exists()


# --- filesystem faults: a full disk (a small tmpfs) and a read-only folder (a bind mount) ---


@pytest.fixture
def mounts():
    """Mount points this test made (root only), unmounted after, innermost first."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs or a read-only bind needs root and mount(8)")
    made: list[Path] = []

    def mount(*args: str, at: Path) -> Path:
        at.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", *args, str(at)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"mount refused here: {done.stderr.strip()}")
        made.append(at)
        return at

    yield mount
    for at in reversed(made):
        subprocess.run(["umount", "-l", str(at)], check=False)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fill(disk: Path, leave: int) -> None:
    """Fill a tmpfs with one file until only `leave` bytes are free."""
    free = shutil.disk_usage(disk).free
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


@pytest.mark.parametrize("command", ["fit", "report", "compare"])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, mounts, command):
    """fit.json, the report and compare's figure set onto a disk with 48 KiB left: one line
    naming the file and 'No space left on device', exit 2, and none of the output left."""
    disk = mounts("-t", "tmpfs", "-o", "size=8m", "tmpfs", at=tmp_path / "disk")
    example = ROOT / "results" / "example"
    if command == "report":  # the results folder itself on the full disk, its fit current
        folder = disk / "example"
        shutil.copytree(example, folder, ignore=shutil.ignore_patterns("report", "runs", "trunks"))
        args, out = ["report", str(folder)], folder / "report"
    elif command == "fit":
        args, out = ["fit", str(example), "--out", str(disk / "fit.json")], disk / "fit.json"
    else:
        shutil.copytree(example, tmp_path / "other", ignore=shutil.ignore_patterns("report"))
        args = ["compare", str(example), str(tmp_path / "other"), "--out", str(disk / "cmp")]
        out = disk / "cmp"
    _fill(disk, 48 * 1024)
    before = _files(disk)
    result = moescale(*args)
    assert_one_line_error(result, "No space left on device")
    assert str(disk) in result.stderr  # names the file it could not write
    assert not out.exists()  # nothing half-written: no partial report, figure set or fit
    assert _files(disk) == before


def test_a_read_only_results_folder_is_one_line_and_unchanged(tmp_path, mounts):
    """`moescale fit` and `moescale report` on a results folder mounted read-only: one line
    naming the file and 'Read-only file system', exit 2, the folder as it was."""
    source = tmp_path / "example"
    shutil.copytree(ROOT / "results" / "example", source, ignore=shutil.ignore_patterns("fit.json"))
    shutil.rmtree(source / "report")
    folder = mounts("--bind", str(source), at=tmp_path / "read_only")
    mounts("-o", "remount,bind,ro", str(source), at=folder)
    before = _files(folder)
    for command in ("fit", "report"):
        result = moescale(command, str(folder), "--bootstrap", "20")
        assert_one_line_error(result, "Read-only file system")
        assert "fit.json" in result.stderr
    assert _files(folder) == before
