"""The fit summary as readable tables for the terminal (rich); the headline comes last."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

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
from moescale.fitting.laws.isoflop import IsoflopFit
from moescale.fitting.pipeline import FitReport
from moescale.fitting.prediction import headline_line
from moescale.fitting.studies.moe_design import MoEDesignFit
from moescale.published import HUNYUAN_COMPUTE_A, HUNYUAN_COMPUTE_B


def _interval(pair) -> str:
    return "" if not pair else f"[{pair[0]:.4g}, {pair[1]:.4g}]"


def _compute_law_table(report: FitReport) -> Table:
    laws = Table(
        title="compute law  C ≈ a·N·D + b·D  (fitted on relative error)", title_justify="left"
    )
    for column in ("fit", "a", "b", "worst rel. error", "runs"):
        laws.add_column(column, justify="right" if column != "fit" else "left")
    for name, law in (
        ("exact FLOP counts", report.compute_law),
        ("measured time × peak", report.compute_law_time),
    ):
        if law is None:
            continue
        if law.cost == "assumed":
            laws.add_row(
                "assumed (the table has no FLOP counts)", f"{law.a:g}", f"{law.b:g}", "", ""
            )
        else:
            laws.add_row(
                name, f"{law.a:.3f}", f"{law.b:.3g}", f"{law.max_rel_error:.2%}", str(law.n_runs)
            )
    laws.add_row("dense rule (6ND)", "6", "0", "", "", style="dim")
    laws.add_row(
        "Hunyuan-Large report (its own counting)",
        f"{HUNYUAN_COMPUTE_A}",
        f"{HUNYUAN_COMPUTE_B:.2g}",
        "",
        "",
        style="dim",
    )
    return laws


def _pair(row, key: str) -> tuple[float, float] | None:
    """A predictions_frame row's interval of `key`, None where it has none."""
    low, high = getattr(row, f"{key}_low"), getattr(row, f"{key}_high")
    return None if low != low else (low, high)  # NaN: no interval


def _with_interval(value, pair, digits: str = ".3g") -> str:
    if value is None or value != value:  # None or NaN: not predicted
        return ""
    text = f"{value:{digits}}"
    return text if not pair else f"{text} [{pair[0]:{digits}}, {pair[1]:{digits}}]"


