"""The fit summary as readable tables for the terminal (rich)."""

from __future__ import annotations

from rich.table import Table

from moescale.fitting.compute_law import HUNYUAN_A, HUNYUAN_B
from moescale.fitting.pipeline import FitReport
from moescale.fitting.powerlaw import PowerLaw, SaturatingLaw


def _interval(pair) -> str:
    return "" if not pair else f"[{pair[0]:.4g}, {pair[1]:.4g}]"


def _loss_law_text(law: SaturatingLaw | PowerLaw | None) -> str:
    if isinstance(law, SaturatingLaw):
        return f"L = {law.floor:.4f} + {law.scale:.4g}·(C/{law.x_ref:.3g})^-{law.decay:.4f}"
    if isinstance(law, PowerLaw):
        return f"L = {law.coef:.4g}·C^{law.exponent:.4f} (power law: fewer than 4 budgets)"
    return "not fitted"


def fit_summary(report: FitReport) -> list:
    """Rich renderables: compute law, power laws with intervals, prediction, extrapolation
    check, parametric fit, and everything excluded or skipped."""
    out: list = []
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report.run_counts.items()))
    out.append(f"[bold]{report.source}[/bold]: {counts}")

    laws = Table(title="compute law  C ≈ a·N·D + b·D", title_justify="left")
    for column in ("fit", "a", "b", "R²", "runs"):
        laws.add_column(column, justify="right" if column != "fit" else "left")
    for name, law in (
        ("exact FLOP counts", report.compute_law),
        ("measured time × peak", report.compute_law_time),
    ):
        if law is not None:
            laws.add_row(name, f"{law.a:.3f}", f"{law.b:.3g}", f"{law.r2:.4f}", str(law.n_runs))
    laws.add_row("dense rule (6ND)", "6", "0", "", "", style="dim")
    laws.add_row("Hunyuan-Large report", f"{HUNYUAN_A}", f"{HUNYUAN_B:.2g}", "", "", style="dim")
    out.append(laws)

    if report.isoflop is not None:
        fit = report.isoflop
        budgets = Table(title=f"isoFLOP optima ({fit.method})", title_justify="left")
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
        out.append(f"optimal loss against C: {_loss_law_text(fit.loss_law)}")

    if report.prediction:
        p = report.prediction
        prediction = Table(
            title=f"prediction at C = {report.target_flops:.3g} FLOPs", title_justify="left"
        )
        for column in ("quantity", "value", "95% interval", "from"):
            prediction.add_column(
                column, justify="right" if column in ("value", "95% interval") else "left"
            )
        prediction.add_row(
            "N_opt (activated)",
            f"{p['n_opt']:.4g}",
            _interval(p.get("n_opt_interval")),
            "isoFLOP laws",
        )
        prediction.add_row(
            "D_opt (tokens)",
            f"{p['d_opt']:.4g}",
            _interval(p.get("d_opt_interval")),
            "isoFLOP laws",
        )
        if "loss_opt" in p:
            prediction.add_row(
                "loss",
                f"{p['loss_opt']:.4f}",
                _interval(p.get("loss_opt_interval")),
                "isoFLOP laws",
            )
        if report.parametric_prediction:
            q = report.parametric_prediction
            prediction.add_row("N_opt (activated)", f"{q['n_opt']:.4g}", "", "parametric law")
            prediction.add_row("D_opt (tokens)", f"{q['d_opt']:.4g}", "", "parametric law")
            prediction.add_row("loss", f"{q['loss_opt']:.4f}", "", "parametric law")
        out.append(prediction)

    if report.extrapolation is not None:
        e = report.extrapolation
        out.append(
            f"extrapolation check: fitted on {e.n_budgets_used} smaller budgets, the largest "
            f"({e.held_out_budget:.3g}) predicted at N_opt {e.n_opt_predicted:.4g} vs its own "
            f"{e.n_opt_fitted:.4g} ({e.n_opt_rel_error:+.1%}), loss {e.loss_predicted:.4f} vs "
            f"{e.loss_fitted:.4f} ({e.loss_rel_error:+.2%})"
        )
    if report.parametric is not None:
        f = report.parametric
        out.append(
            f"parametric law: L = {f.E:.4f} + {f.A:.4g}/N^{f.alpha:.4f} + {f.B:.4g}/D^{f.beta:.4f} "
            f"(Huber objective {f.objective:.4g} on {f.n_points} points; N_opt ∝ C^{f.allocation_exponent:.3f})"
        )
    if report.envelope is not None:
        out.append(
            f"envelope (Approach 1): N ∝ C^{report.envelope.n_exponent:.4f} over {len(report.envelope.levels)} FLOP levels"
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
    return out
