"""Refit every law from a results folder or a published table: the work behind `moescale fit`,
and fit.json — written, read back as typed objects, and matched to the runs it came from."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from moescale import __version__
from moescale.errors import OptionError, UserError
from moescale.fitting.laws.compute_law import DEFAULT_LAW, ComputeLaw, fit_compute_law
from moescale.fitting.laws.critical_batch import (
    CriticalBatchFit,
    fit_critical_batch,
    on_minimal_compute,
)
from moescale.fitting.laws.data_constrained import (
    REPEAT_THRESHOLD,
    DataConstrainedFit,
    epochs,
    fit_data_constrained,
)
from moescale.fitting.laws.envelope import EnvelopeFit, annealed_curves, branched, fit_envelope
from moescale.fitting.laws.isoflop import EdgeOptimumWarning, IsoflopFit, LossFloor, fit_isoflop
from moescale.fitting.laws.parametric import ParametricFit, fit_parametric
from moescale.fitting.laws.powerlaw import SaturatingLaw
from moescale.fitting.options import DEFAULT_TARGET_FACTOR, METRICS, FitOptions
from moescale.fitting.prediction import (
    Prediction,
    allocation_width,
    combined_prediction,
    headline,
    method_prediction,
    parametric_share,
)
from moescale.fitting.studies.extrapolation import ExtrapolationCheck, extrapolation_check
from moescale.fitting.studies.lack_of_fit import LackOfFit, approach3_lack_of_fit
from moescale.fitting.studies.moe_design import (
    MoEDesignFit,
    fit_moe_design,
    has_variants,
    reference_variant,
)
from moescale.fitting.studies.tuning import TuningFit, fit_tuning, tune_points, tuned_axes
from moescale.fitting.tables import map_columns, read_table
from moescale.results import (
    ENDED,
    RunStatus,
    SweepFolder,
    atomic_write_json,
    completed,
    read_json,
)

N_CONVENTION = (
    "n_active: activated parameters — attention, router, shared experts, the top-k routed "
    "experts, norms and the output head; not the input embedding table (a lookup)"
)
BATCH_ADJUSTED_CONVENTION = (
    "C_min = C / (1 + B/B_crit(L)): the counted training FLOPs of each run (3 × forward, "
    "exact per architecture) divided by its batch penalty, B its batch in tokens and "
    "B_crit(L) the critical batch fitted to the runs' gradient noise scales at its final "
    "loss (Kaplan et al. 2020 eq. 5.4); tokens likewise E_min; each budget at its runs' "
    "geometric mean penalty"
)
FLOPS_CONVENTION = (
    "training FLOPs counted exactly per architecture at its sequence length (3 × forward, "
    "attention scores and values included), or the table's own C"
)


def fit_inputs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs a fit is made from: all but the validation runs (`moescale validate`), which
    test the fit and never feed it."""
    if "validation" not in runs:
        return runs
    return runs[~runs["validation"].fillna(False).astype(bool)]