def _predictions_table(report: FitReport) -> Table:
    table = Table(
        title=f"every method at C = {report.target_flops:.3g} FLOPs [95% bootstrap interval]",
        title_justify="left",
    )
    for column in ("method", "N_opt (activated)", "D_opt (tokens)", f"loss ({report.loss_unit})"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in predictions_frame(report).itertuples():
        table.add_row(
            row.method + ("*" if row.headline else ""),
            *(
                _with_interval(getattr(row, key), _pair(row, key), digits)
                for key, digits in (("n_opt", ".3g"), ("d_opt", ".3g"), ("loss_opt", ".4g"))
            ),
            style="bold" if row.headline else None,
        )
    table.caption = "* the headline"
    return table


def _extrapolation_table(report: FitReport) -> Table:
    table = Table(
        title="hold-out check: the largest 1, 2, 3 budgets left out, then predicted",
        title_justify="left",
    )
    for column in (
        "method",
        "out",
        "budget C",
        "factor",
        "N_opt",
        "predicted",
        "error",
        "loss err",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for r in report.extrapolation.rows:
        table.add_row(
            r.method,
            str(r.held_out),
            f"{r.budget:.3g}",
            f"{r.factor:.2f}×",
            f"{r.n_opt_fitted:.3g}",
            f"{r.n_opt_predicted:.3g}",
            f"{r.n_opt_rel_error:+.1%}",
            f"{r.loss_rel_error:+.2%}",
        )
    return table


def _isoflop_parts(fit: IsoflopFit) -> list:
    """Approach 2's per-budget optima and power laws, its optimal-loss law and intervals."""
    out: list = []
    how = per_budget_how(fit)
    budgets = Table(title=f"isoFLOP optima (per budget: {how})", title_justify="left")
    for column in ("budget C", "runs", "n_opt", "d_opt", "loss_opt", "note"):
        budgets.add_column(column, justify="left" if column == "note" else "right")
    for row in fit.budgets.itertuples():
        note = f"excluded: {row.reason}" if row.reason else ""
        budgets.add_row(
            f"{row.budget:.3g}",
            str(row.n_runs),
            f"{row.n_opt:.4g}",
            f"{row.d_opt:.4g}",
            f"{row.loss_opt:.4f}",
            note,
            style="yellow" if note else None,
        )
    out.append(budgets)
    powers = Table(
        title="power laws  y = coef · C^exponent  (95% bootstrap intervals)",
        title_justify="left",
    )
    for column in ("law", "coef", "interval", "exponent", "interval "):
        powers.add_column(column, justify="left" if column == "law" else "right")
    for name, law in (("N_opt", fit.n_law), ("D_opt", fit.d_law)):
        powers.add_row(
            name,
            f"{law.coef:.4g}",
            _interval(law.coef_interval),
            f"{law.exponent:.4f}",
            _interval(law.exponent_interval),
        )
    out.append(powers)
    out.append(f"optimal loss against C: {loss_law_text(fit.loss_law)}")
    out.append(f"isoFLOP intervals: {fit.interval_note}")
    return out


def fit_summary(report: FitReport) -> list:
    """Rich renderables: compute law, isoFLOP optima and laws, every method's prediction,
    the hold-out check, the parametric and envelope fits, what was excluded — and last the
    headline in words with its warnings."""
    out: list = []
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report.run_counts.items()))
    out.append(f"[bold]{report.source}[/bold]: {counts}")
    out.append(f"N counts {report.conventions.get('n', 'activated parameters')}")
    out.append(_compute_law_table(report))

    if report.isoflop is not None:
        out.extend(_isoflop_parts(report.isoflop))
    if report.parametric is not None:
        f = report.parametric
        out.append(f"parametric law: {parametric_text(f)}; intervals: {f.interval_note}")
    if report.critical_batch is not None:
        out.append(critical_batch_text(report.critical_batch))
    if report.repetition:
        r = report.repetition
        out.append(
            f"passes over the data: at most {r['max_epochs']:.2f}; "
            f"{len(r['runs_over_threshold'])} run(s) beyond {r['threshold_epochs']:g} — {r['action']}"
        )
    if report.data_constrained is not None:
        dc = report.data_constrained
        interval = dc.intervals.get("r_star_d")
        out.append(
            f"data-constrained law (Muennighoff et al. 2023): R*_D = {dc.r_star_d:.3g}"
            + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")
            + f" (the paper: 15.4); intervals: {dc.interval_note}"
        )
    if report.predictions:
        out.append(_predictions_table(report))
    if report.extrapolation is not None and report.extrapolation.rows:
        out.append(_extrapolation_table(report))
    if report.envelope is not None:
        out.append(
            f"envelope (Approach 1): N ∝ C^{report.envelope.n_exponent:.4f} over "
            f"{len(report.envelope.levels)} FLOP levels — {report.envelope.note}"
        )

    if report.tuning is not None:
        out.extend(tuning_summary(report))
    if report.moe is not None:
        out.extend(moe_summary(report))
    excluded = excluded_lines(report)
    if excluded:
        out.append(
            "[yellow]excluded or flagged:[/yellow]\n"
            + "\n".join(f"  - {line}" for line in excluded)
        )
    out.extend(headline_lines(report))
    return out


