"""The fit summary as readable tables for the terminal (rich); the headline comes last."""

from __future__ import annotations

import pandas as pd
from rich.table import Table

from moescale.fitting.pipeline import FitReport
from moescale.fitting.powerlaw import PowerLaw, SaturatingLaw
from moescale.fitting.prediction import headline_line
from moescale.published import HUNYUAN_COMPUTE_A, HUNYUAN_COMPUTE_B


def _interval(pair) -> str:
    return "" if not pair else f"[{pair[0]:.4g}, {pair[1]:.4g}]"


def loss_law_text(law: SaturatingLaw | PowerLaw | None) -> str:
    if isinstance(law, SaturatingLaw):
        return f"L = {law.floor:.4f} + {law.scale:.4g}·(C/{law.x_ref:.3g})^-{law.decay:.4f}"
    if isinstance(law, PowerLaw):
        return (
            f"L = {law.coef:.4g}·C^{law.exponent:.4f} (power law: fewer than 4 budgets, no floor)"
        )
    return "not fitted"


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


def _with_interval(value, pair, digits: str = ".3g") -> str:
    if value is None:
        return ""
    text = f"{value:{digits}}"
    return text if not pair else f"{text} [{pair[0]:{digits}}, {pair[1]:{digits}}]"


def _predictions_table(report: FitReport) -> Table:
    table = Table(
        title=f"every method at C = {report.target_flops:.3g} FLOPs [95% bootstrap interval]",
        title_justify="left",
    )
    for column in ("method", "N_opt (activated)", "D_opt (tokens)", "loss (nats/token)"):
        table.add_column(column, justify="left" if column == "method" else "right")
    lead = report.prediction.get("method")
    for method, p in report.predictions.items():
        table.add_row(
            method + ("*" if method == lead else ""),
            _with_interval(p["n_opt"], p.get("n_opt_interval")),
            _with_interval(p["d_opt"], p.get("d_opt_interval")),
            _with_interval(p.get("loss_opt"), p.get("loss_opt_interval"), ".4g"),
            style="bold" if method == lead else None,
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
        fit = report.isoflop
        how = fit.method + (f" on the {fit.n_nearest} nearest sizes" if fit.n_nearest else "")
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

    if report.parametric is not None:
        f = report.parametric
        out.append(
            f"parametric law: L = {f.E:.4f} + {f.A:.4g}/N^{f.alpha:.4f} + {f.B:.4g}/D^{f.beta:.4f} "
            f"(Huber objective {f.objective:.4g} on {f.n_points} points; N_opt ∝ C^{f.allocation_exponent:.3f} "
            f"where b·D is negligible); intervals: {f.interval_note}"
        )
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

    excluded = []
    for part in (report.isoflop, report.parametric, report.envelope):
        if part is not None:
            excluded.extend(part.excluded)
    excluded.extend(f"{name} skipped: {why}" for name, why in report.skipped.items())
    if excluded:
        out.append(
            "[yellow]excluded or flagged:[/yellow]\n"
            + "\n".join(f"  - {line}" for line in dict.fromkeys(excluded))
        )
    out.extend(headline_lines(report))
    return out


def headline_lines(report: FitReport) -> list[str]:
    """The headline in words, then its warnings and why its method leads."""
    p = report.prediction
    lines = []
    if p:
        lines.append(f"agreement: {p['agreement']['text']}")
        lines.append(f"headline method: {p['chosen_because']}")
        lines.extend(f"[yellow]warning:[/yellow] {w}" for w in p.get("warnings", []))
    lines.append(f"[bold]{headline_line(p)}[/bold]")
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
    rows = []
    for method, p in report.predictions.items():
        row = {"method": method, "headline": method == report.prediction.get("method")}
        for key in ("n_opt", "d_opt", "loss_opt"):
            interval = p.get(f"{key}_interval") or (None, None)
            row |= {key: p.get(key), f"{key}_low": interval[0], f"{key}_high": interval[1]}
        rows.append(row)
    tables["predictions"] = pd.DataFrame(rows)
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
