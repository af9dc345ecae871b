"""The figures of a sweep and its fits. Each function takes tables and fit records and returns
a matplotlib Figure drawn in moescale's style (analysis/style.py); nothing here fits anything.

Colour means one thing per scale everywhere: the training budget C (viridis), the activated
size N (cividis), the loss (magma); categories (methods, references) use Okabe–Ito colours."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from moescale.analysis.style import (
    BUDGET_CMAP,
    C_LABEL,
    D_LABEL,
    LOSS_CMAP,
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
from moescale.fitting.laws.compute_law import DEFAULT_LAW, ComputeLaw
from moescale.fitting.laws.critical_batch import CriticalBatchFit, noise_points
from moescale.fitting.laws.envelope import EnvelopeFit
from moescale.fitting.laws.isoflop import IsoflopFit
from moescale.fitting.laws.parametric import ParametricFit
from moescale.fitting.laws.powerlaw import PowerLaw
from moescale.fitting.prediction import Prediction
from moescale.published import (
    DENSE_A,
    HUNYUAN_COMPUTE_A,
    HUNYUAN_COMPUTE_B,
    HUNYUAN_D_OPT,
    HUNYUAN_N_OPT,
    HUNYUAN_TARGET,
)
from moescale.results import RunStatus

HUNYUAN_N_LAW = PowerLaw(*HUNYUAN_N_OPT)
HUNYUAN_D_LAW = PowerLaw(*HUNYUAN_D_OPT)
# the report counts FLOPs and parameters its own way: its lines are another unit, not ours
HUNYUAN_UNITS = "Hunyuan-Large report (its own C and N, not converted)"
HUNYUAN_SHORT = "Hunyuan-Large (its own units)"
METHOD_MARKERS = {"parametric": "D", "isoflop": "s", "envelope": "^"}
METHOD_COLOURS = {
    "parametric": OKABE_ITO[3],
    "isoflop": OKABE_ITO[0],
    "envelope": OKABE_ITO[2],
    "naive": OKABE_ITO[4],
}
REFERENCE_COLOUR = OKABE_ITO[1]


def _log_axes(ax, x: bool = True, y: bool = False) -> None:
    if x:
        ax.set_xscale("log")
    if y:
        ax.set_yscale("log")


def _run_facts(points: pd.DataFrame, runs: pd.DataFrame | None) -> pd.DataFrame:
    """Points (run_id, …) with each run's tokens and FLOPs when the runs table is at hand."""
    if runs is None or "run_id" not in points:
        return points.assign(tokens=np.nan, flops=np.nan)
    facts = runs[["run_id", "tokens", "flops"]].drop_duplicates("run_id")
    return points.drop(columns=["tokens", "flops"], errors="ignore").merge(
        facts, on="run_id", how="left"
    )


