"""The fit in words and frames, written once for every place that shows it: the terminal
summary (summary.py), `--format` tables, and the HTML and Markdown report (report.py)."""

from __future__ import annotations

import pandas as pd

from moescale.fitting.laws.critical_batch import CriticalBatchFit
from moescale.fitting.laws.isoflop import IsoflopFit
from moescale.fitting.laws.parametric import ParametricFit
from moescale.fitting.laws.powerlaw import PowerLaw, SaturatingLaw
from moescale.fitting.pipeline import FitReport
from moescale.fitting.prediction import Prediction
from moescale.fitting.studies.moe_design import MoEDesignFit

NAN = float("nan")


def loss_law_text(law: SaturatingLaw | PowerLaw | None) -> str:
    """The optimal loss against C as a formula."""
    if isinstance(law, SaturatingLaw):
        return f"L = {law.floor:.4f} + {law.scale:.4g}·(C/{law.x_ref:.3g})^-{law.decay:.4f}"
    if isinstance(law, PowerLaw):
        return (
            f"L = {law.coef:.4g}·C^{law.exponent:.4f} (power law: fewer than 4 budgets, no floor)"
        )
    return "not fitted"


def per_budget_how(fit: IsoflopFit) -> str:
    """The per-budget fit that was used: the method's own shape, or what "auto" chose and why,
    and on how many sizes."""
    how = fit.shape or fit.method
    if fit.method == "auto" and fit.shape_scores:
        other = "parabola" if fit.shape == "slices" else "slice"
        how += f" (auto: lower held-out error than the {other})"
    return how + (f" on the {fit.n_nearest} sizes nearest the lowest loss" if fit.n_nearest else "")


def parametric_text(fit: ParametricFit) -> str:
    """Approach 3's law, its objective and the allocation it implies."""
    return (
        f"L(N, D) = {fit.E:.4f} + {fit.A:.4g}/N^{fit.alpha:.4f} + {fit.B:.4g}/D^{fit.beta:.4f}, "
        f"Huber (δ = {fit.huber_delta:g}, objective {fit.objective:.4g}) on log-loss over "
        f"{fit.n_points} runs; it puts N_opt ∝ C^{fit.allocation_exponent:.3f} where b·D is "
        "negligible"
    )


def excluded_lines(report: FitReport) -> list[str]:
    """What the fits left out, and the laws that could not be fitted, each once."""
    lines = [
        f"excluded: {line}"
        for part in (report.isoflop, report.parametric, report.envelope)
        if part is not None
        for line in part.excluded
    ]
    lines += [f"{name} skipped: {why}" for name, why in report.skipped.items()]
    return list(dict.fromkeys(lines))


def recipe_lines(moe: MoEDesignFit) -> list[str]:
    """What each recipe variant buys over the variant of its shape, at the target, in words."""
    lines = []
    recipes = {v["variant"]: v for v in moe.variants if v["recipe_of"]}
    for m in moe.multipliers:
        if m["where"] != "target" or m["variant"] not in recipes:
            continue
        v, over = recipes[m["variant"]], m["over"]
        base = next(r["recipe"] for r in moe.variants if r["variant"] == over)
        interval = f" [95% {m['interval'][0]:.3g}, {m['interval'][1]:.3g}]" if m["interval"] else ""
        trend, slope = m.get("trend"), ""
        if trend:
            slope = f"; across the sweep it moved as C^{trend['slope']:.3f}"
            if trend["interval"]:
                slope += f" [{trend['interval'][0]:.3f}, {trend['interval'][1]:.3f}]"
        lines.append(
            f"{m['variant']} ({v['recipe']}) over {over} ({base}): {m['law']:.3g}×{interval} the "
            f"compute at {m['budget']:.3g} FLOPs, taken as the sweep's geometric mean (a recipe "
            f"saving a constant share of compute){slope}"
        )
    return lines


def headline_reasons(prediction: Prediction) -> list[str]:
    """Why the headline's method leads, and how far the methods agree."""
    return [
        f"Why this method: {prediction.chosen_because}.",
        f"Agreement: {prediction.agreement.text}.",
    ]


def predictions_frame(report: FitReport) -> pd.DataFrame:
    """Every method's prediction at the target, a row each: the values with their 95%
    interval's ends (NaN where there is none), and which one is the headline."""
    rows = []
    for method, p in report.predictions.items():
        row = {"method": method, "headline": method == report.lead_method}
        for key in ("n_opt", "d_opt", "loss_opt"):
            value, interval = getattr(p, key), getattr(p, f"{key}_interval")
            low, high = interval or (NAN, NAN)
            row |= {key: NAN if value is None else value, f"{key}_low": low, f"{key}_high": high}
        rows.append(row)
    return pd.DataFrame(rows)


def critical_batch_text(law: CriticalBatchFit) -> str:
    """The critical-batch law in a line, with B_crit at both ends of the losses it saw."""
    alpha = law.alpha_b_interval
    low, high = law.loss_range
    return (
        f"critical batch (gradient noise scale, {law.n_runs} runs): B_crit(L) = "
        f"{law.b_star:.3g}·L^(−1/{law.alpha_b:.3g}) tokens"
        + (f", α_B in [{alpha[0]:.3g}, {alpha[1]:.3g}]" if alpha else "")
        + f"; {law(high):,.0f} tokens at L = {high:.3g}, {law(low):,.0f} at {low:.3g} nats/token"
        + " (Kaplan et al. 2020: α_B ≈ 0.21, B* ≈ 2e8 on their data)"
    )