def runs_hash(runs: pd.DataFrame) -> str:
    """A hash of the fit's inputs in a runs table (row and column order do not matter)."""
    runs = fit_inputs(runs)
    table = runs.sort_values("run_id") if "run_id" in runs else runs
    table = table[sorted(table.columns)].reset_index(drop=True)
    digest = hashlib.sha256(",".join(table.columns).encode())
    digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class FitReport:
    """Everything `moescale fit` found, ready for fit.json and for the report."""

    source: str
    target_flops: float
    options: FitOptions = field(default_factory=FitOptions)
    runs_hash: str = ""
    created: str = ""
    version: str = __version__
    conventions: dict = field(default_factory=dict)
    compute_law: ComputeLaw | None = None
    compute_law_time: ComputeLaw | None = None
    isoflop: IsoflopFit | None = None
    parametric: ParametricFit | None = None
    envelope: EnvelopeFit | None = None
    extrapolation: ExtrapolationCheck | None = None
    data_constrained: DataConstrainedFit | None = None
    repetition: dict = field(default_factory=dict)  # passes over the data, and what was done
    prediction: Prediction | None = None  # the headline
    predictions: dict[str, Prediction] = field(default_factory=dict)  # each method's own
    run_counts: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)  # the sweep's FLOPs: nominal grid and trained
    variants: dict[str, IsoflopFit] = field(default_factory=dict)  # each MoE variant's own
    moe: MoEDesignFit | None = None  # the design answers across variants
    tuning: TuningFit | None = None  # tuned points, LR and batch laws, untuned vs tuned
    lack_of_fit: LackOfFit | None = None  # Approach 3 against the isoFLOP curves
    critical_batch: CriticalBatchFit | None = None  # B_crit(L) from the runs' noise scales

    def to_dict(self) -> dict:
        def part(obj):
            return None if obj is None else obj.to_dict()

        return {
            "source": self.source,
            "created": self.created,
            "moescale_version": self.version,
            "options": self.options.to_dict(),
            "runs_hash": self.runs_hash,
            "target_flops": self.target_flops,
            "conventions": self.conventions,
            "prediction": {} if self.prediction is None else self.prediction.to_dict(),
            "predictions": {name: p.to_dict() for name, p in self.predictions.items()},
            "run_counts": self.run_counts,
            "cost": self.cost,
            "compute_law": part(self.compute_law),
            "compute_law_time": part(self.compute_law_time),
            "isoflop": part(self.isoflop),
            "parametric": part(self.parametric),
            "envelope": part(self.envelope),
            "extrapolation": part(self.extrapolation),
            "data_constrained": part(self.data_constrained),
            "repetition": self.repetition,
            "skipped": self.skipped,
            "variants": {name: fit.to_dict() for name, fit in self.variants.items()},
            "moe": part(self.moe),
            "tuning": part(self.tuning),
            "lack_of_fit": part(self.lack_of_fit),
            "critical_batch": part(self.critical_batch),
        }

    @classmethod
    def from_dict(cls, data: dict) -> FitReport:
        def part(kind, key):
            return None if data.get(key) is None else kind.from_dict(data[key])

        return cls(
            source=data["source"],
            target_flops=data["target_flops"],
            options=FitOptions.from_dict(data.get("options", {})),
            runs_hash=data.get("runs_hash", ""),
            created=data.get("created", ""),
            version=data.get("moescale_version", ""),
            conventions=data.get("conventions", {}),
            compute_law=part(ComputeLaw, "compute_law"),
            compute_law_time=part(ComputeLaw, "compute_law_time"),
            isoflop=part(IsoflopFit, "isoflop"),
            parametric=part(ParametricFit, "parametric"),
            envelope=part(EnvelopeFit, "envelope"),
            extrapolation=part(ExtrapolationCheck, "extrapolation"),
            data_constrained=part(DataConstrainedFit, "data_constrained"),
            repetition=data.get("repetition", {}),
            prediction=Prediction.from_dict(data["prediction"]) if data.get("prediction") else None,
            predictions={
                name: Prediction.from_dict(p) for name, p in (data.get("predictions") or {}).items()
            },
            run_counts=data.get("run_counts", {}),
            skipped=data.get("skipped", {}),
            cost=data.get("cost", {}),
            variants={k: IsoflopFit.from_dict(v) for k, v in (data.get("variants") or {}).items()},
            moe=part(MoEDesignFit, "moe"),
            tuning=part(TuningFit, "tuning"),
            lack_of_fit=part(LackOfFit, "lack_of_fit"),
            critical_batch=part(CriticalBatchFit, "critical_batch"),
        )

    @property
    def loss_unit(self) -> str:
        """The unit of every loss in the fit: nats/token, or bits/byte (`options.metric`)."""
        return METRICS[self.options.metric][1]

    @property
    def lead_method(self) -> str | None:
        """The headline's method (None when no law could predict)."""
        return None if self.prediction is None else self.prediction.method

    @property
    def budget_name(self) -> str:
        """What the fit's FLOPs are: the counted C, or C_min (`options.batch_adjusted`)."""
        return "C_min (batch-adjusted)" if self.options.batch_adjusted else "C"

    @property
    def law(self) -> ComputeLaw:
        """The compute law the predictions spend their budget under: the fitted one, else the
        default (a published table with no per-token FLOPs)."""
        return self.compute_law or DEFAULT_LAW

    def predict_at(self, flops: float) -> dict[str, Prediction]:
        """Every fitted method's prediction at `flops`, under the fit's compute law."""
        law = self.law
        fitted = {"parametric": self.parametric, "isoflop": self.isoflop}
        out = {
            m: method_prediction(m, f.predict(flops, law), f.interval_note, law)
            for m, f in fitted.items()
            if f is not None
        }
        lead = self.prediction
        if lead is not None and lead.method == "combined" and lead.weights:
            combined = combined_prediction(
                self.parametric, self.isoflop, lead.weights["parametric"], flops, law
            )
            out["combined"] = method_prediction("combined", combined, lead.interval_note, law)
        return out


