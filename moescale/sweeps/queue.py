"""The order in which a sweep's trials start, handed to Ray Tune as its search algorithm.

Every WSD trunk that still owes a state starts first (longest first), then runs trained on
their own (longest first) and each branch as soon as its trunk's plateau state at its branch
step is on disk — so branches run beside their still-growing trunk wherever a worker is free,
and no worker ever waits for a state (a branch is handed out only when it can start). Tune
asks for the next trial whenever a worker is free; `None` means "nothing can start yet, ask
again", FINISHED that nothing is left. A branch's state is deleted once the branch has a
finished record; the trunk's own checkpoint keeps its last state for a later extension."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from moescale.results import FINISHED, SweepFolder, state_path
from moescale.sweeps.plan import PlannedRun, Trunk
from moescale.sweeps.store import finished_status

DONE = "FINISHED"  # ray.tune.search.Searcher.FINISHED, without importing ray here


class TrialKind(str, Enum):
    """What a trial trains: a run on its own, a WSD trunk, or a branch off a trunk's state.
    Trial configs carry the value (a plain string, as Tune's config is stored)."""

    RUN = "run"
    TRUNK = "trunk"
    BRANCH = "branch"


def _facts(run: PlannedRun) -> dict:
    return {
        "n_active": run.n_active,
        "tokens": run.tokens,
        "budget_flops": run.budget_flops,
        "seed": run.spec.seed,
        "trunk_id": run.trunk_id,
    }


class TrialQueue:
    """What to start next. Trials are dicts {"kind": a TrialKind's value, "id": ...}."""

    def __init__(self, results_dir: Path, pending: list[PlannedRun], trunks: dict[str, Trunk]):
        self.results_dir = Path(results_dir)
        self.trunks = trunks
        self.branches = sorted((r for r in pending if r.trunk_id), key=lambda r: r.branch_step)
        self.runs = sorted((r for r in pending if not r.trunk_id), key=lambda r: -r.steps)
        owing = {r.trunk_id for r in self.branches if not self._state(r).exists()}
        self.waiting_trunks = sorted(owing, key=lambda t: -trunks[t].steps)
        self.ended_trunks: set[str] = set()  # their trial is over: states they lack never come
        self.trials: dict[str, dict] = {}  # Tune's trial id → the trial it was given
        # what trackers show as each trial's config: its N, D, C (a trunk: its longest branch's)
        self.facts = {r.run_id: _facts(r) for r in pending}
        for trunk_id in self.waiting_trunks:
            longest = trunks[trunk_id].branches[-1]
            self.facts[trunk_id] = {**_facts(longest), "tokens": trunks[trunk_id].spec.tokens}

    def _state(self, branch: PlannedRun) -> Path:
        return state_path(
            SweepFolder(self.results_dir).trunk_dir(branch.trunk_id), branch.branch_step
        )

    def branch_steps(self, trunk_id: str) -> list[int]:
        """The branch points the trunk still owes (those of this round's branches)."""
        return sorted({b.branch_step for b in self.branches if b.trunk_id == trunk_id})

    def next(self, trial_id: str) -> dict | str | None:
        trial = self._next()
        if isinstance(trial, dict):
            trial.update(self.facts.get(trial["id"], {}))
            self.trials[trial_id] = trial
        return trial

    def _next(self) -> dict | str | None:
        if self.waiting_trunks:
            return {"kind": TrialKind.TRUNK.value, "id": self.waiting_trunks.pop(0)}
        for branch in self.branches:
            if self._state(branch).exists():
                self.branches.remove(branch)
                return {"kind": TrialKind.BRANCH.value, "id": branch.run_id}
        if self.runs:
            return {"kind": TrialKind.RUN.value, "id": self.runs.pop(0).run_id}
        # branches whose trunk has ended without their state are left for the next sweep
        self.branches = [b for b in self.branches if b.trunk_id not in self.ended_trunks]
        return None if self.branches else DONE

    def completed(self, trial_id: str) -> None:
        """A trial is over (however it ended): a trunk's missing states will not come; a
        finished branch's state is deleted unless another waiting branch needs it."""
        trial = self.trials.get(trial_id)
        if trial is None:
            return
        kind = TrialKind(trial["kind"])
        if kind is TrialKind.TRUNK:
            self.ended_trunks.add(trial["id"])
        elif kind is TrialKind.BRANCH:
            prune_states(self.results_dir, self.branches, [trial["id"]], self.trunks)


def prune_states(
    results_dir: Path, waiting: list[PlannedRun], finished_ids: list[str], trunks: dict[str, Trunk]
) -> None:
    """Delete the trunk states of branches in `finished_ids` that have a finished record and
    that no branch in `waiting` still needs."""
    needed = {(b.trunk_id, b.branch_step) for b in waiting}
    by_id = {b.run_id: b for t in trunks.values() for b in t.branches}
    for run_id in finished_ids:
        branch = by_id.get(run_id)
        if branch is None or (branch.trunk_id, branch.branch_step) in needed:
            continue
        if finished_status(results_dir, run_id) in FINISHED:
            state_path(
                SweepFolder(results_dir).trunk_dir(branch.trunk_id), branch.branch_step
            ).unlink(missing_ok=True)
