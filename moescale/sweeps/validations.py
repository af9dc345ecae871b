"""The sweep's side of validations: the runs a validation recorded in validations.json
plans (deterministic, so a cut validation resumes with the sweep), read back from the
results folder. Scoring and orchestration live in moescale/validate.py, above sweeps/."""

from __future__ import annotations

from pathlib import Path

from moescale.results import SweepFolder
from moescale.sweeps.plan import Dropped, PlannedRun, plan_run
from moescale.sweeps.spec import SweepSpec


def validation_runs(
    spec: SweepSpec, budget: float, sizes: list[float]
) -> tuple[list[PlannedRun], list[str]]:
    """The runs of a validation, and a line for each size that cannot be planned (a size the
    family cannot build, too few steps, ...)."""
    runs, dropped = [], []
    for target in sizes:
        for seed in spec.seeds:
            run = plan_run(spec, -1, target, seed, validation_budget=budget)
            if isinstance(run, Dropped):
                dropped.append(run.reason)
            else:
                runs.append(run)
    return runs, dropped


def planned_validations(spec: SweepSpec, results_dir: Path) -> list[PlannedRun]:
    """Every validation run recorded in validations.json, planned again (deterministic)."""
    runs, seen = [], set()
    for record in SweepFolder(results_dir).validations():
        for run in validation_runs(spec, record["budget"], record["sizes"])[0]:
            if run.run_id not in seen:
                seen.add(run.run_id)
                runs.append(run)
    return runs