@dataclass(frozen=True)
class Source:
    """What `moescale fit` reads: the runs, their loss curves (None when absent), where its
    fit.json goes by default, and a table's compute law where it derived D or C with one."""

    runs: pd.DataFrame
    curves: pd.DataFrame | None
    fit_path: Path
    compute_law: ComputeLaw | None = None


def load_source(source: str | Path, columns: dict[str, str | None]) -> Source:
    """A results folder, or a table file with its columns mapped to ours (`map_columns`)."""
    source = Path(source)
    if source.is_dir():
        folder = SweepFolder(source)
        return Source(folder.runs(), folder.curves(), folder.fit_path)
    table, law = map_columns(read_table(source), columns, source=str(source))
    return Source(table, None, source.with_name(source.name.split(".")[0] + ".fit.json"), law)


def _on_metric(runs: pd.DataFrame, metric: str, source: str) -> pd.DataFrame:
    """The runs with `final_loss` in the metric the laws are fitted on (bits per byte: each
    completed run's `final_bpb`, which every completed run must have)."""
    if metric == "loss":
        return runs
    column, _ = METRICS[metric]
    done = completed(runs)
    if column not in runs or not np.isfinite(done[column].to_numpy(float)).all() or done.empty:
        raise OptionError(
            f"{{metric}} {metric}: {source} has runs without {column} (trained before moescale "
            "recorded it, or on token files whose text is unknown)"
        )
    return runs.assign(final_loss=runs[column])


def _conventions(runs: pd.DataFrame, metric: str = "loss") -> dict:
    loss = "nats per token, held out" if metric == "loss" else "bits per byte of the held-out text"
    out = {"n": N_CONVENTION, "flops": FLOPS_CONVENTION, "loss": loss}
    if {"d_model", "vocab_size", "n_active"} <= set(runs):
        share = runs["d_model"] * runs["vocab_size"] / runs["n_active"]
        out["head_share_of_n"] = {"min": float(share.min()), "max": float(share.max())}
    return out


def sweep_cost(runs: pd.DataFrame) -> dict:
    """The FLOPs of the finished points as a grid of separate runs (nominal), and what was
    really trained for them (with WSD branches: each trunk once plus each cooldown)."""
    done = runs[runs["status"].isin(ENDED)] if "status" in runs else runs
    if "flops" not in done:
        return {}
    cost = {"nominal_flops": float(done["flops"].sum())}
    if "flops_trained" in done and done["flops_trained"].notna().all():
        cost["trained_flops"] = float(done["flops_trained"].sum())
        cost["note"] = (
            "trained_flops: WSD trunks counted once, plus each branch's cooldown"
            if branched(done)
            else "every point trained on its own"
        )
    return cost


