"""`moescale validate`: train K sizes at a budget past the sweep, around the predicted N_opt,
with the sweep's own recipe and data through the same Ray runner, and score every method's
prediction there (fitting/studies/validation.py). A client of sweeps/ and fitting/, above both (the
sweep itself only replans recorded validation runs: sweeps/validations.py). The runs live in
the same results folder, marked `validation` in runs.parquet and never fitted;
validations.json keeps each validation's plan, the predictions it tested and their scores.
Idempotent: a validation already trained is scored again, not trained again."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd

from moescale.errors import OptionError, UserError
from moescale.fitting.prediction import Prediction, method_prediction
from moescale.results import RunStatus, SweepFolder, atomic_write_json, load_runs
from moescale.sweeps.plan import Plan, PlannedRun
from moescale.sweeps.spec import SweepSpec
from moescale.sweeps.validations import planned_validations, validation_runs

MARGIN = 1.3  # the grid reaches this factor beyond the interval's ends (sizes are rounded)
DEFAULT_SIZES = 5


def validation_sizes(prediction: Prediction, k: int) -> list[float]:
    """K sizes, log-spaced, so that the predicted N_opt and both ends of its interval lie
    inside the grid (a factor 3 either side where there is no interval)."""
    if k < 3:
        raise OptionError(f"{{sizes}} must be at least 3, got {k}")
    n = prediction.n_opt
    low, high = prediction.n_opt_interval or (n / 3, n * 3)
    low, high = min(low, n / 1.5) / MARGIN, max(high, n * 1.5) * MARGIN
    return list(np.exp(np.linspace(np.log(low), np.log(high), k)))


def predictions_at(fit, runs: pd.DataFrame, budget: float) -> dict[str, Prediction]:
    """Every method's prediction at `budget` from a fit (FitReport), and the old naive one —
    the report's parabola per budget with N_opt and D_opt as two independent power laws."""
    import warnings

    from moescale.fitting.laws.isoflop import EdgeOptimumWarning, fit_isoflop

    out = fit.predict_at(budget)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EdgeOptimumWarning)
            naive = fit_isoflop(runs, method="parabola", bootstrap=200)
        # D_opt from its own power law, as the naive method has it: no compute law
        out["naive"] = method_prediction("naive", naive.predict(budget), naive.interval_note, None)
    except UserError:
        pass
    if not out:
        raise UserError("validation: the fit has no law to predict with")
    return out


def record_validation(
    results_dir: Path, budget: float, sizes: list[float], predictions: dict, headline: str
) -> dict:
    """Add a validation to validations.json, or return the one already there for `budget`
    (same sizes, so nothing is trained twice)."""
    records = SweepFolder(results_dir).validations()
    for record in records:
        if math.isclose(record["budget"], budget, rel_tol=1e-9):
            return record
    record = {
        "budget": float(budget),
        "sizes": [float(s) for s in sizes],
        "headline_method": headline,
        "predictions": {name: p.to_dict() for name, p in predictions.items()},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "scores": [],
    }
    atomic_write_json(SweepFolder(results_dir).validations_path, records + [record])
    return record


def refresh_predictions(results_dir: Path, record: dict, fit, runs: pd.DataFrame) -> dict:
    """A validation already planned, its predictions made again by the fit as it stands (a
    newer moescale, more sweep runs): the fit never sees validation runs, so its prediction
    stays blind to them, and the score is of the fit a user has now. Sizes stay as planned."""
    records = SweepFolder(results_dir).validations()
    for stored in records:
        if math.isclose(stored["budget"], record["budget"], rel_tol=1e-9):
            predictions = predictions_at(fit, runs, stored["budget"])
            stored["predictions"] = {name: p.to_dict() for name, p in predictions.items()}
            stored["headline_method"] = fit.lead_method
            stored["predicted_by"] = {"fit_created": fit.created, "runs_hash": fit.runs_hash}
            record = stored
    atomic_write_json(SweepFolder(results_dir).validations_path, records)
    return record


def score_validation(results_dir: Path, record: dict, fit) -> list:
    """Score every recorded prediction against the validation runs at its budget; the
    scores are written back into validations.json."""
    from moescale.fitting.laws.compute_law import DEFAULT_LAW
    from moescale.fitting.laws.isoflop import single_budget_method
    from moescale.fitting.studies.validation import realised_optimum, score_prediction

    runs = load_runs(results_dir)
    at = runs[
        runs["validation"].astype(bool)
        & np.isclose(runs["budget_flops"], record["budget"], rtol=1e-9)
        & (runs["status"] == RunStatus.COMPLETED)
    ]
    per_size = at.groupby("n_active")["final_loss"].mean()
    method = single_budget_method(fit.isoflop.method if fit.isoflop is not None else "auto")
    scores = [
        score_prediction(
            name,
            Prediction.from_dict(prediction),
            per_size.index.to_numpy(float),
            per_size.to_numpy(float),
            compute_law=fit.compute_law or DEFAULT_LAW,
            parametric=fit.parametric,
            per_budget_method=method,
        )
        for name, prediction in record["predictions"].items()
    ]
    *_, (grid, values), aside = realised_optimum(
        per_size.index.to_numpy(float), per_size.to_numpy(float), method, bootstrap=0
    )
    records = SweepFolder(results_dir).validations()
    for stored in records:
        if math.isclose(stored["budget"], record["budget"], rel_tol=1e-9):
            stored["scores"] = [s.to_dict() for s in scores]
            stored["realised"] = {
                "n_active": per_size.index.tolist(),
                "loss": per_size.tolist(),
                "curve_log_n": grid.tolist(),
                "curve_loss": values.tolist(),
                "per_budget_method": method,
                "set_aside": list(aside),
            }
    atomic_write_json(SweepFolder(results_dir).validations_path, records)
    return scores


