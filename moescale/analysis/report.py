"""`moescale report`: one self-contained HTML file (images embedded, readable offline) and a
Markdown twin, from a results folder — fitted first if `moescale fit` has not run yet."""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import moescale
from moescale.analysis import design_plots, plots
from moescale.analysis.style import inline_svg, save_figure
from moescale.analysis.summary import multipliers_frame
from moescale.analysis.words import (
    critical_batch_text,
    excluded_lines,
    headline_reasons,
    loss_law_text,
    parametric_text,
    per_budget_how,
    predictions_frame,
    recipe_lines,
)
from moescale.errors import UserError
from moescale.fitting.pipeline import FitReport, current_fit, fit_inputs, sweep_cost
from moescale.fitting.prediction import headline_line
from moescale.fitting.studies.next_runs import NextRuns, TargetRun, runs_text
from moescale.results import (
    ENDED,
    RunStatus,
    SweepFolder,
    atomic_write_bytes,
    completed,
    load_runs,
    one_output,
    read_json,
    read_parquet,
)

STEP_LIMITED_RATIO = 1.5  # optimal runs whose step counts all lie within this factor


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: pd.DataFrame | None = None
    # (file stem, figure, caption)
    figures: list[tuple[str, Figure, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def step_limited_warning(runs: pd.DataFrame, fit: FitReport) -> str | None:
    """Say so when the optima look step-limited rather than capacity-limited: the run nearest
    each budget's optimum took about the same number of steps at every budget."""
    if fit.isoflop is None or "steps" not in runs or not len(fit.isoflop.points):
        return None
    points = fit.isoflop.points.merge(runs[["run_id", "steps"]], on="run_id")
    steps = []
    for row in fit.isoflop.interior.itertuples():
        mine = points[points["budget"] == row.budget]
        if len(mine):
            nearest = mine.iloc[int(np.argmin(np.abs(np.log(mine["n_active"] / row.n_opt))))]
            steps.append(int(nearest["steps"]))
    if len(steps) >= 3 and max(steps) / min(steps) < STEP_LIMITED_RATIO:
        return (
            f"The optimal runs of every budget took about the same number of steps ({min(steps):,}–{max(steps):,}): "
            "the optima look step-limited rather than capacity-limited. Such an exponent depends on the batch size "
            "and the schedule, and is no scaling law; use smaller batches for smaller budgets or larger budgets."
        )
    return None


def _headline_section(fit: FitReport, fit_note: str) -> Section:
    """The report's first section: the headline in words, its agreement, its reach, and
    every method's prediction side by side."""
    section = Section(f"Headline: the optimum at C = {fit.target_flops:.3g} FLOPs")
    p = fit.prediction
    section.paragraphs.append(headline_line(p, fit.loss_unit, fit.budget_name))
    if p is not None:
        section.paragraphs.extend(headline_reasons(p))
        section.warnings.extend(p.warnings)
    section.paragraphs.append(
        f"N counts {fit.conventions.get('n', 'activated parameters')}; C counts "
        f"{fit.conventions.get('flops', 'training FLOPs')}."
        + (
            f" The output head is {fit.conventions['head_share_of_n']['min']:.0%}–"
            f"{fit.conventions['head_share_of_n']['max']:.0%} of N at these sizes."
            if "head_share_of_n" in fit.conventions
            else ""
        )
    )
    section.paragraphs.append(fit_note)
    frame = predictions_frame(fit)
    if len(frame):
        table = pd.DataFrame(
            {"method": frame["method"] + np.where(frame["headline"], " (headline)", "")}
        )
        for key, name in (("n_opt", "N_opt"), ("d_opt", "D_opt (tokens)"), ("loss_opt", "loss")):
            low, high = frame[f"{key}_low"], frame[f"{key}_high"]
            table[name] = frame[key]
            table[f"{name} 95%"] = [
                "" if a != a else f"{a:.4g} – {b:.4g}" for a, b in zip(low, high, strict=True)
            ]
        table["interval from"] = [p.interval_note for p in fit.predictions.values()]
        section.table = table
    return section


def _sweep_section(runs: pd.DataFrame) -> Section:
    section = Section("The sweep")
    counts = runs["status"].value_counts()
    wall = runs["wall_s"].sum(skipna=True)
    section.paragraphs.append(
        f"{len(runs)} planned runs over {runs['budget_flops'].nunique()} budgets: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f". Total wall time of the finished runs: {wall / 60:.1f} min."
    )
    cost = sweep_cost(runs)
    if "trained_flops" in cost and cost["trained_flops"] < cost["nominal_flops"] * 0.999:
        section.paragraphs.append(
            f"Cost: {cost['trained_flops']:.3g} FLOPs really trained for the finished points, "
            f"against {cost['nominal_flops']:.3g} for the same grid run separately "
            f"({cost['nominal_flops'] / cost['trained_flops']:.2f}×): {cost['note']}."
        )
    missing = runs[~runs["status"].isin(ENDED)]
    if len(missing):
        section.warnings.append(
            f"The sweep is not finished: {len(missing)} run(s) still planned or running; the fits below use the completed runs only."
        )
    columns = [
        "run_id",
        "status",
        "budget_flops",
        "n_active",
        "n_total",
        "tokens",
        "steps",
        "final_loss",
        "epochs",
        "validation",
        "trunk_id",
        "branch_step",
        "wall_s",
    ]
    if "trunk_id" not in runs or not runs["trunk_id"].fillna("").astype(bool).any():
        columns = [c for c in columns if c not in ("trunk_id", "branch_step")]
    table = runs[[c for c in columns if c in runs]].sort_values(["budget_flops", "n_active"])
    section.table = table
    return section


def _tuning_section(fit: FitReport, runs: pd.DataFrame) -> Section:
    """Tuned hyperparameters: the best values per point, their laws, untuned against tuned."""
    tuning = fit.tuning
    section = Section("Tuned hyperparameters")
    section.paragraphs.append(
        f"Tuned: {', '.join(tuning.axes)}. {tuning.how}. Every law above was fitted on the tuned "
        "points (one per budget and size), never on the grid's runs as if they were repeats."
    )
    for name, law in tuning.laws.items():
        interval = law.exponent_interval()
        section.paragraphs.append(
            f"{name}_opt(C) = {law.coef:.4g}·C^{law.exponent:.4f}"
            + (f" (exponent 95% interval {interval[0]:.3f}–{interval[1]:.3f})" if interval else "")
            + f" at the compute-optimal size, × (N/N_opt)^{law.size_exponent:.3f} off it; along the "
            f"optimal path {name}_opt = {law.along_n['coef']:.4g}·N^{law.along_n['exponent']:.4f}. "
            f"At the target C = {fit.target_flops:.3g}: {law(fit.target_flops):.4g}. Intervals: {law.interval_note}."
        )
    untuned, tuned = tuning.untuned, tuning.tuned
    if "n_exponent" in untuned:
        section.paragraphs.append(
            f"N_opt exponent with the recipe's own values {untuned['n_exponent']:.4f}, tuned "
            f"{tuned['n_exponent']:.4f}: tuning moved it by {tuned['n_exponent'] - untuned['n_exponent']:+.4f}."
        )
    else:
        section.warnings.append(f"No untuned fit to compare: {untuned.get('reason')}")
    section.warnings.extend(f"{k}: {v}" for k, v in tuning.skipped.items())
    columns = [c for c in ("budget_flops", "n_active", "lr_opt", "batch_tokens_opt",
                           "routed_lr_scale_opt", "final_loss", "untuned_loss", "at_edge", "n_tried")
               if c in tuning.points]  # fmt: skip
    section.table = tuning.points[columns]
    section.figures.append(
        ("lr_sweeps", design_plots.lr_sweeps(tuning, runs),
         "Final held-out loss against the peak learning rate at each budget (counted training "
         "FLOPs), one line per activated size N; the star is each point's interpolated best LR.")
    )  # fmt: skip
    section.figures.append(
        ("tuned_laws", design_plots.tuned_laws(tuning, fit.target_flops),
         "Left: each point's best value against C with the law at the compute-optimal size and "
         "its 95% band to the target (dotted). Right: isoFLOP optima with the recipe's own LR "
         "and tuned.")
    )  # fmt: skip
    return section


def _moe_section(fit: FitReport, runs: pd.DataFrame, curves: pd.DataFrame | None) -> Section:
    """The MoE design answers: each variant's optima, the joint law, the multiplier, best E/G."""
    moe = fit.moe
    section = Section("MoE design: experts, granularity and the multiplier over dense")
    section.paragraphs.append(
        f"The laws above are variant '{fit.options.variant}'s. E is the expansion (routed "
        "experts ÷ top-k; dense 1) and G the granularity; N counts activated parameters."
    )
    if moe.law is not None:
        law = moe.law.to_dict()
        params = ", ".join(f"{k} = {v:.4g}" for k, v in law["params"].items())
        section.paragraphs.append(
            f"Joint law ({law['form']}): L = {law['law']}; {params}. Form: {moe.selection.get('how')}. "
            f"Intervals: {law['interval_note']}."
        )
    section.paragraphs.extend(f"{line}." for line in recipe_lines(moe))
    for best in (moe.optimal_e, moe.optimal_g):
        if best:
            interval = best["interval"]
            section.paragraphs.append(
                f"Best {best['axis']} at C = {best['flops']:.3g}: {best['value']:.3g}"
                + (f" (95% {interval[0]:.3g}–{interval[1]:.3g})" if interval else "")
                + f" over the swept {best['range'][0]:g}–{best['range'][1]:g}. {best['note']}"
            )
    section.warnings.extend(moe.notes)
    section.table = multipliers_frame(fit)
    section.figures.append(
        ("variant_isoflops", design_plots.variant_isoflops(fit.variants, runs),
         "Final held-out loss against activated parameters N at each budget (counted training "
         "FLOPs), every variant's runs and per-budget fit overlaid.")
    )  # fmt: skip
    if moe.multipliers and moe.law is not None:
        section.figures.append(
            ("multiplier", design_plots.multiplier(moe, fit.compute_law),
             "Dense FLOPs that reach each variant's optimal loss ÷ the variant's FLOPs, against "
             "counted training FLOPs: the joint law with its 95% band, and observed at the sweep's budgets. "
             "A recipe variant (dashed) is measured over the variant of its shape; its value at the "
             "target (diamond) is the sweep's geometric mean.")
        )  # fmt: skip
    if moe.law is not None:
        section.figures.append(
            ("design_optimum", design_plots.design_optimum(moe, fit.variants, fit.compute_law),
             "The optimal loss at each budget against the expansion E and the granularity G.")
        )  # fmt: skip
    if curves is not None and len(curves) and "max_expert_load" in curves:
        section.figures.append(
            ("variant_routing", design_plots.variant_routing(runs, curves),
             "Routing health of every MoE variant over the second half of training.")
        )  # fmt: skip
    return section


@dataclass(frozen=True)
class ReportInputs:
    """What every section is drawn from: the runs (validation runs included, shown but never
    fitted), the fit, and the runs the laws were fitted on."""

    runs: pd.DataFrame
    curves: pd.DataFrame | None
    fit: FitReport
    fitted: pd.DataFrame  # the completed sweep runs of the reference variant, or tuned points
    done: pd.DataFrame  # the completed sweep runs of the reference variant


def build_sections(
    runs: pd.DataFrame,
    curves: pd.DataFrame | None,
    fit: FitReport,
    routing: tuple[str, pd.DataFrame] | None,
    hunyuan_reference: bool,
    fit_note: str = "",
    validations: list[dict] | None = None,
    next_steps: tuple[TargetRun | None, NextRuns | None, Path] | None = None,
) -> list[Section]:
    """The report's sections in order, each from its own function."""
    swept = fit_inputs(runs)  # validation runs are shown, never fitted or drawn as the sweep
    done = completed(swept)
    if fit.options.variant:  # the laws below are the reference variant's alone
        done = done[done["variant"] == fit.options.variant]
    # what the laws were fitted on: the runs, or with a tuned axis each point at its best
    fitted = done if fit.tuning is None else fit.tuning.points
    inputs = ReportInputs(runs, curves, fit, fitted, done)
    sections = [
        _headline_section(fit, fit_note),
        _sweep_section(runs),
        _compute_law_section(inputs),
        _isoflop_section(inputs, hunyuan_reference),
        _hold_out_section(fit),
        _parametric_section(inputs),
    ]
    if fit.tuning is not None:
        sections.append(_tuning_section(fit, swept))
    if fit.moe is not None:
        sections.append(_moe_section(fit, swept, curves))
    if curves is not None and len(curves):
        sections.append(_curves_section(inputs, routing))
    scored = [r for r in (validations or []) if r.get("scores")]
    if scored:
        sections.append(_validation_section(scored, runs))
    if next_steps is not None:
        sections.append(_next_steps_section(fit, *next_steps))
    sections.append(_diagnostics_section(runs, fit))
    return sections


def _compute_law_section(inputs: ReportInputs) -> Section:
    fit = inputs.fit
    law = Section("The compute law")
    if fit.compute_law is None:
        law.paragraphs.append("Not fitted: fewer than two sizes with exact FLOP counts.")
        return law
    law.paragraphs.append(fit.compute_law.summary())
    if fit.compute_law_time is not None:
        t = fit.compute_law_time
        law.paragraphs.append(
            f"Measured by time (training seconds per token × the device's measured matmul peak): "
            f"a = {t.a:.2f}, b = {t.b:.3g} (R² {t.r2:.3f}). The gap from the counted a is the price of "
            "routing, small matrices and everything that is not a matmul at this scale."
        )
    law.figures.append(
        (
            "compute_law",
            plots.compute_law(inputs.done, fit.compute_law, fit.compute_law_time),
            "Training FLOPs per token (forward and backward, attention over the sequence "
            "included) against activated parameters N (embeddings excluded).",
        )
    )
    return law


def _isoflop_section(inputs: ReportInputs, hunyuan_reference: bool) -> Section:
    fit = inputs.fit
    iso = Section("isoFLOP fits (Approach 2)")
    if fit.isoflop is None:
        iso.warnings.append(fit.skipped.get("isoflop", "not fitted"))
        return iso
    f = fit.isoflop
    interval = f.n_law.exponent_interval
    iso.paragraphs.append(
        f"Per budget: {per_budget_how(f)} in log N; then N_opt = {f.n_coef:.4g}·C^{f.n_exponent:.4f}"
        + (f" (exponent 95% interval {interval[0]:.3f}–{interval[1]:.3f})" if interval else "")
        + f". Optimal loss: {loss_law_text(f.loss_law)}. Intervals: {f.interval_note}."
    )
    iso.table = f.budgets[["budget", "n_runs", "n_opt", "d_opt", "loss_opt", "at_edge", "reason"]]
    iso.figures.append(
        (
            "isoflop",
            plots.isoflop_curves(f, inputs.runs),
            "Final held-out loss against activated parameters N at each training budget C "
            "(counted training FLOPs); error bars: standard deviation over seeds.",
        )
    )
    iso.figures.append(
        (
            "optimal_scaling",
            plots.optimal_scaling(f, fit.target_flops, hunyuan_reference, fit.predictions),
            "Compute-optimal N (activated) and D (tokens) against counted training FLOPs; "
            "the right-hand panels extrapolate to the target, each method with its 95% interval.",
        )
    )
    return iso


def _hold_out_section(fit: FitReport) -> Section:
    check = Section("The hold-out check")
    if fit.extrapolation is None or not fit.extrapolation.rows:
        check.warnings.append(f"Not run: {fit.skipped.get('extrapolation', 'no law was fitted')}")
        return check
    check.paragraphs.append(
        "The largest 1, 2 and 3 budgets left out in turn, each method fitted on the budgets "
        "below and asked for the held-out optima; 'factor' is how far past the largest "
        "budget fitted each prediction reached."
    )
    columns = ["method", "held_out", "budget", "factor", "n_opt_fitted", "n_opt_predicted",
               "n_opt_rel_error", "loss_rel_error"]  # fmt: skip
    check.table = fit.extrapolation.table()[columns]
    return check


def _parametric_section(inputs: ReportInputs) -> Section:
    fit = inputs.fit
    para = Section("The parametric fit")
    if fit.parametric is None:
        para.warnings.append(f"Not fitted: {fit.skipped.get('parametric', 'not asked for')}")
        return para
    p = fit.parametric
    para.paragraphs.append(parametric_text(p) + ".")
    para.paragraphs.append(f"Intervals: {p.interval_note}.")
    para.figures.append(
        (
            "parametric",
            plots.parametric(p, inputs.fitted, compute_law=fit.compute_law),
            "The fitted L(N, D) (N activated parameters, D training tokens) with the runs "
            "it was fitted on; residuals against counted training FLOPs.",
        )
    )
    return para


def _curves_section(inputs: ReportInputs, routing: tuple[str, pd.DataFrame] | None) -> Section:
    fit, curves, runs = inputs.fit, inputs.curves, inputs.runs
    section = Section("Loss curves and schedules")
    section.figures.append(
        (
            "loss_curves",
            plots.loss_curves(curves, runs, fit.envelope),
            "Loss against the training FLOPs spent so far; the point at each curve's end names its run.",
        )
    )
    section.figures.append(
        ("lr_schedules", plots.lr_schedules(curves, runs), "The learning rate of every run.")
    )
    if fit.envelope is not None:
        section.paragraphs.append(
            f"Approach 1 (the envelope): N ∝ C^{fit.envelope.n_exponent:.3f} — {fit.envelope.note}."
        )
    spread = _last_bias_spread(curves)
    if spread is not None:
        section.paragraphs.append(
            "Auxiliary-loss-free balancing (balance: bias): the selection biases of the widest "
            f"layer spread over {spread[0]:.3g}–{spread[1]:.3g} at the runs' last logged step "
            "(max − min; `bias_spread` in curves.parquet) — the push the balancing needs."
        )
    if fit.critical_batch is not None:
        section.figures.append(
            (
                "critical_batch",
                plots.critical_batch(curves, runs, fit.critical_batch),
                "The gradient noise scale B_noise = tr(Σ)/|G|² of every run as its loss fell "
                "(training loss, averaged over 3 logged points; points past step 60), and "
                "B_crit(L) fitted to them with its 95% band (runs resampled). A run whose "
                "batch (dashed) lies above the curve spends compute a smaller batch would not.",
            )
        )
        section.paragraphs.append(critical_batch_text(fit.critical_batch) + ".")
    if routing is not None:
        section.figures.append(
            (
                "routing",
                plots.routing_health(routing[1], routing[0], runs, curves),
                "Expert load as a multiple of a perfectly balanced load (1 = balanced).",
            )
        )
    return section


def _last_bias_spread(curves: pd.DataFrame) -> tuple[float, float] | None:
    """The range over runs of each one's last logged bias spread (None: no run balances by bias)."""
    if "bias_spread" not in curves or not curves["bias_spread"].notna().any():
        return None
    last = curves.dropna(subset=["bias_spread"]).groupby("run_id")["bias_spread"].last()
    return float(last.min()), float(last.max())


def _validation_section(validations: list[dict], runs: pd.DataFrame) -> Section:
    """Every scored validation (`moescale validate`): each method's prediction against the runs."""
    check = Section("Validation past the sweep")
    check.paragraphs.append(
        "Runs trained by `moescale validate` at budgets past the sweep (never part of the "
        "fit), each method's extrapolated prediction scored against them; regret is the "
        "loss the predicted N_opt really reached above the realised optimum."
    )
    rows = []
    for record in validations:
        for score in record["scores"]:
            check.paragraphs.append(f"At C = {record['budget']:.3g} FLOPs — {score['words']}.")
            rows.append(
                {
                    "budget": record["budget"],
                    "method": score["method"],
                    "N_opt predicted": score["n_opt_predicted"],
                    "N_opt realised": score["n_opt_realised"],
                    "inside interval": score["n_opt_inside"],
                    "loss predicted": score["loss_predicted"],
                    "loss realised": score["loss_realised"],
                    "regret (nats)": score["regret"],
                    "compute to make up": score["regret_compute_factor"],
                }
            )
    check.table = pd.DataFrame(rows)
    check.figures.append(
        (
            "validation",
            plots.validation(validations[-1], runs),
            "The runs at the validation budget against each method's prediction, made "
            "before they were trained.",
        )
    )
    return check


def _diagnostics_section(runs: pd.DataFrame, fit: FitReport) -> Section:
    """Failed and diverged runs, what the fits left out, repeated data, step-limited optima."""
    diagnostics = Section("Diagnostics")
    for status in (RunStatus.FAILED, RunStatus.DIVERGED):
        for row in runs[runs["status"] == status].itertuples():
            diagnostics.warnings.append(
                f"run {row.run_id} (budget {row.budget_flops:.3g}, N {row.n_active:,}) {status}: {row.error or 'no reason recorded'}"
            )
    diagnostics.warnings.extend(excluded_lines(fit))
    over = fit.repetition.get("runs_over_threshold", [])
    if over:
        diagnostics.warnings.append(
            f"{len(over)} run(s) read their training data more than "
            f"{fit.repetition['threshold_epochs']:g} times: "
            + ", ".join(f"{r['run_id']} ({r['epochs']:.1f} passes)" for r in over)
            + f". What the fits did: {fit.repetition['action']}."
        )
    limited = step_limited_warning(runs, fit)
    if limited:
        diagnostics.warnings.append(limited)
    if not diagnostics.warnings:
        diagnostics.paragraphs.append(
            "Nothing to report: every run completed and every budget has an interior optimum."
        )
    return diagnostics


def _next_steps_section(
    fit: FitReport, target: TargetRun | None, next_runs: NextRuns | None, results_dir: Path
) -> Section:
    """The decisions the fit leads to: the run to train at the target (`moescale recommend`)
    and the runs that would narrow its interval most (`moescale suggest`, when it has run on
    these runs)."""
    section = Section("Next steps")
    if target is not None:
        interval = target.n_opt_interval
        section.paragraphs.append(
            f"The run to train at C = {target.budget_flops:.3g} FLOPs (`moescale recommend "
            f"{results_dir} --budget {target.budget_flops:.3g} --out run.yaml` writes it): "
            f"n_active {target.n_active:,} ({target.n_total:,} in total), "
            f"{target.tokens:.4g} tokens ({target.flops:.4g} FLOPs); peak LR {target.lr:.3g}, "
            f"from {target.lr_source}; batch {target.batch_tokens:,} tokens, from "
            f"{target.batch_source}; the law expects a loss of {target.loss:.4f} nats/token."
            + (
                ""
                if interval is None or math.isnan(target.regret_low)
                else f" Training the interval's low end ({interval[0]:.3g}) gives up "
                f"{target.regret_low:.4f} nats if the optimum is at its high end, the high end "
                f"({interval[1]:.3g}) {target.regret_high:.4f} nats if it is at the low end."
            )
        )
    if next_runs is None:
        section.paragraphs.append(
            f"`moescale suggest {results_dir} --runs K` finds the K runs that would narrow "
            "the headline's interval most, within a FLOPs cap, and writes them as a sweep."
        )
        return section
    if next_runs.runs_hash != fit.runs_hash:
        section.warnings.append(
            "next_runs.json was suggested from other runs than this fit's (runs were added "
            "since): run `moescale suggest` again"
        )
        return section
    chosen = next_runs.chosen
    section.paragraphs.append(
        f"The {len(chosen.points)} runs that most narrow the interval of N_opt at "
        f"{next_runs.target_flops:.3g} FLOPs (`moescale suggest`, {chosen.flops:.3g} FLOPs "
        f"of a {next_runs.cap_flops:.3g} cap): ×{next_runs.width_now:.2f} wide now (hi/lo), "
        f"×{chosen.width:.2f} expected after them ({chosen.interval[0]:.3g}–"
        f"{chosen.interval[1]:.3g}); chosen: {next_runs.chosen_because}. Each design below was "
        f"refitted with the whole pipeline on {next_runs.simulations} outcomes simulated from "
        f"the parametric law's bootstrap draws; {next_runs.law_error}."
    )
    section.table = pd.DataFrame(
        {
            "design": [d.name + (" (chosen)" if d is chosen else "") for d in next_runs.designs],
            "runs (budget: n_active)": [runs_text(d.points) for d in next_runs.designs],
            "FLOPs": [d.flops for d in next_runs.designs],
            "expected ×": [d.width for d in next_runs.designs],
            "outcomes' range ×": [
                "{:.2f} – {:.2f}".format(*d.width_range) for d in next_runs.designs
            ],
            "expected interval": [
                f"{d.interval[0]:.3g} – {d.interval[1]:.3g}" for d in next_runs.designs
            ],
        }
    )
    return section


def _cell(value, markdown: bool = False) -> str:
    """One table cell as text: floats to 4 significant digits, integers with separators."""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return "" if np.isnan(value) else f"{value:.4g}"
    if isinstance(value, int | np.integer) and not markdown:
        return f"{value:,}"
    text = "" if value is None else str(value)
    return text.replace("|", "\\|") if markdown else text


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("moescale.analysis", "templates"),
    autoescape=jinja2.select_autoescape(["html.j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)


def _markdown_text(value) -> str:
    """Every value report.md shows, with <, > and & as HTML entities: Markdown passes raw
    HTML through, so a run or sweep name holding a <script> would run wherever the file is
    rendered (the HTML page escapes the same values by autoescape)."""
    return html.escape("" if value is None else str(value), quote=False)


_MARKDOWN_TEMPLATES = _TEMPLATES.overlay(finalize=_markdown_text)


def write_html(results_dir: Path, sections: list[Section], title: str) -> Path:
    """report/index.html — self-contained: each figure inline as SVG with its text as text and
    hover labels naming runs — and report/report.md beside each figure's PDF, SVG and PNG."""
    with one_output():  # a failed write leaves no half-written report
        return _write_pages(results_dir, sections, title)


def _write_pages(results_dir: Path, sections: list[Section], title: str) -> Path:
    """The files of `write_html`, each written atomically."""
    folder = results_dir / "report"
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pages = {"html": [], "md": []}
    for section in sections:
        figures = []
        for stem, fig, caption in section.figures:
            svg = save_figure(fig, folder, stem)["svg"]
            figures.append({"stem": stem, "caption": caption, "svg": inline_svg(fig, stem, svg)})
            plt.close(fig)
        table = section.table if section.table is not None and len(section.table) else None
        for kind, markdown in (("html", False), ("md", True)):
            pages[kind].append(
                {
                    "title": section.title,
                    "paragraphs": section.paragraphs,
                    "warnings": section.warnings,
                    "columns": [] if table is None else [str(c) for c in table.columns],
                    # long words (notes, reasons) wrap; numbers and ids stay on one line
                    "wrap": []
                    if table is None
                    else [
                        not pd.api.types.is_numeric_dtype(table[c])
                        and table[c].astype(str).str.len().max() > 30
                        for c in table.columns
                    ],
                    "rows": []
                    if table is None
                    else [
                        [_cell(v, markdown) for v in row] for row in table.itertuples(index=False)
                    ],
                    "figures": figures,
                }
            )
    context = {
        "title": title,
        "created": created,
        "source": str(results_dir),
        "version": moescale.__version__,
    }
    for kind, name in (("html", "index.html"), ("md", "report.md")):
        templates = _MARKDOWN_TEMPLATES if kind == "md" else _TEMPLATES
        text = templates.get_template(f"report.{kind}.j2").render(sections=pages[kind], **context)
        atomic_write_bytes(folder / name, text.encode())
    return folder / "index.html"


def _routing_of_a_run(results_dir: Path, runs: pd.DataFrame) -> tuple[str, pd.DataFrame] | None:
    """The routing log of the completed run nearest the middle of the sizes of the largest budget."""
    swept = fit_inputs(runs)
    done = completed(swept)
    if done.empty:
        return None
    largest = done[done["budget_flops"] == done["budget_flops"].max()].sort_values("n_active")
    run_id = largest.iloc[len(largest) // 2]["run_id"]
    path = SweepFolder(results_dir).run_dir(run_id) / "routing.parquet"
    if not path.exists():
        return None
    table = read_parquet(path)
    return (run_id, table) if len(table) else None


def build_report(
    results_dir: str | Path,
    target_flops: float | None = None,
    bootstrap: int | None = None,
    hunyuan_reference: bool = True,
    target_run: Callable[[FitReport], TargetRun | None] = lambda fit: None,
) -> tuple[Path, FitReport]:
    """Write the report of a results folder from its fit.json (refitted only when it does
    not match the runs); returns report/index.html and the fit it shows. `target_run` makes
    the run to train at the fit's target (the report knows no model family)."""
    results_dir = Path(results_dir)
    runs = load_runs(results_dir)
    if not (runs["status"] == RunStatus.COMPLETED).any():
        raise UserError(f"{results_dir}: no completed runs yet; nothing to report")
    curves = SweepFolder(results_dir).curves()
    fit, fit_note = current_fit(results_dir, runs, curves, target_flops, bootstrap)
    folder = SweepFolder(results_dir)
    validations = folder.validations()
    next_runs = (
        NextRuns.from_dict(read_json(folder.next_runs_path))
        if folder.next_runs_path.exists()
        else None
    )
    sections = build_sections(
        runs,
        curves,
        fit,
        _routing_of_a_run(results_dir, runs),
        hunyuan_reference,
        fit_note,
        validations,
        (target_run(fit), next_runs, results_dir),
    )
    name = str(runs["sweep"].iloc[0]) if "sweep" in runs and len(runs) else results_dir.name
    return write_html(results_dir, sections, f"moescale report: {name}"), fit