def fit_all(
    runs: pd.DataFrame,
    curves: pd.DataFrame | None,
    source: str,
    options: FitOptions = FitOptions(),
    *,
    strict: bool = True,
    compute_law: ComputeLaw | None = None,
) -> FitReport:
    """Every law the data supports, each method's prediction at the target and the headline.
    With `strict`, a method asked for by name that cannot be fitted is an error, and so is
    "all" when neither the isoFLOP nor the parametric law could be fitted; otherwise what
    could not be fitted is recorded in `skipped`, with the reason, and the rest goes on.
    A sweep of MoE variants: every law above is the reference variant's (`options.variant`,
    by default the spec's first); each variant gets its own isoFLOP fit and the design
    answers across them (moe_design.py). `compute_law` is used as given instead of fitted:
    a published table whose D or C it derived (`load_source`)."""
    validations = len(runs) - len(fit_inputs(runs))
    runs = fit_inputs(runs)
    # of every variant's runs: what current_fit compares, and what the sweep cost
    inputs_hash, cost = runs_hash(runs), sweep_cost(runs)
    critical_batch, why_not = _fit_critical_batch(runs, curves, options)
    if options.batch_adjusted:  # on the runs' nats loss, before a metric replaces it
        runs = on_minimal_compute(runs, critical_batch)
    runs = _on_metric(runs, options.metric, source)
    _check_runs(runs, options, source)
    every_variant, variant = None, options.variant
    if has_variants(runs):
        every_variant, variant = runs, variant or reference_variant(runs)
        runs = runs[runs["variant"] == variant]
    statuses = (
        runs["status"].value_counts().to_dict()
        if "status" in runs
        else {RunStatus.COMPLETED.value: len(runs)}
    )
    done = completed(runs)
    if done.empty:
        also = f" ({validations} validation runs, which are never fitted)" if validations else ""
        raise UserError(f"{source}: no completed runs to fit{also}")
    budget_max = float(done["budget_flops"].max())
    report = FitReport(
        source=source,
        target_flops=options.target_flops or DEFAULT_TARGET_FACTOR * budget_max,
        options=options,
        runs_hash=inputs_hash,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        conventions=_conventions(done, options.metric),
        run_counts={k: int(v) for k, v in statuses.items()}
        | ({"validation (not fitted)": validations} if validations else {}),
        cost=cost,
        critical_batch=critical_batch,
    )
    if why_not:
        report.skipped["critical_batch"] = why_not
    if options.batch_adjusted:
        report.conventions["flops"] = BATCH_ADJUSTED_CONVENTION
    if compute_law is not None:
        report.compute_law = compute_law
    elif "flops_per_token" in done and done["n_active"].nunique() >= 2:
        report.compute_law = fit_compute_law(runs, cost="flops")
        if {"train_s", "peak_flops"} <= set(runs) and (done["train_s"].fillna(0) > 0).all():
            report.compute_law_time = fit_compute_law(runs, cost="time")
    runs = _account_for_repetition(runs, report, options.bootstrap)
    tuned_from = None
    if tuned_axes(done):  # every point at several hyperparameter values: its tuned loss
        tuned_from, runs = runs, tune_points(runs).assign(status=RunStatus.COMPLETED.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EdgeOptimumWarning)  # listed in `excluded` instead
        _fit_laws(runs, curves, report, strict)
        if every_variant is not None and options.method == "all":
            _fit_variants(every_variant, report)
        if tuned_from is not None and report.isoflop is not None:
            report.tuning = fit_tuning(
                tuned_from,
                runs,
                report.isoflop,
                options.bootstrap,
                lambda table, bootstrap: fit_isoflop(
                    table, bootstrap=bootstrap, **_iso_args(options)
                ),
            )
    if strict and options.method == "all" and not report.predictions:
        raise UserError(
            "no law could be fitted: "
            + "; ".join(f"{name}: {why}" for name, why in report.skipped.items())
        )
    _choose_headline(report, budget_max)
    return report


def _fit_critical_batch(
    runs: pd.DataFrame, curves: pd.DataFrame | None, options: FitOptions
) -> tuple[CriticalBatchFit | None, str]:
    """B_crit(L) from the completed fitted runs' logged noise scales, or None and why not (an
    error when the fit is asked to be batch-adjusted, which needs it). Curves without the
    noise scale (a published table, runs trained before moescale logged it) are no reason
    to note: there was nothing to fit."""
    done = completed(runs)
    if curves is None or "grad_noise_scale" not in curves or "run_id" not in done:
        why = "no curves with the gradient noise scale (runs trained before moescale logged it)"
        if not options.batch_adjusted:
            return None, ""
    else:
        try:
            # the runs' own curves and, for WSD branches, their trunks' (the plateau)
            ids = set(done["run_id"]) | set(done.get("trunk_id", pd.Series(dtype=str)).dropna())
            own = curves[curves["run_id"].isin(ids)]
            return fit_critical_batch(own, bootstrap=min(options.bootstrap, 200)), ""
        except UserError as err:
            why = str(err)
    if options.batch_adjusted:
        raise UserError(f"a batch-adjusted fit needs the critical batch: {why}")
    return None, why


