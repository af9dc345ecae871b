"""Refit every law from a results folder or a published table: the work behind `moescale fit`."""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from moescale.errors import UserError
from moescale.fitting.compute_law import ComputeLaw, fit_compute_law
from moescale.fitting.envelope import EnvelopeFit, fit_envelope
from moescale.fitting.extrapolation import ExtrapolationCheck, extrapolation_check
from moescale.fitting.isoflop import EdgeOptimumWarning, IsoflopFit, fit_isoflop
from moescale.fitting.parametric import ParametricFit, fit_parametric
from moescale.fitting.tables import map_columns, read_table
from moescale.results import atomic_write_json, load_curves, load_runs

METHODS = ("isoflop", "parametric", "envelope", "all")
DEFAULT_TARGET_FACTOR = 100.0  # the default target: 100 × the largest budget


@dataclass
class FitReport:
    """Everything `moescale fit` found, ready for fit.json and for the report."""

    source: str
    target_flops: float
    compute_law: ComputeLaw | None = None
    compute_law_time: ComputeLaw | None = None
    isoflop: IsoflopFit | None = None
    parametric: ParametricFit | None = None
    envelope: EnvelopeFit | None = None
    extrapolation: ExtrapolationCheck | None = None
    prediction: dict = field(default_factory=dict)
    parametric_prediction: dict = field(default_factory=dict)
    run_counts: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        def part(obj):
            return None if obj is None else obj.to_dict()

        return {
            "source": self.source,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "target_flops": self.target_flops,
            "run_counts": self.run_counts,
            "compute_law": part(self.compute_law),
            "compute_law_time": part(self.compute_law_time),
            "isoflop": part(self.isoflop),
            "parametric": part(self.parametric),
            "envelope": part(self.envelope),
            "extrapolation": part(self.extrapolation),
            "prediction": self.prediction,
            "parametric_prediction": self.parametric_prediction,
            "skipped": self.skipped,
        }


def load_source(
    source: str | Path, columns: dict[str, str | None]
) -> tuple[pd.DataFrame, pd.DataFrame | None, Path]:
    """(runs, curves or None, default fit.json path) from a results folder or a table file."""
    source = Path(source)
    if source.is_dir():
        runs = load_runs(source)
        curves_path = source / "curves.parquet"
        curves = load_curves(source) if curves_path.exists() else None
        return runs, curves, source / "fit.json"
    table = map_columns(read_table(source), columns, source=str(source))
    return table, None, source.with_name(source.name.split(".")[0] + ".fit.json")


def fit_all(
    runs: pd.DataFrame,
    curves: pd.DataFrame | None,
    source: str,
    method: str = "all",
    target_flops: float | None = None,
    bootstrap: int = 0,
    isoflop_method: str = "parabola",
    strict: bool = True,
) -> FitReport:
    """Every law the data supports. With `strict`, a method asked for by name that cannot be
    fitted is an error (and so is the isoFLOP fit under "all"); without, it is recorded in
    `skipped` and the rest goes on (the report's choice: show what there is)."""
    if method not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")
    statuses = (
        runs["status"].value_counts().to_dict() if "status" in runs else {"completed": len(runs)}
    )
    completed = runs[runs["status"] == "completed"] if "status" in runs else runs
    if completed.empty:
        raise UserError(f"{source}: no completed runs to fit")
    budget_max = float(completed["budget_flops"].max())
    target = float(target_flops) if target_flops else DEFAULT_TARGET_FACTOR * budget_max
    if target <= 0 or not np.isfinite(target):
        raise UserError(f"--target-flops must be a positive number, got {target_flops}")
    report = FitReport(
        source=source, target_flops=target, run_counts={k: int(v) for k, v in statuses.items()}
    )

    if "flops_per_token" in completed and completed["n_active"].nunique() >= 2:
        report.compute_law = fit_compute_law(runs, cost="flops")
        if {"train_s", "peak_flops"} <= set(runs) and (completed["train_s"].fillna(0) > 0).all():
            report.compute_law_time = fit_compute_law(runs, cost="time")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EdgeOptimumWarning)  # listed in `excluded` instead
        if method in ("isoflop", "all"):
            try:
                report.isoflop = fit_isoflop(runs, method=isoflop_method, bootstrap=bootstrap)
                report.prediction = report.isoflop.predict(target)
                report.extrapolation = extrapolation_check(runs, method=isoflop_method)
            except UserError as err:
                if strict and report.isoflop is None:
                    raise
                report.skipped["extrapolation" if report.isoflop else "isoflop"] = str(err)
    if method in ("parametric", "all"):
        try:
            report.parametric = fit_parametric(runs, bootstrap=min(bootstrap, 100))
            report.parametric_prediction = report.parametric.optimal(target, report.compute_law)
        except UserError as err:
            if strict and method == "parametric":
                raise
            report.skipped["parametric"] = str(err)
    if method in ("envelope", "all"):
        try:
            if curves is None:
                raise UserError("no loss curves (curves.parquet) in this source")
            report.envelope = fit_envelope(curves, runs)
        except UserError as err:
            if strict and method == "envelope":
                raise
            report.skipped["envelope"] = str(err)
    return report


def write_report(report: FitReport, path: str | Path) -> None:
    atomic_write_json(path, report.to_dict())
