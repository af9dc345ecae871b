"""The figures of the design answers: MoE variants (#14) and tuned hyperparameters (#13).
Like plots.py, each function takes tables and fit records and draws what fitting decided.

Variants are categories (Okabe–Ito colours, one per variant in the spec's order); budgets
are viridis and sizes cividis, as everywhere."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from moescale.analysis.style import (
    BUDGET_CMAP,
    C_LABEL,
    LOSS_LABEL,
    N_LABEL,
    OKABE_ITO,
    SIZE_CMAP,
    colour_bar,
    figure,
    hover,
    legend_below,
    log_norm,
    run_label,
    sci,
    styled,
)
from moescale.fitting.laws.compute_law import ComputeLaw
from moescale.fitting.laws.isoflop import IsoflopFit
from moescale.fitting.laws.powerlaw import percentile_interval
from moescale.fitting.studies.moe_design import (
    MoEDesignFit,
    compute_multiplier,
    dense_curve,
    variant_table,
)
from moescale.fitting.studies.tuning import TuningFit
from moescale.results import completed

MULTIPLIER_POINTS = 16  # budgets the multiplier curve is drawn at


def variant_colours(names: list[str]) -> dict[str, str]:
    return {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(names)}


def _facts(runs: pd.DataFrame | None) -> pd.DataFrame:
    columns = ["run_id", "tokens", "flops"]
    if runs is None or not set(columns) <= set(runs):
        return pd.DataFrame(columns=columns)
    return runs[columns].drop_duplicates("run_id")


@styled
def variant_isoflops(fits: dict[str, IsoflopFit], runs: pd.DataFrame | None = None) -> Figure:
    """Loss against N at each budget (one panel per budget), every variant's runs and its
    per-budget fit overlaid; ★ its optimum (hollow at a grid edge)."""
    colours = variant_colours(list(fits))
    budgets = sorted({float(b) for fit in fits.values() for b in fit.budgets["budget"]})
    fig, axes = figure(1, len(budgets), width=3.6, height=3.4)
    facts = _facts(runs)
    for ax, budget in zip(axes, budgets, strict=True):
        for name, fit in fits.items():
            colour = colours[name]
            row = fit.budgets[np.isclose(fit.budgets["budget"], budget, rtol=0.1)]
            curve = fit.curves.get(budget) or next(
                (v for k, v in fit.curves.items() if np.isclose(k, budget, rtol=0.1)), None
            )
            if curve is not None:
                ax.plot(np.exp(curve[0]), curve[1], color=colour, lw=1.1)
            points = (
                fit.points[np.isclose(fit.points["budget"], budget, rtol=0.1)]
                if len(fit.points)
                else fit.points
            )
            if len(points):
                points = points.merge(facts, on="run_id", how="left")
                dots = ax.scatter(points["n_active"], points["loss"], s=18, color=colour, zorder=3)
                hover(fig, dots, [
                    run_label(p.run_id, p.n_active, p.tokens, p.flops, p.loss, f"variant {name}")
                    for p in points.itertuples()
                ])  # fmt: skip
            for r in row.itertuples():
                if np.isfinite(r.n_opt):
                    ax.scatter([r.n_opt], [r.loss_opt], marker="*", s=130, zorder=5, linewidths=0.8,
                               facecolors="white" if r.at_edge else colour, edgecolors="black")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(N_LABEL)
        ax.set_title(f"C = {sci(budget)} FLOPs")
    axes[0].set_ylabel(LOSS_LABEL)
    legend_below(fig, axes[0], ncol=len(fits) + 1, handles=[
        *(Line2D([], [], color=c, marker="o", label=name) for name, c in colours.items()),
        Line2D([], [], ls="", marker="*", ms=10, mfc="grey", mec="black", label="optimum"),
    ])  # fmt: skip
    return fig


@styled
def multiplier(moe: MoEDesignFit, compute_law: ComputeLaw | None = None) -> Figure:
    """The compute multiplier of each MoE variant over dense against C: the joint law's with
    its 95% band from the sweep's smallest budget to the target, the observed one at the
    sweep's budgets (the variant's optimum against dense's own optimal-loss law)."""
    fig, (ax,) = figure(width=6.0, height=3.8)
    law = moe.law
    rows = pd.DataFrame(moe.multipliers)
    colours = variant_colours([v["variant"] for v in moe.variants])
    sweep = rows[rows["where"] == "sweep"]
    grid = np.geomspace(sweep["budget"].min(), moe.target_flops, MULTIPLIER_POINTS)
    curve = dense_curve(law, grid[0], grid[-1], compute_law)
    for v in moe.variants:
        if v["dense"]:
            continue
        name, colour = v["variant"], colours[v["variant"]]
        if v["recipe_of"]:
            _recipe_multiplier(ax, rows[rows["variant"] == name], colour, v)
            continue
        values = np.array(
            [compute_multiplier(law, c, v["E"], v["G"], compute_law, curve) for c in grid]
        )
        bands = np.array([percentile_interval(s[1:]) or (np.nan, np.nan) for s in values])
        ax.plot(
            grid, values[:, 0], color=colour, lw=1.3, label=f"{name} (E {v['E']:g}, G {v['G']:g})"
        )
        ax.fill_between(grid, bands[:, 0], bands[:, 1], color=colour, alpha=0.15, lw=0)
        mine = sweep[(sweep["variant"] == name) & sweep["observed"].notna()]
        dots = ax.scatter(mine["budget"], mine["observed"], color=colour, edgecolors="black",
                          linewidths=0.5, s=26, zorder=4)  # fmt: skip
        hover(fig, dots, [
            f"variant {name} · C = {r.budget:.4g} FLOPs · observed multiplier {r.observed:.3f}× · law {r.law:.3f}×"
            for r in mine.itertuples()
        ])  # fmt: skip
    ax.axhline(1, color="grey", lw=0.8)
    ax.axvline(moe.target_flops, color="grey", lw=0.8, ls=":")
    ax.axvspan(sweep["budget"].min(), sweep["budget"].max(), color="grey", alpha=0.07, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(C_LABEL)
    ax.set_ylabel("compute multiplier over dense\n(dense FLOPs to the same loss ÷ FLOPs)")
    ax.set_title(f"joint law ({law.form}), 95% band; dots observed; shaded the sweep")
    if (rows["over"] != rows["over"].iloc[0]).any():
        ax.set_ylabel("compute multiplier over dense (dashed:\nover the variant of its shape)")
    legend_below(fig, ax, ncol=3)
    return fig


def _recipe_multiplier(ax, rows: pd.DataFrame, colour, variant: dict) -> None:
    """A recipe variant's multiplier over the variant of its shape: dashed through the values
    its and its shape's optimal-loss laws give at the sweep's budgets (95% intervals), dots
    observed; at the target a diamond, the sweep's geometric mean, reached by a dotted level
    line (a constant share of compute, not an extrapolated curve)."""

    def bars(part: pd.DataFrame):
        low, high = np.array([m or (np.nan, np.nan) for m in part["interval"]], float).T
        return [part["law"] - low, high - part["law"]]

    sweep, target = rows[rows["where"] == "sweep"], rows[rows["where"] == "target"]
    ax.errorbar(sweep["budget"], sweep["law"], yerr=bars(sweep), color=colour, ls="--", lw=1.1,
                capsize=2, label=f"{variant['variant']} over {variant['recipe_of']} ({variant['recipe']})")  # fmt: skip
    if len(target) and len(sweep):
        level = float(target["law"].iloc[0])
        ax.plot([sweep["budget"].max(), float(target["budget"].iloc[0])], [level, level],
                color=colour, ls=":", lw=1.0)  # fmt: skip
        ax.errorbar(target["budget"], target["law"], yerr=bars(target), color=colour, marker="D",
                    ms=5, ls="none", capsize=2)  # fmt: skip
    seen = sweep[sweep["observed"].notna()]
    ax.scatter(seen["budget"], seen["observed"], color=colour, edgecolors="black",
               linewidths=0.5, s=26, zorder=4)  # fmt: skip


@styled
def design_optimum(
    moe: MoEDesignFit, fits: dict[str, IsoflopFit], compute_law: ComputeLaw | None = None
) -> Figure:
    """The optimal loss at each budget against E (variants at G = 1) and against G (at the
    granular variants' E): each variant's isoFLOP optimum, and the joint law's curve."""
    law = moe.law
    table = pd.DataFrame(moe.variants)
    table = table[table["recipe_of"] == ""]  # the law knows shapes, not recipes
    with_g = law.g_mode != "none"
    fig, axes = figure(1, 2 if with_g else 1, width=4.4, height=3.5)
    budgets = sorted({float(b) for f in fits.values() for b in f.interior["budget"]})
    norm = log_norm(budgets)
    panels = [("E", table[table["G"] == 1], 1.0)]
    if with_g:
        fixed = float(table.loc[table["G"] > 1, "E"].iloc[0])
        panels.append(("G", table[np.isclose(table["E"], fixed)], fixed))
    for ax, (axis, members, fixed) in zip(axes, panels, strict=True):
        low, high = members[axis].min(), members[axis].max()
        values = np.geomspace(max(low, 1.0), high, 40)
        for budget in budgets:
            colour = BUDGET_CMAP(norm(budget))
            curve = [
                law.optimum(budget, v if axis == "E" else fixed, v if axis == "G" else 1.0,
                            compute_law=compute_law)[0][0]
                for v in values
            ]  # fmt: skip
            ax.plot(values, curve, color=colour, lw=1.1)
            xs, ys, labels = [], [], []
            for row in members.itertuples():
                fit = fits.get(row.variant)
                if fit is None:
                    continue
                at = fit.interior[np.isclose(fit.interior["budget"], budget, rtol=0.1)]
                for r in at.itertuples():
                    xs.append(getattr(row, axis))
                    ys.append(r.loss_opt)
                    labels.append(
                        f"variant {row.variant} · C = {budget:.4g} FLOPs · optimal N = {r.n_opt:.4g} · loss {r.loss_opt:.4g} nats/token"
                    )
            dots = ax.scatter(
                xs, ys, color=colour, edgecolors="black", linewidths=0.5, s=28, zorder=4
            )
            hover(fig, dots, labels)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(
            "expansion E (routed experts ÷ top-k; dense 1)"
            if axis == "E"
            else f"granularity G (at E = {fixed:g})"
        )
        ax.set_ylabel("optimal loss at C (nats/token)")
        ax.set_title(f"against {axis}: dots the variants' optima, lines the joint law")
    colour_bar(fig, axes[-1], BUDGET_CMAP, norm, C_LABEL)
    return fig


@styled
def variant_routing(runs: pd.DataFrame, curves: pd.DataFrame) -> Figure:
    """Routing health of each variant: its runs' busiest-expert load (× a balanced load) and
    the share of assignments dropped or recycled, over the second half of training, against N."""
    late = curves[curves["step"] >= curves.groupby("run_id")["step"].transform("max") / 2]
    health = late.groupby("run_id")[["max_expert_load", "dropped_frac", "recycled_frac"]].mean()
    table = runs.merge(health, left_on="run_id", right_index=True)
    table = table[table["n_experts"] > 0]
    colours = variant_colours(list(variant_table(runs)["variant"]))  # the spec's order
    order = [name for name in colours if name in set(table["variant"])]
    fig, (load, lost) = figure(1, 2, width=4.4, height=3.4)
    for name in order:
        mine = table[table["variant"] == name]
        for ax, values, what in (
            (load, mine["max_expert_load"], "busiest expert {:.2f}× balanced"),
            (lost, mine["dropped_frac"] + mine["recycled_frac"], "dropped + recycled {:.1%}"),
        ):
            dots = ax.scatter(mine["n_active"], values, color=colours[name], s=20, label=name,
                              edgecolors="black", linewidths=0.3)  # fmt: skip
            hover(fig, dots, [
                run_label(r.run_id, r.n_active, r.tokens, r.flops, r.final_loss, f"variant {name} · " + what.format(v))
                for r, v in zip(mine.itertuples(), values, strict=True)
            ])  # fmt: skip
    load.axhline(1, color="grey", lw=0.8)
    for ax in (load, lost):
        ax.set_xscale("log")
        ax.set_xlabel(N_LABEL)
    load.set_ylabel("busiest expert's load / balanced")
    lost.set_ylabel("share of routed assignments\ndropped or recycled")
    load.set_title("expert load (second half of training)")
    lost.set_title("capacity overflow")
    legend_below(fig, load, ncol=len(order))
    return fig


@styled
def lr_sweeps(tuning: TuningFit, runs: pd.DataFrame) -> Figure:
    """Loss against the peak LR at each budget (one panel per budget), a line per size
    (cividis); ★ each point's interpolated best LR; the shaded band: the η_opt(C) law's 95%
    interval at that budget."""
    done = completed(runs)
    points = tuning.points
    budgets = sorted(points["budget_flops"].unique())
    fig, axes = figure(1, len(budgets), width=3.6, height=3.4)
    norm = log_norm(points["n_active"])
    law = tuning.laws.get("lr")
    for ax, budget in zip(axes, budgets, strict=True):
        mine = done[np.isclose(done["budget_flops"], budget)]
        for n, group in mine.groupby("n_active"):
            colour = SIZE_CMAP(norm(n))
            group = group.sort_values("lr")
            ax.plot(group["lr"], group["final_loss"], color=colour, lw=1.0, marker="o", ms=3.5)
            dots = ax.scatter(group["lr"], group["final_loss"], color=colour, s=14, zorder=3)
            hover(fig, dots, [
                run_label(r.run_id, r.n_active, r.tokens, r.flops, r.final_loss, f"peak LR {r.lr:.3g}")
                for r in group.itertuples()
            ])  # fmt: skip
        best = points[np.isclose(points["budget_flops"], budget)]
        for r in best.itertuples():
            edge = bool(r.at_edge)
            ax.scatter([r.lr_opt], [r.final_loss], marker="*", s=110, zorder=5, linewidths=0.7,
                       facecolors="white" if edge else SIZE_CMAP(norm(r.n_active)), edgecolors="black")  # fmt: skip
        if law is not None and law.interval(budget):
            low, high = law.interval(budget)
            ax.axvspan(low, high, color="grey", alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate")
        ax.set_title(f"C = {sci(budget)} FLOPs")
    axes[0].set_ylabel(LOSS_LABEL)
    colour_bar(fig, axes[-1], SIZE_CMAP, norm, N_LABEL)
    legend_below(fig, axes[0], ncol=3, handles=[
        Line2D([], [], ls="", marker="*", ms=10, mfc="grey", mec="black", label="best LR (vertex in log LR)"),
        Line2D([], [], ls="", marker="*", ms=10, mfc="white", mec="black", label="best at the grid's edge"),
        Line2D([], [], color="grey", alpha=0.4, lw=6, label="η_opt(C) law, 95%"),
    ])  # fmt: skip
    return fig


@styled
def tuned_laws(tuning: TuningFit, target_flops: float) -> Figure:
    """Left: each tuned point's best LR against C (cividis: its N), the η_opt(C) law at the
    compute-optimal size with its 95% band to the target (and B_opt likewise when the batch was
    tuned). Right: the isoFLOP optima with the recipe's own values (untuned) and tuned, each
    with its N_opt exponent."""
    laws = list(tuning.laws.items())
    fig, axes = figure(1, len(laws) + 1, width=4.2, height=3.5)
    points = tuning.points
    norm = log_norm(points["n_active"])
    for ax, (name, law) in zip(axes, laws, strict=False):
        column = f"{name}_opt"
        ok = points[~points["at_edge"].str.contains(name)]
        dots = ax.scatter(ok["budget_flops"], ok[column], c=ok["n_active"], cmap=SIZE_CMAP, norm=norm,
                          s=20, edgecolors="black", linewidths=0.3, zorder=3)  # fmt: skip
        hover(fig, dots, [
            f"C = {r.budget_flops:.4g} FLOPs · N = {r.n_active:.4g} activated · best {name} {getattr(r, column):.3g} · loss {r.final_loss:.4g} nats/token"
            for r in ok.itertuples()
        ])  # fmt: skip
        grid = np.geomspace(points["budget_flops"].min() / 1.3, target_flops * 1.5, 120)
        ax.plot(grid, [law(c) for c in grid], color=OKABE_ITO[0], lw=1.3,
                label=rf"{name}$_{{opt}}$ = {sci(law.coef)}$\,\cdot\,C^{{{law.exponent:.3f}}}$")  # fmt: skip
        bands = np.array([law.interval(c) or (np.nan, np.nan) for c in grid])
        ax.fill_between(grid, bands[:, 0], bands[:, 1], color=OKABE_ITO[0], alpha=0.15, lw=0)
        ax.axvline(target_flops, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(C_LABEL)
        ax.set_ylabel("peak learning rate" if name == "lr" else "batch (tokens)")
        ax.set_title(f"best {name}: points (colour N), law at N_opt(C)")
        ax.legend(loc="lower left")
    shift = axes[-1]
    for key, colour, marker in (("untuned", OKABE_ITO[3], "s"), ("tuned", OKABE_ITO[0], "o")):
        record = getattr(tuning, key)
        rows = pd.DataFrame(record.get("budgets", []))
        if rows.empty:
            continue
        interval = record.get("n_exponent_interval")
        label = f"{key}: N_opt ∝ C^{record['n_exponent']:.3f}" + (
            f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        )
        shift.plot(
            rows["budget"], rows["n_opt"], color=colour, marker=marker, ms=5, lw=1.1, label=label
        )
    shift.set_xscale("log")
    shift.set_yscale("log")
    shift.set_xlabel(C_LABEL)
    shift.set_ylabel("optimal N (activated)")
    shift.set_title("isoFLOP optima: untuned (recipe LR) vs tuned")
    legend_below(fig, shift, ncol=1)
    colour_bar(fig, axes[0], SIZE_CMAP, norm, N_LABEL)
    return fig