def _check_runs(runs: pd.DataFrame, options: FitOptions, source: str) -> None:
    """What the options and the runs must agree on before anything is fitted."""
    target = options.target_flops
    if target is not None and "budget_flops" in runs and len(runs):
        smallest = float(runs["budget_flops"].min())
        if target < smallest:
            raise OptionError(
                f"{{target_flops}} {target:.3g} is below every budget of the sweep (smallest "
                f"{smallest:.3g}): the laws predict past their budgets, not before",
            )
    if "run_id" in runs and runs["run_id"].duplicated().any():
        twice = sorted(set(runs.loc[runs["run_id"].duplicated(), "run_id"].astype(str)))
        raise UserError(
            f"the runs table holds run_id {', '.join(twice[:3])}{' …' if len(twice) > 3 else ''} "
            "more than once: a duplicated row would count one run twice"
        )
    if options.variant is None:
        return
    if not has_variants(runs):
        raise OptionError(f"{{variant}}: {source} has no MoE variants")
    known = sorted(set(runs["variant"]))
    if options.variant not in known:
        raise OptionError(
            f"{{variant}}: no variant '{options.variant}' (known: {', '.join(known)})"
        )


def _iso_args(options: FitOptions) -> dict:
    """The per-budget choices every isoFLOP fit of one report shares."""
    return {"method": options.isoflop_method, "n_nearest": options.n_nearest}


def _fit_parametric(runs: pd.DataFrame, curves, report: FitReport) -> ParametricFit:
    if report.data_constrained is not None:  # under repetition: its own fresh-data law
        return report.data_constrained.base
    return fit_parametric(runs, bootstrap=report.options.bootstrap)


def _fit_isoflop(runs: pd.DataFrame, curves, report: FitReport) -> IsoflopFit:
    floor = loss_floor(report.parametric)
    options = report.options
    return fit_isoflop(runs, bootstrap=options.bootstrap, loss_floor=floor, **_iso_args(options))


def _fit_envelope(runs: pd.DataFrame, curves, report: FitReport) -> EnvelopeFit:
    if curves is None:
        raise UserError("no loss curves (curves.parquet) in this source")
    if branched(runs):  # Approach 1 from branch endpoints: every point annealed
        return fit_envelope(annealed_curves(runs), annealed=True)
    return fit_envelope(curves, runs)


# The laws a method name selects, fitted in this order (the isoFLOP fit's loss floor is the
# parametric fit's E), each stored as the report's attribute of that name; those in
# PREDICTING also predict the optimum at the target.
LAWS = {"parametric": _fit_parametric, "isoflop": _fit_isoflop, "envelope": _fit_envelope}
PREDICTING = ("parametric", "isoflop")
NO_FLOOR_NOTE = (
    "optimal loss from a power law in C with no floor (fewer than 4 budgets): it falls without "
    "limit and extrapolates low"
)


def _fit_laws(
    runs: pd.DataFrame, curves: pd.DataFrame | None, report: FitReport, strict: bool
) -> None:
    """Each law the method selects, its prediction at the target, and the checks made on the
    fitted ones (the hold-out check, Approach 3's lack of fit)."""
    asked, law = report.options.method, report.law
    for name, fit in LAWS.items():
        if asked not in (name, "all"):
            continue
        try:
            setattr(report, name, fit(runs, curves, report))
        except UserError as err:
            if strict and asked == name:
                raise
            report.skipped[name] = str(err)
            continue
        if name in PREDICTING:
            fitted = getattr(report, name)
            predicted = fitted.predict(report.target_flops, law)
            report.predictions[name] = method_prediction(name, predicted, fitted.interval_note, law)
    iso = report.isoflop
    if iso is not None and not isinstance(iso.loss_law, SaturatingLaw):
        report.predictions["isoflop"] = replace(
            report.predictions["isoflop"], loss_note=NO_FLOOR_NOTE
        )
    if not report.options.holdout_check:
        report.skipped["extrapolation"] = "the hold-out check was not asked for"
    elif iso is not None or report.parametric is not None:
        try:
            report.extrapolation = extrapolation_check(
                runs,
                compute_law=law,
                parametric=report.parametric,
                full=iso,
                **_iso_args(report.options),
            )
        except UserError as err:
            report.skipped["extrapolation"] = str(err)
    if iso is not None and report.parametric is not None:
        report.lack_of_fit = approach3_lack_of_fit(runs, report.parametric, iso, law)