def full_plan(spec: SweepSpec, results_dir: Path) -> Plan:
    """The sweep's plan as it stands on disk: planned runs, the bracketing extensions that
    were trained, and the validations — so that rewriting runs.parquet keeps every row."""
    from moescale.sweeps.plan import bracket_extensions, plan_sweep
    from moescale.sweeps.store import run_record

    plan = plan_sweep(spec)
    while True:
        records = {r.run_id: run_record(results_dir, r.run_id) for r in plan.runs}
        finished = pd.DataFrame(
            [
                {"run_id": i, "final_loss": r["result"]["final_loss"]}
                for i, r in records.items()
                if r and r.get("result", {}).get("status") == RunStatus.COMPLETED
            ],
            columns=["run_id", "final_loss"],
        )
        added = [
            r
            for r in bracket_extensions(spec, plan, finished)
            if isinstance(r, PlannedRun) and run_record(results_dir, r.run_id) is not None
        ]
        if not added:
            break
        plan.runs.extend(added)
    plan.runs.extend(planned_validations(spec, results_dir))
    return plan


def sweep_fit(results_dir: Path):
    """The sweep's fit (fit.json when it matches the runs; validations are never its inputs)
    and its runs."""
    from moescale.fitting.pipeline import current_fit

    runs = load_runs(results_dir)
    curves = SweepFolder(results_dir).curves()
    return current_fit(results_dir, runs, curves)[0], runs


def run_validation(
    results_dir: str | Path,
    budget: float,
    k: int = DEFAULT_SIZES,
    address: str | None = None,
    dashboard: bool = False,
    show_progress: bool = True,
) -> tuple[dict, list, list[str]]:
    """Plan (or find), train and score a validation at `budget`: (its record, the scores,
    notes). The sweep's fit and its inputs are left as they were."""
    from moescale.fitting.pipeline import fit_inputs
    from moescale.sweeps import load_sweep_spec
    from moescale.sweeps.runner import train_planned

    results_dir = Path(results_dir).resolve()
    if not SweepFolder(results_dir).spec_path.is_file():
        raise UserError(f"{results_dir}: not a sweep's results folder (no sweep.yaml)")
    if not (math.isfinite(budget) and budget > 0):
        raise OptionError(f"{{budget}} must be a positive number of FLOPs, got {budget}")
    spec = load_sweep_spec(SweepFolder(results_dir).spec_path)
    fit, runs = sweep_fit(results_dir)
    if fit.prediction is None:
        raise UserError(f"{results_dir}: the fit has no prediction to validate")
    swept = fit_inputs(runs)
    largest = float(swept.loc[swept["status"] == RunStatus.COMPLETED, "budget_flops"].max())
    if budget <= largest * 1.01:
        raise OptionError(
            f"{{budget}} {budget:.3g} is not past the sweep's largest budget ({largest:.3g})"
        )
    existing = [
        r for r in SweepFolder(results_dir).validations() if math.isclose(r["budget"], budget)
    ]
    if existing:
        record = refresh_predictions(results_dir, existing[0], fit, swept)
    else:
        predictions = predictions_at(fit, swept, budget)
        headline = fit.lead_method
        sizes = validation_sizes(predictions[headline], k)
        planned, dropped = validation_runs(spec, budget, sizes)
        if len({r.n_active for r in planned}) < 3:
            raise UserError(
                f"validation: only {len(planned)} of the {k} sizes can be planned at "
                f"{budget:.3g} FLOPs ({dropped[0] if dropped else 'no sizes'})"
            )
        record = record_validation(results_dir, budget, sizes, predictions, headline)
    plan = full_plan(spec, results_dir)
    mine, dropped = validation_runs(spec, record["budget"], record["sizes"])
    outcome = train_planned(spec, results_dir, plan, mine, address, dashboard, show_progress)
    notes = [f"size left out: {line}" for line in dropped] + list(outcome.notes)
    if outcome.unfinished:
        notes.append(
            f"{len(outcome.unfinished)} validation run(s) unfinished: run the same command again"
        )
        return record, [], notes
    return record, score_validation(results_dir, record, fit), notes