@styled
def isoflop_curves(fit: IsoflopFit, runs: pd.DataFrame | None = None) -> Figure:
    """Loss against N per budget: each size's mean over seeds (error bar: their standard
    deviation), the budget's fitted curve as fitting/ drew it, and its optimum (★, hollow
    at an edge of the grid). Colour is the budget, with a colour bar."""
    fig, (ax,) = figure(width=6.2, height=4.0)
    budgets = fit.budgets["budget"].to_numpy(float)
    norm = log_norm(budgets)
    points = _run_facts(fit.points, runs) if len(fit.points) else fit.points
    for row in fit.budgets.itertuples():
        colour = BUDGET_CMAP(norm(row.budget))
        curve = fit.curves.get(float(row.budget))
        if curve is not None:
            x, y = curve
            ax.plot(np.exp(x), y, color=colour, lw=1.1, zorder=2)
        mine = points[points["budget"] == row.budget] if len(points) else points
        for used, group in mine.groupby(mine["used"].astype(bool)) if len(mine) else ():
            by_size = group.groupby("n_active")
            mean = by_size["loss"].mean()
            spread = by_size["loss"].std().fillna(0.0)
            face = colour if used else "white"
            ax.errorbar(mean.index, mean, yerr=spread.where(by_size.size() > 1, 0.0),
                        fmt="none", ecolor=colour, elinewidth=0.9, zorder=3)  # fmt: skip
            dots = ax.scatter(mean.index, mean, s=24, facecolors=face, edgecolors=colour,
                              linewidths=1.0, zorder=4)  # fmt: skip
            labels = []
            for n, seeds in by_size:
                words = " + ".join(seeds["run_id"].astype(str))
                extra = f"mean of {len(seeds)} seeds" if len(seeds) > 1 else ""
                labels.append(run_label(words, n, seeds["tokens"].mean(), seeds["flops"].mean(),
                                        seeds["loss"].mean(), extra))  # fmt: skip
            hover(fig, dots, labels)
        if np.isfinite(row.n_opt):
            ax.scatter([row.n_opt], [row.loss_opt], marker="*", s=150, zorder=5, linewidths=0.8,
                       facecolors="white" if row.at_edge else colour, edgecolors="black")  # fmt: skip
    _log_axes(ax)
    ax.set_xlabel(N_LABEL)
    ax.set_ylabel(LOSS_LABEL)
    shape = fit.shape or fit.method
    how = f"{shape}, chosen by held-out error" if fit.method == "auto" else shape
    ax.set_title(f"isoFLOP curves ({how} fit per budget)")
    colour_bar(fig, ax, BUDGET_CMAP, norm, C_LABEL)
    legend_below(fig, ax, ncol=4, handles=[
        Line2D([], [], ls="", marker="o", color="grey", label="run (mean ± s.d. over seeds)"),
        Line2D([], [], ls="", marker="o", mfc="white", color="grey", label="not used by the fit"),
        Line2D([], [], ls="", marker="*", ms=10, mfc="grey", mec="black", label="optimum"),
        Line2D([], [], ls="", marker="*", ms=10, mfc="white", mec="black", label="optimum at a grid edge"),
    ])  # fmt: skip
    return fig


def _band(ax, law: PowerLaw, grid: np.ndarray, colour, label: str) -> None:
    ax.plot(grid, law(grid), color=colour, lw=1.3, label=label)
    if law.samples is not None and len(law.samples) > 1:
        predictions = np.exp(law.samples[:, :1] + law.samples[:, 1:2] * np.log(grid)[None, :])
        low, high = np.percentile(predictions, [2.5, 97.5], axis=0)
        ax.fill_between(grid, low, high, color=colour, alpha=0.18, lw=0, label="95% bootstrap band")


def _law_text(law: PowerLaw) -> str:
    return rf"{sci(law.coef)}$\,\cdot\,C^{{{law.exponent:.3f}}}$"


@styled
def optimal_scaling(
    fit: IsoflopFit,
    target_flops: float,
    hunyuan_reference: bool = False,
    predictions: dict[str, Prediction] | None = None,
) -> Figure:
    """N_opt and D_opt against C. Left: the isoFLOP optima over the sweep with the fitted power
    law and its 95% band. Right, on its own axes so that the sweep is not squeezed into a corner:
    the law extrapolated to the target, every method's prediction there with its interval, and
    optionally the Hunyuan-Large report's laws (in its own units)."""
    fig, axes = figure(2, 2, width=4.6, height=3.2)
    usable = fit.interior
    budgets = usable["budget"].to_numpy(float)
    near = np.geomspace(budgets.min() / 1.5, budgets.max() * 1.5, 100)
    # the right-hand panels reach the target, not the Hunyuan-Large budget (1e24 FLOPs), which
    # would squeeze everything of ours into a corner; its marker is drawn only when in range
    far = np.geomspace(budgets.min() / 1.5, target_flops * 3, 200)
    hunyuan_in_range = far[0] <= HUNYUAN_TARGET[0] <= far[-1]
    rows = (
        (fit.n_law, "n_opt", "optimal N (activated parameters)", HUNYUAN_N_LAW, HUNYUAN_TARGET[1]),
        (fit.d_law, "d_opt", "optimal D (tokens)", HUNYUAN_D_LAW, HUNYUAN_TARGET[2]),
    )
    for (sweep_ax, far_ax), (law, column, name, reference, ref_value) in zip(
        (axes[:2], axes[2:]), rows, strict=True
    ):
        for ax, grid in ((sweep_ax, near), (far_ax, far)):
            dots = ax.scatter(budgets, usable[column], color="black", s=18, zorder=4,
                              label="isoFLOP optima")  # fmt: skip
            hover(fig, dots, [
                f"budget C = {r.budget:.4g} FLOPs · optimal N = {r.n_opt:.4g} · D = {r.d_opt:.4g} tokens · loss {r.loss_opt:.4g} nats/token"
                for r in usable.itertuples()
            ])  # fmt: skip
            _band(ax, law, grid, OKABE_ITO[0], f"fit {_law_text(law)}")
            _log_axes(ax, y=True)
            ax.set_ylabel(name)
        for i, (method, p) in enumerate((predictions or {}).items()):
            value, interval = getattr(p, column), getattr(p, f"{column}_interval")
            # a percentile interval need not hold its point (a skewed bootstrap): clip at 0
            error = (
                None
                if not interval
                else [[max(0.0, value - interval[0])], [max(0.0, interval[1] - value)]]
            )
            far_ax.errorbar([target_flops * (1.25**i)], [value], yerr=error,
                            fmt=METHOD_MARKERS.get(method, "o"), ms=5,
                            color=METHOD_COLOURS.get(method, OKABE_ITO[4 + i % 3]), zorder=5,
                            label=f"{method} prediction (95% interval)")  # fmt: skip
        if hunyuan_reference:
            far_ax.plot(
                far, reference(far), color=REFERENCE_COLOUR, ls="--", lw=1, label=HUNYUAN_SHORT
            )
            if hunyuan_in_range:
                far_ax.scatter([HUNYUAN_TARGET[0]], [ref_value], marker="x", color=REFERENCE_COLOUR, zorder=5)  # fmt: skip
        far_ax.axvline(target_flops, color="grey", lw=0.8, ls=":")
        sweep_ax.legend(loc="upper left", handles=sweep_ax.get_legend_handles_labels()[0][1:2])
    axes[0].set_title("over the sweep")
    axes[1].set_title(f"extrapolated to the target C = {sci(target_flops)} FLOPs (dotted)")
    legend_below(fig, axes[1], ncol=3)
    for ax in axes[2:]:
        ax.set_xlabel(C_LABEL)
    return fig