def _choose_headline(report: FitReport, budget_max: float) -> None:
    """The combined prediction where Approach 3 keeps part of the headline (not fully
    identified, or refused by its lack-of-fit test), then the headline among the methods'
    predictions (prediction.py)."""
    law, target = report.law, report.target_flops
    width = allocation_width(None if report.parametric is None else report.parametric.samples)
    fit_test = report.lack_of_fit
    share = parametric_share(width, fit_test)
    if report.parametric is not None and report.isoflop is not None and 0 < share < 1:
        report.predictions["combined"] = method_prediction(
            "combined",
            combined_prediction(report.parametric, report.isoflop, share, target, law),
            "the two methods' bootstrap draws pooled in the shares of `weights`",
            law,
        )
    check = report.extrapolation
    largest = (
        float(report.isoflop.interior["budget"].max()) if report.isoflop is not None else budget_max
    )
    report.prediction = headline(
        report.predictions,
        largest_budget=largest,
        checked_factor={
            m: check.max_factor("isoflop" if m == "combined" else m) if check else None
            for m in report.predictions
        },
        allocation_interval_width=width,
        lack_of_fit=report.lack_of_fit,
    )
    if report.tuning is not None and report.prediction is not None:
        report.prediction = replace(report.prediction, tuned=report.tuning.predict(target))


def loss_floor(parametric: ParametricFit | None) -> LossFloor | None:
    """The irreducible loss E of the parametric fit, with its bootstrap draws: the floor the
    isoFLOP optimal-loss law levels off at (a power law in C alone falls without limit)."""
    if parametric is None:
        return None
    draws = None if parametric.samples is None else np.exp(parametric.samples[:, 2])
    return LossFloor(float(parametric.E), draws)


def _fit_variants(runs: pd.DataFrame, report: FitReport) -> None:
    """Each variant's own isoFLOP fit, then the design answers across the variants."""
    done = completed(runs)
    if tuned_axes(done):
        done = tune_points(done)  # each (budget, size, variant, seed) at its best values
    bootstrap = report.options.bootstrap
    for name, part in done.groupby("variant", sort=False):
        try:
            report.variants[str(name)] = fit_isoflop(
                part, bootstrap=bootstrap, **_iso_args(report.options)
            )
        except UserError as err:
            report.skipped[f"isoflop ({name})"] = str(err)
    try:
        report.moe = fit_moe_design(
            done, report.variants, report.target_flops, report.law, bootstrap
        )
    except UserError as err:
        report.skipped["moe"] = str(err)


def _account_for_repetition(runs: pd.DataFrame, report: FitReport, bootstrap: int) -> pd.DataFrame:
    """Where runs read their data more than REPEAT_THRESHOLD times, the laws of fresh data
    would be biased (repeated tokens are worth less): fit the data-constrained law and give
    the isoFLOP and parametric fits each repeated run's fresh-data equivalent loss (its loss
    less the law's repetition penalty). Where that law cannot be fitted, leave the runs past
    the threshold out instead. Either way report.repetition says what was done and why."""
    if "unique_tokens" not in runs:
        return runs
    done = (
        (runs["status"] == RunStatus.COMPLETED) if "status" in runs else pd.Series(True, runs.index)
    )
    known = done & runs["unique_tokens"].notna() & (runs["unique_tokens"] > 0)
    if not known.any():
        return runs
    passes = pd.Series(np.nan, index=runs.index)
    passes[known] = epochs(runs.loc[known, "tokens"], runs.loc[known, "unique_tokens"])
    over = known & (passes > REPEAT_THRESHOLD)
    ids = runs["run_id"] if "run_id" in runs else pd.Series(runs.index.astype(str), runs.index)
    report.repetition = {
        "threshold_epochs": REPEAT_THRESHOLD,
        "max_epochs": float(passes[known].max()),
        "runs_over_threshold": [
            {"run_id": str(ids[i]), "epochs": float(passes[i])} for i in runs.index[over]
        ],
    }
    if not over.any():
        report.repetition["action"] = (
            f"none: every run read its data at most {REPEAT_THRESHOLD:g} times, where repeated "
            "tokens are worth about as much as fresh ones (Muennighoff et al. 2023)"
        )
        return runs
    try:
        fit = fit_data_constrained(runs[known], bootstrap=min(bootstrap, 100))
    except UserError as err:
        report.skipped["data_constrained"] = str(err)
        report.repetition["action"] = (
            f"excluded: the {int(over.sum())} run(s) past {REPEAT_THRESHOLD:g} passes are left out "
            f"of every fit, since the data-constrained law could not be fitted ({err})"
        )
        return runs[~over]
    report.data_constrained = replace(
        fit,
        base=replace(
            fit.base,
            excluded=fit.base.excluded
            + (
                "fitted as the fresh-data law of the data-constrained fit: on the runs that "
                "read their data at most once",
            ),
        ),
    )
    penalty = pd.Series(0.0, index=runs.index)
    penalty[known] = fit.repetition_penalty(
        runs.loc[known, "n_active"], runs.loc[known, "tokens"], runs.loc[known, "unique_tokens"]
    )
    report.repetition["action"] = (
        f"corrected: every repeated run's loss is replaced by its fresh-data equivalent under the "
        f"data-constrained law (R*_D = {fit.r_star_d:.3g}), a penalty of up to "
        f"{penalty.max():.3g} nats/token, before the isoFLOP fit; the parametric law is the "
        "data-constrained fit's fresh-data law"
    )
    corrected = runs.copy()
    corrected["final_loss"] = runs["final_loss"] - penalty
    return corrected