def variants_frame(report: FitReport) -> pd.DataFrame:
    """One row per (variant, budget): its isoFLOP optimum; and its N_opt at the target."""
    rows = []
    for v in report.moe.variants:
        p = v.get("prediction", {})
        for b in v.get("budgets", []):
            rows.append(
                {
                    "variant": v["variant"], "E": v["E"], "G": v["G"], "recipe": v["recipe"],
                    "budget": b["budget"],
                    "n_opt": b["n_opt"], "loss_opt": b["loss_opt"], "at_edge": b["at_edge"],
                    "n_exponent": v.get("n_exponent"),
                    "n_opt_target": p.get("n_opt"),
                    "n_opt_target_low": (p.get("n_opt_interval") or (None, None))[0],
                    "n_opt_target_high": (p.get("n_opt_interval") or (None, None))[1],
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def multipliers_frame(report: FitReport) -> pd.DataFrame:
    rows = []
    for m in report.moe.multipliers:
        low, high = m.get("interval") or (None, None)
        rows.append(
            {"variant": m["variant"], "over": m["over"], "budget": m["budget"],
             "where": m["where"], "multiplier": m["law"], "low": low, "high": high,
             "observed": m.get("observed")}
        )  # fmt: skip
    return pd.DataFrame(rows)


def tuning_summary(report: FitReport) -> list:
    """The tuned points (best values per budget and size), the laws of the best values and
    the N_opt exponent untuned against tuned."""
    tuning, out = report.tuning, []
    table = Table(
        title=f"tuned points ({', '.join(tuning.axes)}); N = n_active", title_justify="left"
    )
    columns = [
        c for c in ("lr_opt", "batch_tokens_opt", "routed_lr_scale_opt") if c in tuning.points
    ]
    for column in ("budget C", "N", *columns, "tuned loss", "untuned loss", "tried", "note"):
        table.add_column(column, justify="left" if column == "note" else "right")
    for r in tuning.points.sort_values(["budget_flops", "n_active"]).itertuples():
        untuned = getattr(r, "untuned_loss", float("nan"))
        table.add_row(
            f"{r.budget_flops:.3g}", f"{r.n_active:,.0f}", *(f"{getattr(r, c):.3g}" for c in columns),
            f"{r.final_loss:.4f}", "" if untuned != untuned else f"{untuned:.4f}", str(r.n_tried),
            f"best at the grid's edge ({r.at_edge})" if r.at_edge else "",
            style="yellow" if r.at_edge else None,
        )  # fmt: skip
    table.caption = tuning.how
    out.append(table)
    for name, law in tuning.laws.items():
        out.append(
            f"{name}_opt(C) = {law.coef:.4g}·C^{law.exponent:.4f} {_interval(law.exponent_interval())} "
            f"at N_opt(C), × (N/N_opt)^{law.size_exponent:.3f}; at {report.target_flops:.3g} FLOPs: "
            f"{_with_interval(law(report.target_flops), law.interval(report.target_flops), '.3g')} "
            f"({law.n_points} points; {law.interval_note})"
        )
    untuned, tuned = tuning.untuned, tuning.tuned
    if "n_exponent" in untuned:
        out.append(
            f"N_opt exponent: untuned (recipe's own values) {_with_interval(untuned['n_exponent'], untuned['n_exponent_interval'], '.4f')}"
            f", tuned {_with_interval(tuned['n_exponent'], tuned['n_exponent_interval'], '.4f')}"
            f" — tuning moved it by {tuned['n_exponent'] - untuned['n_exponent']:+.4f}"
        )
    else:
        out.append(f"[yellow]no untuned fit to compare:[/yellow] {untuned.get('reason')}")
    out.extend(f"[yellow]{k} skipped:[/yellow] {v}" for k, v in tuning.skipped.items())
    return out


def _variant_optima_table(report: FitReport) -> Table:
    """Each MoE variant's isoFLOP optimum per budget and its N_opt at the target."""
    moe = report.moe
    optima = Table(
        title="MoE variants: isoFLOP optimum per budget (N = n_active) and N_opt at the target",
        title_justify="left",
    )
    for column in ("variant", "E", "G", "recipe", "budget C", "n_opt", "loss_opt",
                   "N_opt ∝ C^a", f"N_opt at {report.target_flops:.3g}"):  # fmt: skip
        optima.add_column(column, justify="left" if column in ("variant", "recipe") else "right")
    for v in moe.variants:
        p = v.get("prediction", {})
        for i, b in enumerate(v.get("budgets", [])):
            first = i == 0
            optima.add_row(
                v["variant"] if first else "", f"{v['E']:g}" if first else "",
                f"{v['G']:g}" if first else "", v["recipe"] if first else "",
                f"{b['budget']:.3g}", f"{b['n_opt']:.4g}",
                f"{b['loss_opt']:.4f}" + (" (edge)" if b["at_edge"] else ""),
                _with_interval(v.get("n_exponent"), v.get("n_exponent_interval")) if first else "",
                _with_interval(p.get("n_opt"), p.get("n_opt_interval")) if first else "",
                style="yellow" if b["at_edge"] else None,
                end_section=i == len(v["budgets"]) - 1,
            )  # fmt: skip
    return optima


def _held_out_table(moe: MoEDesignFit) -> Table:
    """Each variant held out in turn: the joint law fitted on the others against its runs."""
    sel = moe.selection
    held = Table(
        title=f"held-out variants ({sel['chosen']} law fitted on the others)",
        title_justify="left",
    )
    for column in (
        "variant",
        "RMS err (log loss)",
        "budget C",
        "predicted loss_opt [95%]",
        "observed",
        "inside",
    ):
        held.add_column(column, justify="left" if column == "variant" else "right")
    for h in moe.held_out:
        if "skipped" in h:
            held.add_row(h["variant"], f"skipped: {h['skipped']}", "", "", "", "")
            continue
        for i, b in enumerate(h["budgets"] or [{}]):
            held.add_row(
                h["variant"] if i == 0 else "",
                f"{h['rmse_log_loss']:.4f}" + ("" if h["g_fitted"] or i else " (no G term)") if i == 0 else "",
                f"{b['budget']:.3g}" if b else "", _with_interval(b.get("predicted"), b.get("interval"), ".4f"),
                f"{b['observed']:.4f}" if b else "", {True: "yes", False: "no", None: ""}[b.get("inside")],
            )  # fmt: skip
    return held


def _multiplier_table(moe: MoEDesignFit) -> Table:
    """The compute multiplier of each variant over dense (a recipe variant's over the variant
    of its shape), by the law and observed."""
    table = Table(
        title="compute multiplier: FLOPs of `over` reaching the variant's optimal loss ÷ its FLOPs",
        title_justify="left",
    )
    for column in ("variant", "over", "budget C", "", "law [95%]", "observed"):
        table.add_column(column, justify="left" if column in ("variant", "over") else "right")
    last = None
    for m in moe.multipliers:
        first = m["variant"] != last
        table.add_row(
            m["variant"] if first else "", m["over"] if first else "", f"{m['budget']:.3g}",
            "target" if m["where"] == "target" else "",
            _with_interval(m["law"], m.get("interval"), ".3f") + "×",
            "" if m.get("observed") is None else f"{m['observed']:.3f}×",
            style="bold" if m["where"] == "target" else None,
            end_section=m["where"] == "target",
        )  # fmt: skip
        last = m["variant"]
    table.caption = (
        "law: the joint law over (N, D, E, G) against dense; for a recipe variant (same shape, "
        "another recipe), its own and its shape's optimal-loss laws in C. observed: the "
        "variant's isoFLOP optimum against `over`'s optimal-loss law in C"
    )
    return table


def moe_summary(report: FitReport) -> list:
    """The MoE design answers: each variant's optimum per budget, the joint law and how its
    form was chosen, the held-out variants, the compute multiplier and the best E and G."""
    moe, out = report.moe, []
    out.append(_variant_optima_table(report))
    if moe.law is not None:
        law = moe.law.to_dict()
        params = ", ".join(
            f"{k} = {val:.4g}"
            + (f" {_interval(moe.law.intervals.get(k))}" if moe.law.intervals.get(k) else "")
            for k, val in law["params"].items()
        )
        out.append(
            f"joint law ({law['form']}): L = {law['law']}\n  {params}\n"
            f"  intervals: {law['interval_note']}"
        )
    sel = moe.selection
    if sel.get("forms"):
        scores = ", ".join(f"{f}: {e:.4f}" for f, e in sel["forms"].items() if e is not None)
        out.append(
            f"form chosen: {sel['chosen']} — held-out RMS error of log loss {scores} ({sel['how']})"
        )
    if moe.held_out:
        out.append(_held_out_table(moe))
    if moe.multipliers:
        out.append(_multiplier_table(moe))
    out.extend(recipe_lines(moe))
    for best in (moe.optimal_e, moe.optimal_g):
        if best:
            at = f" at E = {best['at_fixed']:g}" if best["at_fixed"] else " (G = 1)"
            out.append(
                f"best {best['axis']} at {best['flops']:.3g} FLOPs{at}: {best['value']:.3g} "
                f"{_interval(best['interval'])} over the swept {best['range'][0]:g}–{best['range'][1]:g}"
                + (f" — {best['note']}" if best["note"] else "")
            )
    out.extend(f"[yellow]note:[/yellow] {n}" for n in moe.notes)
    return out


def headline_lines(report: FitReport) -> list[str]:
    """The headline in words, then its warnings and why its method leads."""
    p = report.prediction
    lines = []
    if p is not None:
        lines.extend(headline_reasons(p))
        lines.extend(f"[yellow]warning:[/yellow] {w}" for w in p.warnings)
    lines.append(f"[bold]{headline_line(p, report.loss_unit, report.budget_name)}[/bold]")
    return lines


FORMATS = ("rich", "csv", "markdown", "latex")


def fit_tables(report: FitReport) -> dict[str, pd.DataFrame]:
    """The fit's tables as data frames (for --format): the isoFLOP budgets and every
    method's prediction at the target."""

    tables = {}
    if report.isoflop is not None:
        tables["budgets"] = report.isoflop.budgets[
            ["budget", "n_runs", "n_opt", "d_opt", "loss_opt", "at_edge", "reason"]
        ]
    tables["predictions"] = predictions_frame(report)
    if report.tuning is not None:
        tables["tuned_points"] = report.tuning.points
    if report.moe is not None:
        tables["variants"] = variants_frame(report)
        tables["multipliers"] = multipliers_frame(report)
    return tables


def render_table(table: pd.DataFrame, fmt: str) -> str:
    """A table as CSV, Markdown or LaTeX text, numbers to 4 significant digits."""
    if fmt == "csv":
        return table.to_csv(index=False)
    shown = table.map(lambda v: ("" if v != v else f"{v:.4g}") if isinstance(v, float) else v)
    if fmt == "markdown":
        header = "| " + " | ".join(map(str, shown.columns)) + " |"
        rule = "|" + "---|" * len(shown.columns)
        body = ["| " + " | ".join(map(str, row)) + " |" for row in shown.itertuples(index=False)]
        return "\n".join([header, rule, *body]) + "\n"
    escape = str.maketrans({"_": r"\_", "%": r"\%", "&": r"\&"})
    lines = [r"\begin{tabular}{" + "l" + "r" * (len(shown.columns) - 1) + "}", r"\hline"]
    lines.append(" & ".join(str(c).translate(escape) for c in shown.columns) + r" \\ \hline")
    for row in shown.itertuples(index=False):
        lines.append(" & ".join(str(v).translate(escape) for v in row) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