@styled
def loss_curves(
    curves: pd.DataFrame, runs: pd.DataFrame, envelope: EnvelopeFit | None = None
) -> Figure:
    """Every run's loss against the FLOPs spent so far, coloured by N (colour bar); the end of
    each run is a point that names it; and the Approach 1 envelope as the lowest loss any run
    had reached by C (so it never rises)."""
    fig, (ax,) = figure(width=6.2, height=4.0)
    norm = log_norm(runs["n_active"])
    owners = runs[["run_id", "n_active", "status"]]
    if "trunk_id" in runs:  # a WSD trunk's plateau, drawn as its own curve under its branches
        trunks = runs[runs["trunk_id"].fillna("").astype(bool)].drop_duplicates("trunk_id")
        owners = pd.concat(
            [owners, trunks[["trunk_id", "n_active"]].rename(columns={"trunk_id": "run_id"})
             .assign(status=RunStatus.COMPLETED.value)], ignore_index=True,
        )  # fmt: skip
    merged = curves.merge(owners, on="run_id")
    loss = (
        "eval_loss"
        if merged["eval_loss"].notna().sum() > 2 * merged["run_id"].nunique()
        else "train_loss"
    )
    ends, labels = [], []
    for run_id, curve in merged.groupby("run_id"):
        curve = curve.dropna(subset=[loss])
        if curve.empty:
            continue
        colour = SIZE_CMAP(norm(curve["n_active"].iloc[0]))
        finished = curve["status"].iloc[0] == RunStatus.COMPLETED
        ax.plot(curve["flops"], curve[loss], color=colour, lw=0.8, alpha=0.85,
                ls="-" if finished else ":")  # fmt: skip
        last = curve.iloc[-1]
        ends.append((last["flops"], last[loss], colour))
        labels.append(run_label(run_id, last["n_active"], last["tokens"], last["flops"], last[loss],
                                "" if finished else f"status {curve['status'].iloc[0]}"))  # fmt: skip
    if ends:
        x, y, colours = zip(*ends, strict=True)
        dots = ax.scatter(x, y, c=list(colours), s=12, zorder=4, edgecolors="white", linewidths=0.4)
        hover(fig, dots, labels)
    if envelope is not None and len(envelope.levels):
        levels = envelope.levels.sort_values("flops")
        ax.step(levels["flops"], np.minimum.accumulate(levels["loss"].to_numpy()), where="post",
                color="black", lw=1.6, label="envelope: lowest loss reached by C (Approach 1, unannealed)")  # fmt: skip
        ax.legend(loc="upper right")
    colour_bar(fig, ax, SIZE_CMAP, norm, N_LABEL)
    _log_axes(ax)
    ax.set_xlabel("compute spent so far (FLOPs)")
    ax.set_ylabel(f"{'held-out' if loss == 'eval_loss' else 'training'} loss (nats/token)")
    ax.set_title("loss curves (dotted: run not completed)")
    return fig