def write_fit_json(report: FitReport, path: str | Path) -> None:
    """fit.json, atomically."""
    atomic_write_json(path, report.to_dict())


def _release(version: str) -> tuple[int, ...]:
    """(major, minor, patch) of a version string, for ordering ('0.1.0.dev3' → (0, 1, 0))."""
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def load_fit(path: str | Path) -> FitReport:
    """A fit.json read back as the typed objects `fit_all` returns (no refitting), so that
    `load_fit(p).parametric.predict(3e24, law)` works in a notebook."""
    data = read_json(path)
    written = str(data.get("moescale_version", "")) if isinstance(data, dict) else ""
    if written and _release(written) > _release(__version__):
        raise UserError(
            f"{path}: written by moescale {written}, newer than this one ({__version__}), "
            "whose fields may mean other things here"
        )
    prediction = data.get("prediction") if isinstance(data, dict) else None
    if prediction and not {"method", "n_opt"} <= set(prediction):
        raise UserError(f"{path}: not a fit.json this moescale reads (its prediction lacks n_opt)")
    try:
        return FitReport.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{path}: not a moescale fit.json ({type(err).__name__}: {err})") from None


def current_fit(
    results_dir: Path,
    runs: pd.DataFrame,
    curves: pd.DataFrame | None,
    target_flops: float | None = None,
    bootstrap: int | None = None,
    write: bool = True,
) -> tuple[FitReport, str]:
    """A results folder's fit.json when it was made from exactly these runs with every
    method (and the target and bootstrap asked for, if asked), else a new fit — with
    fit.json's own options (per-budget method, bootstrap, variant) unless asked otherwise —
    written over it (unless `write` is off: a reader that must leave the folder alone); and a
    sentence saying which."""
    path = SweepFolder(results_dir).fit_path
    existing, why = None, f"there was no {path.name}"
    if path.exists():
        try:
            existing = load_fit(path)
        except UserError as err:  # an older or damaged fit.json: refit rather than fail
            why = str(err)
    if existing is not None:
        options = existing.options
        if existing.runs_hash != runs_hash(runs):
            why = f"{path.name} had been made from other runs"
        elif (
            options.method != "all"
            or options.metric != "loss"  # what reads fit.json (report, compare) shows nats
            or options.batch_adjusted  # ... on the counted budget
            or (target_flops is not None and options.target_flops != float(target_flops))
            or (bootstrap is not None and options.bootstrap != bootstrap)
        ):
            why = f"{path.name} had been made with other options"
        else:
            return (
                existing,
                f"Numbers from {path.name} as written ({existing.created}), which matches these runs.",
            )
    # the refit keeps fit.json's own choices (per-budget method, bootstrap, variant)
    kept = existing.options if existing is not None else FitOptions()
    options = replace(
        kept,
        method="all",
        metric="loss",
        batch_adjusted=False,
        target_flops=target_flops,
        bootstrap=kept.bootstrap if bootstrap is None else bootstrap,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EdgeOptimumWarning)
        fit = fit_all(runs, curves, str(results_dir), options, strict=False)
    if not write:
        return fit, f"Refitted ({why}); not written."
    write_fit_json(fit, path)
    return fit, f"Refitted ({why}); written to {path.name}."
