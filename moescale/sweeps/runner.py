"""Running a sweep on Ray Tune: a local Ray instance by default, a cluster with `address`.

Each trial calls `training.train_run` into `<results>/<sweep>/runs/<run_id>/`, so a trial
that Ray retries after its worker died resumes from that run's own checkpoint; runs already
completed (or diverged) are never trained again. runs.parquet and curves.parquet are
rewritten as runs finish. Bracketing rounds follow until every budget's minimum is inside
its sizes or its extensions are spent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from moescale.errors import UserError
from moescale.results import (
    FINISHED,
    RunStatus,
    SweepFolder,
    atomic_write_bytes,
    atomic_write_json,
    completed,
    state_path,
)
from moescale.sweeps.lock import SweepLock
from moescale.sweeps.plan import (
    Dropped,
    Plan,
    PlannedRun,
    Repetition,
    bracket_extensions,
    plan_sweep,
    repetition,
)
from moescale.sweeps.progress import SweepProgress
from moescale.sweeps.queue import prune_states
from moescale.sweeps.spec import SweepSpec
from moescale.sweeps.store import consolidate, finished_status


@dataclass
class SweepOutcome:
    results_dir: Path
    plan: Plan
    trained: list[str] = field(default_factory=list)  # run ids trained (or resumed) this time
    notes: list[str] = field(default_factory=list)  # dropped runs, bracketing, failures
    unfinished: list[str] = field(default_factory=list)  # runs left without a record


def _trial(config: dict, specs: dict, trunks: dict, results_dir: str) -> None:
    """A Ray Tune function trainable: one run, trunk or branch (TrialQueue decides which, and
    when), its curve rows reported as they are logged."""
    import ray
    from ray import tune

    from moescale.sweeps.queue import TrialKind
    from moescale.training import RunSpec, train_run
    from moescale.training.trainer import train_branch, train_trunk

    kind, name = TrialKind(config["kind"]), config["id"]
    if kind is TrialKind.TRUNK:
        spec = RunSpec.model_validate(trunks[name]["spec"])
        folder = SweepFolder(results_dir).trunk_dir(name)
    else:
        spec = RunSpec.model_validate(specs[name]["spec"])
        folder = SweepFolder(results_dir).run_dir(name)
    # where and when this attempt ran: a retried trial overwrites it with its new node and pid
    attempt = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "pid": os.getpid(),
        "niceness": os.nice(0),  # Ray's default of 15 starves trials on a shared machine
        "started": time.time(),
        "kind": kind.value,
    }
    atomic_write_json(folder / "trial.json", attempt)
    # a branch reports the FLOPs of its cooldown only: its trunk's were reported by the trunk
    offset = specs[name].get("trunk_flops", 0.0) if kind is TrialKind.BRANCH else 0.0

    def report(row: dict) -> None:
        numbers = {
            k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        if "flops" in numbers:
            numbers["flops"] -= offset
        tune.report(numbers)

    if kind is TrialKind.TRUNK:
        reached = train_trunk(spec, trunks[name]["steps"], folder, progress=report)
        tune.report({"done": 1, "steps": reached})
        return
    if kind is TrialKind.BRANCH:
        state = state_path(
            SweepFolder(results_dir).trunk_dir(specs[name]["trunk_id"]), specs[name]["branch_step"]
        )
        result = train_branch(spec, state, folder, progress=report)
    else:
        result = train_run(spec, folder, progress=report)
    tune.report(
        {
            "done": 1,
            "final_loss": result.final_loss,
            "flops": result.flops - offset,
            "failed": int(result.status == RunStatus.FAILED),
        }
    )


def ray_temp_dir(results_dir: Path) -> Path:
    """Where a local Ray keeps its session: inside the results folder when the path is short
    (Ray's socket paths must stay under ~107 bytes), else a fixed folder in /tmp named by a
    hash of the results folder, so the sweep's own processes can always be found again."""
    preferred = results_dir.resolve() / ".ray"
    if len(str(preferred)) <= 40:
        return preferred
    digest = hashlib.blake2b(str(results_dir.resolve()).encode(), digest_size=5).hexdigest()
    return Path(tempfile.gettempdir()) / f"moescale-ray-{digest}"


def _make(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def start_ray(results_dir: Path, address: str | None, dashboard: bool = False) -> bool:
    """Connect to `address` (or $RAY_ADDRESS), else start a local instance. True if this call
    initialised Ray (so the sweep shuts it down after), False if the caller already had."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        return True
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    ray.init(
        num_cpus=os.cpu_count(),
        object_store_memory=int(min(2 * 2**30, 0.1 * memory)),
        _temp_dir=str(_make(ray_temp_dir(results_dir))),
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        logging_level="WARNING",
        log_to_driver=False,
        # Ray lowers its workers to nice 15 so that a driver stays responsive; in a sweep the
        # workers' trials are the work, and at nice 15 any other busy process takes nearly all
        # of a shared core from them (measured here: a trial got 7 CPU-s in 180 s beside a
        # nice-0 busy loop). At 0 they keep the niceness the sweep was started with
        # (`nice moescale sweep ...` still works).
        _system_config={"worker_niceness": 0},
    )
    return True


def concurrent_trials(resources) -> int:
    """How many trials of `resources` the connected Ray cluster runs side by side (at least 1)."""
    import ray

    have = ray.cluster_resources()
    fits = [
        have.get(name, 0.0) // (amount * resources.workers)
        for name, amount in (("CPU", resources.cpus), ("GPU", resources.gpus))
        if amount > 0
    ]
    return max(1, int(min(fits)))


@contextlib.contextmanager
def trials_start_together(resources):
    """Tune keeps one trial pending (its actor starting) at a time under a custom search
    algorithm: every worker after the first waited for the one before it to import torch
    (12-15 s each here). As many may start at once as the cluster runs side by side; set for
    one round only (a later sweep in the process may meet another cluster), and a value the
    user set wins."""
    own = "TUNE_MAX_PENDING_TRIALS_PG" not in os.environ
    if own:
        os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(concurrent_trials(resources))
    try:
        yield
    finally:
        if own:
            os.environ.pop("TUNE_MAX_PENDING_TRIALS_PG", None)


class _Consolidate:
    """A Tune callback that keeps runs.parquet, curves.parquet and the display current.
    Ray stores its experiment state with pickle; the live display stays out of it."""

    def __init__(self, results_dir: Path, sweep: str, plan: Plan, progress: SweepProgress):
        self.results_dir, self.sweep, self.plan, self.progress = results_dir, sweep, plan, progress

    def __getstate__(self) -> dict:
        return {**self.__dict__, "progress": None}

    def _write(self) -> None:
        running = self.progress.running if self.progress else set()
        consolidate(self.results_dir, self.sweep, self.plan, running)

    def on_trial_start(self, iteration, trials, trial, **info):
        if self.progress:
            self.progress.running.add(trial.config["id"])
        self._write()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.progress:
            self.progress.update(trial.config["id"], result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.progress:
            self.progress.finish(trial.config["id"])
        self._write()

    on_trial_error = on_trial_complete


def tracking_callbacks(tracking) -> list:
    """Ray Tune's own logger callbacks for `tracking` (see sweeps/spec.py `Tracking`); a
    tracker whose package is missing is a one-line error before anything runs."""
    import importlib.util

    trackers = {
        name: (arguments, package)
        for name, arguments, package in (
            ("wandb", tracking.wandb, "ray.air.integrations.wandb"),
            ("mlflow", tracking.mlflow, "ray.air.integrations.mlflow"),
        )
        if arguments is not None
    }
    for name in trackers:  # found without importing it, or Ray, or torch (via tensorboardX)
        if importlib.util.find_spec(name) is None:
            raise UserError(f"tracking.{name} needs the {name} package: pip install {name}")
    from ray.tune.logger import JsonLoggerCallback, TBXLoggerCallback

    # params.json and result.json in each trial's folder: its config (N, D, C) and results
    callbacks = [JsonLoggerCallback()] + ([TBXLoggerCallback()] if tracking.tensorboard else [])
    for name, (arguments, package) in trackers.items():
        module = __import__(package, fromlist=["_"])
        kind = module.WandbLoggerCallback if name == "wandb" else module.MLflowLoggerCallback
        try:
            callbacks.append(kind(**arguments))
        except TypeError as err:
            raise UserError(f"tracking.{name}: {err}") from None
    return callbacks


def _run_round(
    spec: SweepSpec,
    results_dir: Path,
    plan: Plan,
    pending: list[PlannedRun],
    progress: SweepProgress,
) -> None:
    from ray import tune
    from ray.tune.search import Searcher

    from moescale.sweeps.queue import TrialQueue

    class Queue(Searcher):
        """TrialQueue as Tune's search algorithm."""

        def __init__(self, queue: TrialQueue):
            super().__init__()
            self.queue = queue

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            return True

        def suggest(self, trial_id: str):
            return self.queue.next(trial_id)

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            self.queue.completed(trial_id)

        def save(self, checkpoint_path: str) -> None:  # the run folders are the sweep's state
            atomic_write_json(checkpoint_path, {"note": "state lives in the run folders"})

    callback = type("Consolidate", (_Consolidate, tune.Callback), {})(
        results_dir, spec.name, plan, progress
    )
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own display replaces Tune's tables
    # loggers are the ones `tracking` asks for, not Tune's automatic CSV/JSON/TensorBoard set
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    trunks = plan.trunks()
    queue = TrialQueue(results_dir, pending, trunks)
    specs = {run.run_id: _trial_facts(run) for run in pending}
    owed = {
        t: {"spec": trunks[t].spec.model_dump(mode="json"), "steps": queue.branch_steps(t)}
        for t in queue.waiting_trunks
    }
    trainable = tune.with_resources(
        tune.with_parameters(_trial, specs=specs, trunks=owed, results_dir=str(results_dir)),
        {
            "cpu": spec.resources.cpus * spec.resources.workers,
            "gpu": spec.resources.gpus * spec.resources.workers,
        },
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=Queue(queue),
            # a trial's folder (and its name in TensorBoard, W&B, MLflow) is its run id
            trial_dirname_creator=lambda trial: f"{trial.config['kind']}-{trial.config['id']}",
            trial_name_creator=lambda trial: f"{trial.config['kind']}-{trial.config['id']}",
            num_samples=len(pending) + len(owed),
            max_concurrent_trials=None,
            reuse_actors=True,  # no re-import per trial
        ),
        run_config=tune.RunConfig(
            name=f"round-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str((results_dir / "ray").resolve()),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=[callback, *tracking_callbacks(spec.tracking)],
            verbose=0,
        ),
    )
    with trials_start_together(spec.resources):
        tuner.fit()


def _trial_facts(run: PlannedRun) -> dict:
    """What a trial of `run` is told: its RunSpec, and a branch its trunk and branch point."""
    facts = {"spec": run.spec.model_dump(mode="json")}
    if run.trunk_id:
        facts.update(
            trunk_id=run.trunk_id, branch_step=run.branch_step, trunk_flops=run.trunk_flops
        )
    return facts


def tokenize_once(data):
    """The sweep's corpus, tokenized once by the driver before any trial starts (into the
    cache every trial then memory-maps), with a progress bar while it encodes."""
    from rich.progress import Progress

    from moescale.training.data import cache_root
    from moescale.training.sources import load_tokens

    with Progress(transient=True) as bar:
        task = None

        def update(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = bar.add_task(f"tokenizing the corpus into {cache_root(data)}", total=total)
            bar.update(task, completed=done)

        return load_tokens(data, progress=update)


def corpus_repetition(spec: SweepSpec, plan: Plan) -> Repetition | None:
    """The plan's passes over its corpus, or None where this machine cannot read the corpus
    (the trials will say so themselves if theirs cannot either)."""
    from moescale.errors import UserError

    try:
        unique = len(tokenize_once(spec.data).train)  # cached after the first tokenization
    except UserError:
        return None
    return repetition(plan, unique, spec.max_epochs)


def repetition_notes(spec: SweepSpec, plan: Plan) -> list[str]:
    found = corpus_repetition(spec, plan)
    if found is None:
        return ["the corpus cannot be read here: passes over the data not checked"]
    lines = found.notes(plan)
    if lines:
        lines.append(
            f"every planned size stays within {spec.max_epochs:g} passes up to "
            f"{found.largest_budget(plan):.3g} FLOPs on this corpus"
        )
    return lines


def _train_round(
    spec: SweepSpec,
    results_dir: Path,
    plan: Plan,
    runs: list[PlannedRun],
    progress: SweepProgress,
    ensure_ray,
    outcome: SweepOutcome,
):
    """Train those of `runs` without a finished record (one Ray Tune round), then rewrite
    runs.parquet; records what was trained and what was left unfinished in `outcome`."""
    pending = [r for r in runs if finished_status(results_dir, r.run_id) not in FINISHED]
    consolidate(results_dir, spec.name, plan)
    if pending:
        ensure_ray()
        with progress.live():
            _run_round(spec, results_dir, plan, pending, progress)
        outcome.trained.extend(r.run_id for r in pending)
    table = consolidate(results_dir, spec.name, plan)
    unfinished = [r for r in runs if finished_status(results_dir, r.run_id) not in FINISHED]
    prune_states(results_dir, unfinished, [r.run_id for r in runs], plan.trunks())
    outcome.unfinished = [
        r.run_id for r in pending if finished_status(results_dir, r.run_id) is None
    ]
    return table


@contextlib.contextmanager
def ray_session(results_dir: Path, address: str | None, dashboard: bool):
    """Ray, started on first use (`ensure()`); a local instance this started is shut down
    (and its session folder outside the results removed) on the way out, however it ends."""
    started = {"ready": False, "owned": False}

    def ensure() -> None:
        if not started["ready"]:
            started["owned"] = start_ray(results_dir, address, dashboard)
            started["ready"] = True

    try:
        yield ensure
    finally:
        if started["owned"]:  # a local instance stops; a cluster is only disconnected from
            import ray

            ray.shutdown()
            temp = ray_temp_dir(results_dir)
            if not (address or os.environ.get("RAY_ADDRESS")) and temp.parent == Path(
                tempfile.gettempdir()
            ):
                shutil.rmtree(temp, ignore_errors=True)  # our own session outside the results


def run_sweep(
    spec: SweepSpec,
    results_root: str | Path = "results",
    address: str | None = None,
    dashboard: bool = False,
    show_progress: bool = True,
) -> SweepOutcome:
    """Plan, run what is missing, bracket, and consolidate; safe to call again after any stop."""
    from moescale.sweeps.validations import planned_validations

    # absolute: Ray Tune runs each trial in a working directory of its own
    results_dir = (Path(results_root) / spec.name).resolve()
    plan = plan_sweep(spec)  # validates the whole plan before anything is written
    tracking_callbacks(spec.tracking)  # a missing tracker package: an error before any write
    outcome = SweepOutcome(results_dir, plan, notes=list(plan.dropped))
    outcome.notes.extend(repetition_notes(spec, plan))
    with SweepLock(results_dir), ray_session(results_dir, address, dashboard) as ensure_ray:
        plan.runs.extend(planned_validations(spec, results_dir))  # kept, and resumed if cut
        atomic_write_bytes(
            SweepFolder(results_dir).spec_path,
            yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False).encode(),
        )
        progress = SweepProgress(results_dir, plan, enabled=show_progress)
        while True:
            runs = _train_round(spec, results_dir, plan, plan.runs, progress, ensure_ray, outcome)
            # a run with no record after its round was interrupted (Ctrl-C) or given up on
            # after max_failures: stop here; running the same command again resumes it
            if outcome.unfinished:
                break
            finished = completed(runs)[["run_id", "final_loss"]]
            added = bracket_extensions(spec, plan, finished)
            new = [r for r in added if isinstance(r, PlannedRun)]
            outcome.notes.extend(r.reason for r in added if isinstance(r, Dropped))
            if not new:
                break
            for run in new:
                outcome.notes.append(
                    f"bracketing: budget {run.budget_flops:.3g} adds n_active {run.n_active:,} (extension {run.extension:+d})"
                )
            plan.runs.extend(new)
        failed = runs[runs["status"] == RunStatus.FAILED]
        outcome.notes.extend(f"run {r.run_id} failed: {r.error}" for r in failed.itertuples())
    return outcome


def train_planned(
    spec: SweepSpec,
    results_dir: Path,
    plan: Plan,
    runs: list[PlannedRun],
    address: str | None = None,
    dashboard: bool = False,
    show_progress: bool = True,
) -> SweepOutcome:
    """Train those of `runs` not yet finished (they must be in `plan`) under the folder's
    lock, on the same Ray runner as a sweep; runs.parquet is rewritten from `plan`."""
    outcome = SweepOutcome(results_dir, plan)
    with SweepLock(results_dir), ray_session(results_dir, address, dashboard) as ensure_ray:
        progress = SweepProgress(results_dir, plan, enabled=show_progress)
        runs_table = _train_round(spec, results_dir, plan, runs, progress, ensure_ray, outcome)
        failed = runs_table[
            runs_table["run_id"].isin([r.run_id for r in runs])
            & (runs_table["status"] == RunStatus.FAILED)
        ]
        outcome.notes.extend(f"run {r.run_id} failed: {r.error}" for r in failed.itertuples())
    return outcome