@styled
def critical_batch(curves: pd.DataFrame, runs: pd.DataFrame, law: CriticalBatchFit) -> Figure:
    """Every logged point of every run's gradient noise scale against its training loss,
    coloured by N, with the fitted B_crit(L), its 95% band and the runs' batch."""
    fig, (ax,) = figure(width=6.2, height=4.0)
    owners = runs[["run_id", "n_active"]]
    if "trunk_id" in runs:  # a WSD trunk's points are its size's
        trunks = runs[runs["trunk_id"].fillna("").astype(bool)].drop_duplicates("trunk_id")
        owners = pd.concat(
            [owners, trunks[["trunk_id", "n_active"]].rename(columns={"trunk_id": "run_id"})]
        )
    points = noise_points(curves).merge(owners, on="run_id")
    norm = log_norm(runs["n_active"])
    ax.scatter(points["loss"], points["grad_noise_scale"], c=SIZE_CMAP(norm(points["n_active"])),
               s=5, alpha=0.6, lw=0)  # fmt: skip
    grid = np.geomspace(points["loss"].min(), points["loss"].max(), 100)
    _band(
        ax,
        law.law,
        grid,
        "black",
        rf"$B_{{crit}}(L) = ${sci(law.b_star)}$\,L^{{-1/{law.alpha_b:.3f}}}$",
    )
    if "batch_tokens" in runs:
        for batch in sorted(runs["batch_tokens"].dropna().unique()):
            ax.axhline(batch, color="grey", lw=0.8, ls="--")
        ax.plot([], [], color="grey", lw=0.8, ls="--", label="the runs' batch (tokens)")
    colour_bar(fig, ax, SIZE_CMAP, norm, N_LABEL)
    _log_axes(ax, x=True, y=True)
    # a loss spans under a decade: label round values, not the log axis's few decades
    low, high = points["loss"].min(), points["loss"].max()
    ticks = [v for v in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if low <= v <= high]
    ax.set_xticks(ticks, labels=[f"{v:g}" for v in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training loss (nats/token)")
    ax.set_ylabel("gradient noise scale (tokens)")
    ax.set_title("the critical batch: noise scale against loss (McCandlish et al. 2018)")
    ax.legend(loc="upper right")
    return fig


@styled
def inference_sizing(curve: pd.DataFrame, n_opt: float, budget_flops: float) -> Figure:
    """The inference-aware model (Sardana et al. 2024) against the lifetime inference tokens:
    its N (left) and training + inference FLOPs beside the compute-optimal model's (right),
    both at the compute-optimal model's loss."""
    fig, (left, right) = figure(ncols=2, width=8.4, height=3.4)
    shown = curve[curve["inference_tokens"] > 0]
    left.plot(shown["inference_tokens"], shown["n_active"], "o-", color="C0", ms=3,
              label="least training + inference FLOPs")  # fmt: skip
    left.axhline(
        n_opt, color="black", lw=1, ls="--", label=f"compute-optimal at C = {sci(budget_flops)}"
    )
    left.set_ylabel(N_LABEL)
    right.plot(shown["inference_tokens"], shown["total_flops"], "o-", color="C0", ms=3,
               label="inference-aware model")  # fmt: skip
    right.plot(shown["inference_tokens"], shown["optimal_total_flops"], color="black", lw=1,
               ls="--", label="compute-optimal model")  # fmt: skip
    right.set_ylabel("training + inference FLOPs")
    for ax in (left, right):
        _log_axes(ax, x=True, y=True)
        ax.set_xlabel("lifetime inference tokens")
        ax.legend(loc="best")
    left.set_title("the model to train")
    right.set_title("what it costs, at equal loss")
    return fig


@styled
def compute_law(runs: pd.DataFrame, law: ComputeLaw, law_time: ComputeLaw | None = None) -> Figure:
    """Training FLOPs per token (C/D) against N: the exact count per run, the fitted line(s),
    and the 6·N and Hunyuan-Large references, the axes kept to the data."""
    fig, (ax,) = figure(width=6.2, height=4.0)
    n = runs["n_active"].to_numpy(float)
    grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 100)
    ax.plot(grid, law.flops_per_token(grid), color=OKABE_ITO[0], lw=1.3,
            label=f"fit: {law.a:.2f}·N + {sci(law.b)}")  # fmt: skip
    shown = [runs["flops_per_token"].to_numpy(float), law.flops_per_token(grid)]
    dots = ax.scatter(n, runs["flops_per_token"], color="black", s=16, zorder=4,
                      label="exact count per run")  # fmt: skip
    hover(fig, dots, [
        run_label(r.run_id, r.n_active, r.tokens, r.flops, r.final_loss, f"C/D = {r.flops_per_token:.4g} FLOPs/token")
        for r in runs.itertuples()
    ])  # fmt: skip
    if law_time is not None:
        per_token = (runs["train_s"] / runs["tokens"] * runs["peak_flops"]).to_numpy(float)
        ax.scatter(n, per_token, color=OKABE_ITO[2], s=16, marker="s", label="measured: s/token × peak FLOP/s")  # fmt: skip
        ax.plot(grid, law_time.flops_per_token(grid), color=OKABE_ITO[2], lw=1.1,
                label=f"time fit: {law_time.a:.2f}·N + {sci(law_time.b)}")  # fmt: skip
        shown.append(per_token)
    ax.plot(grid, DENSE_A * grid, color="grey", ls=":", label="6·N (dense rule)")
    low = min(np.nanmin(v) for v in shown) / 1.6
    high = max(np.nanmax(v) for v in shown) * 1.6
    hunyuan = HUNYUAN_COMPUTE_A * grid + HUNYUAN_COMPUTE_B
    above = hunyuan.min() > high
    ax.plot(grid, hunyuan, color=REFERENCE_COLOUR, ls="--",
            label=f"{HUNYUAN_SHORT}: {HUNYUAN_COMPUTE_A}·N + {sci(HUNYUAN_COMPUTE_B)}"
            + (", above this range" if above else ""))  # fmt: skip
    _log_axes(ax, y=True)
    ax.set_ylim(low, high)
    ax.set_xlabel(N_LABEL)
    ax.set_ylabel("training FLOPs per token C/D")
    ax.set_title("the compute law C = (a·N + b)·D")
    legend_below(fig, ax)
    return fig


@styled
def parametric(
    fit: ParametricFit,
    table: pd.DataFrame,
    compute_law: ComputeLaw | None = None,
) -> Figure:
    """Left: iso-loss contours of the fitted L(N, D), the runs coloured by their loss on the
    same scale (colour bar), and the efficient frontier under the compute law. Right: the
    fit's residuals against C."""
    fig, (ax, res) = figure(1, 2, width=4.9, height=3.9)
    n, d = table["n_active"].to_numpy(float), table["tokens"].to_numpy(float)
    observed = table["final_loss"].to_numpy(float)
    ng = np.geomspace(n.min() / 3, n.max() * 3, 120)
    dg = np.geomspace(d.min() / 3, d.max() * 3, 120)
    nn, dd = np.meshgrid(ng, dg)
    surface = fit.loss(nn, dd)
    levels = np.unique(np.quantile(surface, np.linspace(0.02, 0.98, 12)))
    norm = plt.Normalize(min(levels.min(), observed.min()), max(levels.max(), observed.max()))
    contour = ax.contour(nn, dd, surface, levels=levels, cmap=LOSS_CMAP, norm=norm, linewidths=0.8)
    ax.clabel(contour, fontsize=6, fmt="%.2f")
    law = compute_law or DEFAULT_LAW
    spent = law.flops_per_token(n) * d
    budgets = np.geomspace(spent.min(), spent.max(), 30)
    frontier = [fit.optimal(c, law) for c in budgets]
    ax.plot([f["n_opt"] for f in frontier], [f["d_opt"] for f in frontier], color=OKABE_ITO[0],
            lw=2, label=f"efficient frontier under C = ({law.a:.3g}·N + {sci(law.b)})·D")  # fmt: skip
    dots = ax.scatter(n, d, c=observed, cmap=LOSS_CMAP, norm=norm, s=16, edgecolors="black",
                      linewidths=0.3, zorder=4)  # fmt: skip
    ids = table["run_id"] if "run_id" in table else pd.Series(range(len(table)))
    labels = [
        run_label(i, a, b, c, y) for i, a, b, c, y in zip(ids, n, d, spent, observed, strict=True)
    ]
    hover(fig, dots, labels)
    colour_bar(fig, ax, LOSS_CMAP, norm, "loss (nats/token)")
    _log_axes(ax, y=True)
    ax.set_xlim(ng[0], ng[-1])
    ax.set_ylim(dg[0], dg[-1])
    ax.set_xlabel(N_LABEL)
    ax.set_ylabel(D_LABEL)
    ax.set_title(
        rf"$L = {fit.E:.3f} + A/N^{{{fit.alpha:.3f}}} + B/D^{{{fit.beta:.3f}}}$"
        f"  (A = {sci(fit.A)}, B = {sci(fit.B)})"
    )
    ax.legend(loc="lower left")
    residual = np.log(observed) - np.log(fit.loss(n, d))
    res_dots = res.scatter(spent, residual, s=14, c=n, cmap=SIZE_CMAP, norm=log_norm(n),
                           edgecolors="black", linewidths=0.3)  # fmt: skip
    hover(
        fig,
        res_dots,
        [f"{label} · residual {r:+.4f}" for label, r in zip(labels, residual, strict=True)],
    )
    colour_bar(fig, res, SIZE_CMAP, log_norm(n), N_LABEL)
    res.axhline(0, color="grey", lw=0.8)
    _log_axes(res)
    res.set_xlabel(C_LABEL)
    res.set_ylabel("log(loss) − log(fit)")
    res.set_title("residuals")
    return fig


@styled
def routing_health(
    routing: pd.DataFrame,
    run_id: str,
    runs: pd.DataFrame,
    curves: pd.DataFrame | None = None,
) -> Figure:
    """Left: one run's expert load per layer over training (busiest and quietest expert, as a
    multiple of the balanced load), the run named with its N and budget. Right: every run at a
    glance, its busiest expert's load over the second half of training against N, coloured by
    budget."""
    fig, (ax, every) = figure(1, 2, width=4.9, height=3.6)
    n_experts = routing["expert"].nunique()
    layers = sorted(routing["layer"].unique())
    for i, layer in enumerate(layers):
        by_step = routing[routing["layer"] == layer].groupby("step")["fraction"]
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        ax.plot(
            by_step.max().index,
            by_step.max() * n_experts,
            color=colour,
            label=f"layer {layer}: busiest",
        )
        ax.plot(by_step.min().index, by_step.min() * n_experts, color=colour, ls=":", label=f"layer {layer}: quietest")  # fmt: skip
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel("expert load / balanced load")
    row = runs.set_index("run_id").loc[run_id]
    ax.set_title(f"run {run_id}: N = {sci(row['n_active'])}, C = {sci(row['budget_flops'])} FLOPs")
    ax.legend(ncol=2, loc="upper right")
    if curves is not None and "max_expert_load" in curves and len(curves):
        late = curves[curves["step"] >= curves.groupby("run_id")["step"].transform("max") / 2]
        load = late.groupby("run_id")[["max_expert_load", "dropped_frac"]].mean()
        table = runs.merge(load, left_on="run_id", right_index=True)
        if len(table):
            norm = log_norm(table["budget_flops"])
            dots = every.scatter(table["n_active"], table["max_expert_load"], c=table["budget_flops"],
                                 cmap=BUDGET_CMAP, norm=norm, s=20, edgecolors="black",
                                 linewidths=0.3)  # fmt: skip
            hover(fig, dots, [
                run_label(r.run_id, r.n_active, r.tokens, r.flops, r.final_loss,
                          f"busiest expert {r.max_expert_load:.2f}× balanced, dropped {r.dropped_frac:.1%}")
                for r in table.itertuples()
            ])  # fmt: skip
            colour_bar(fig, every, BUDGET_CMAP, norm, C_LABEL)
    every.axhline(1, color="grey", lw=0.8)
    _log_axes(every)
    every.set_xlabel(N_LABEL)
    every.set_ylabel("busiest expert's load / balanced\n(mean over the second half)")
    every.set_title("every run")
    return fig


@styled
def lr_schedules(curves: pd.DataFrame, runs: pd.DataFrame) -> Figure:
    """The learning rate of every run against its share of training, coloured by N; the
    legend names each peak learning rate and how many runs used it."""
    fig, (ax,) = figure(width=6.2, height=3.6)
    merged = curves.merge(
        runs[["run_id", "n_active", "lr"]].rename(columns={"lr": "peak_lr"}), on="run_id"
    )
    norm = log_norm(runs["n_active"])
    peaks = sorted(merged["peak_lr"].unique())
    styles = dict(zip(peaks, ["-", "--", "-.", ":"] * (len(peaks) // 4 + 1), strict=False))
    for _, curve in merged.groupby("run_id"):
        ax.plot(curve["step"] / curve["step"].max(), curve["lr"], lw=0.9,
                color=SIZE_CMAP(norm(curve["n_active"].iloc[0])), ls=styles[curve["peak_lr"].iloc[0]])  # fmt: skip
    counts = runs.groupby("lr")["run_id"].nunique()
    ax.legend(handles=[
        Line2D([], [], color="grey", ls=styles[p], label=f"peak LR {p:g} ({counts.get(p, 0)} runs)")
        for p in peaks
    ], loc="upper right")  # fmt: skip
    colour_bar(fig, ax, SIZE_CMAP, norm, N_LABEL)
    ax.set_xlabel("share of the run's training steps")
    ax.set_ylabel("learning rate")
    ax.set_title("learning-rate schedules")
    return fig


@styled
def validation(record: dict, runs: pd.DataFrame | None = None) -> Figure:
    """The realised isoFLOP curve at a validation budget (points and the per-budget fit)
    drawn over each method's extrapolated prediction: N_opt with its interval, and the loss.
    With the runs table at hand, hovering a point names its run(s)."""
    fig, (ax,) = figure(width=6.2, height=4.0)
    realised = record["realised"]
    dots = ax.scatter(realised["n_active"], realised["loss"], color="black", s=22, zorder=5,
                      label="validation runs")  # fmt: skip
    mine = pd.DataFrame(columns=["run_id", "n_active", "tokens"])
    if runs is not None and "validation" in runs:
        at = runs["validation"].astype(bool) & np.isclose(
            runs["budget_flops"], record["budget"], rtol=1e-9
        )
        mine = runs[at & (runs["status"] == RunStatus.COMPLETED)]
    labels = []
    for n, y in zip(realised["n_active"], realised["loss"], strict=True):
        seeds = mine[mine["n_active"] == n]
        ids = " + ".join(seeds["run_id"].astype(str)) or "(not in the runs table)"
        labels.append(
            run_label(ids, n, seeds["tokens"].mean() if len(seeds) else np.nan, record["budget"], y)
        )
    hover(fig, dots, labels)
    ax.plot(np.exp(realised["curve_log_n"]), realised["curve_loss"], color="black", lw=1)
    aside = [n in realised.get("set_aside", ()) for n in realised["n_active"]]
    if any(aside):  # drawn hollow over its dot: in the record, not in the realised curve
        ax.scatter(np.array(realised["n_active"])[aside], np.array(realised["loss"])[aside],
                   s=60, facecolors="white", edgecolors="black", zorder=6,
                   label="set aside (5%+ above the others' curve)")  # fmt: skip
    for i, score in enumerate(record["scores"]):
        colour = METHOD_COLOURS.get(score["method"], OKABE_ITO[4 + i % 3])
        interval = score.get("n_opt_interval")
        if interval:
            ax.axvspan(*interval, color=colour, alpha=0.12, lw=0)
        ax.axvline(score["n_opt_predicted"], color=colour, ls="--", lw=1.2,
                   label=f"{score['method']}: predicted N = {sci(score['n_opt_predicted'])}")  # fmt: skip
        if score.get("loss_predicted") is not None:
            ax.axhline(score["loss_predicted"], color=colour, ls=":", lw=1)
    best = record["scores"][0]
    ax.scatter([best["n_opt_realised"]], [best["loss_realised"]], marker="*", s=170,
               color="black", zorder=6, label=f"realised optimum N = {sci(best['n_opt_realised'])}")  # fmt: skip
    _log_axes(ax)
    ax.set_xlabel(N_LABEL)
    ax.set_ylabel(LOSS_LABEL)
    ax.set_title(
        f"validation at C = {sci(record['budget'])} FLOPs\n"
        "predicted N (dashed; band 95%) and loss (dotted) against the runs",
        fontsize="medium",
    )
    legend_below(fig, ax)
    return fig
