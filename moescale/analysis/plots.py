"""The figures of a sweep and its fits (matplotlib, Agg). Each function takes tables and fit
records and returns a Figure; nothing here fits anything."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from moescale.fitting.compute_law import DEFAULT_LAW, ComputeLaw  # noqa: E402
from moescale.fitting.envelope import EnvelopeFit  # noqa: E402
from moescale.fitting.isoflop import IsoflopFit  # noqa: E402
from moescale.fitting.parametric import ParametricFit  # noqa: E402
from moescale.fitting.powerlaw import PowerLaw  # noqa: E402
from moescale.published import (  # noqa: E402
    DENSE_A,
    HUNYUAN_COMPUTE_A,
    HUNYUAN_COMPUTE_B,
    HUNYUAN_D_OPT,
    HUNYUAN_N_OPT,
    HUNYUAN_TARGET,
)

HUNYUAN_N_LAW = PowerLaw(*HUNYUAN_N_OPT)
HUNYUAN_D_LAW = PowerLaw(*HUNYUAN_D_OPT)
# the report counts FLOPs and parameters its own way: its lines are another unit, not ours
HUNYUAN_UNITS = "Hunyuan-Large report, its own C and N (not converted)"


def _figure(ncols: int = 1, width: float = 6.4, height: float = 4.2) -> tuple[Figure, list]:
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), constrained_layout=True)
    return fig, list(np.atleast_1d(axes))


def _colours(n: int):
    return plt.get_cmap("viridis")(np.linspace(0.1, 0.9, max(n, 1)))


def isoflop_curves(fit: IsoflopFit) -> Figure:
    """Loss against n_active per budget, each budget's fitted curve as fitting/ drew it (over
    the sizes it used), and the optima (hollow at an edge)."""
    fig, (ax,) = _figure()
    points = fit.points
    for colour, row in zip(_colours(len(fit.budgets)), fit.budgets.itertuples(), strict=True):
        mine = points[points["budget"] == row.budget] if len(points) else points
        if len(mine):
            used = mine["used"].astype(bool)
            ax.scatter(
                mine.loc[used, "n_active"],
                mine.loc[used, "loss"],
                color=colour,
                s=18,
                label=f"C = {row.budget:.2g}",
            )
            ax.scatter(
                mine.loc[~used, "n_active"],
                mine.loc[~used, "loss"],
                facecolors="none",
                edgecolors=colour,
                s=18,
            )
        curve = fit.curves.get(float(row.budget))
        if curve is not None:
            x, y = curve
            ax.plot(np.exp(x), y, color=colour, lw=1)
        if np.isfinite(row.n_opt):
            style = (
                dict(facecolors="none", edgecolors=colour) if row.at_edge else dict(color=colour)
            )
            ax.scatter([row.n_opt], [row.loss_opt], marker="*", s=140, zorder=5, **style)
    ax.set_xscale("log")
    ax.set_xlabel("activated parameters N")
    ax.set_ylabel("final held-out loss (nats/token)")
    ax.set_title(f"isoFLOP curves, {fit.method} per budget (★ optimum; hollow: not used)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def _band(ax, law: PowerLaw, grid: np.ndarray, colour, label: str) -> None:
    ax.plot(grid, law(grid), color=colour, label=label)
    if law.samples is not None and len(law.samples) > 1:
        predictions = np.exp(law.samples[:, :1] + law.samples[:, 1:2] * np.log(grid)[None, :])
        low, high = np.percentile(predictions, [2.5, 97.5], axis=0)
        ax.fill_between(grid, low, high, color=colour, alpha=0.2, lw=0)


def optimal_scaling(
    fit: IsoflopFit,
    target_flops: float,
    hunyuan_reference: bool = False,
    predictions: dict | None = None,
) -> Figure:
    """N_opt and D_opt against C: the isoFLOP optima, the N_opt power law with its 95%
    bootstrap band extrapolated to the target, and every method's prediction there with its
    interval (D from the compute law); optionally the Hunyuan-Large report's laws, in its units."""
    fig, axes = _figure(2, width=5.6)
    usable = fit.interior
    low = min(usable["budget"].min(), target_flops) / 2
    high = (
        max(usable["budget"].max(), target_flops, HUNYUAN_TARGET[0] if hunyuan_reference else 0) * 2
    )
    grid = np.logspace(np.log10(low), np.log10(high), 200)
    markers = {"parametric": "D", "isoflop": "s"}
    for ax, law, column, name, reference, ref_value in (
        (
            axes[0],
            fit.n_law,
            "n_opt",
            "N_opt (activated parameters)",
            HUNYUAN_N_LAW,
            HUNYUAN_TARGET[1],
        ),
        (axes[1], fit.d_law, "d_opt", "D_opt (tokens)", HUNYUAN_D_LAW, HUNYUAN_TARGET[2]),
    ):
        ax.scatter(
            usable["budget"], usable[column], color="k", s=20, zorder=4, label="isoFLOP optima"
        )
        label = f"{law.coef:.3g}·C^{law.exponent:.3f}" + (
            "" if column == "n_opt" else " (display only)"
        )
        _band(ax, law, grid, "C0", label)
        for i, (method, p) in enumerate((predictions or {}).items()):
            value, interval = p[column], p.get(f"{column}_interval")
            error = None if not interval else [[value - interval[0]], [interval[1] - value]]
            ax.errorbar(
                [target_flops * (1.15**i)],
                [value],
                yerr=error,
                fmt=markers.get(method, "o"),
                color=f"C{3 + i}",
                capsize=3,
                zorder=5,
                label=f"{method}: {value:.3g}",
            )
        if hunyuan_reference:
            ax.plot(grid, reference(grid), color="C1", ls="--", lw=1, label=HUNYUAN_UNITS)
            ax.scatter([HUNYUAN_TARGET[0]], [ref_value], marker="x", color="C1", zorder=5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training compute C (FLOPs)")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    fig.suptitle(f"compute-optimal allocation, extrapolated to C = {target_flops:.3g} FLOPs")
    return fig


def loss_curves(
    curves: pd.DataFrame, runs: pd.DataFrame, envelope: EnvelopeFit | None = None
) -> Figure:
    """Every run's loss against FLOPs, coloured by size, with the Approach 1 envelope."""
    fig, (ax,) = _figure()
    sizes = np.sort(runs["n_active"].unique())
    norm = matplotlib.colors.LogNorm(sizes.min(), sizes.max()) if len(sizes) > 1 else None
    cmap = plt.get_cmap("viridis")
    merged = curves.merge(runs[["run_id", "n_active", "status"]], on="run_id")
    loss = (
        "eval_loss"
        if merged["eval_loss"].notna().sum() > 2 * merged["run_id"].nunique()
        else "train_loss"
    )
    for _, curve in merged.groupby("run_id"):
        curve = curve.dropna(subset=[loss])
        colour = cmap(norm(curve["n_active"].iloc[0])) if norm else "C0"
        ax.plot(
            curve["flops"],
            curve[loss],
            color=colour,
            lw=0.8,
            alpha=0.8,
            ls="-" if curve["status"].iloc[0] == "completed" else ":",
        )
    if envelope is not None:
        ax.plot(
            envelope.levels["flops"],
            envelope.levels["loss"],
            color="C3",
            lw=2,
            label="envelope (unannealed points: a biased reading)",
        )
        ax.legend(fontsize=8)
    if norm:
        fig.colorbar(
            matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap),
            ax=ax,
            label="activated parameters N",
        )
    ax.set_xscale("log")
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel(f"{loss.replace('_', ' ')} (nats/token)")
    ax.set_title("loss curves (dotted: not completed)")
    return fig


def compute_law(runs: pd.DataFrame, law: ComputeLaw, law_time: ComputeLaw | None = None) -> Figure:
    """flops_per_token against n_active with the fitted line(s) and the 6N and 9.59N + 2.3e8 references."""
    fig, (ax,) = _figure()
    n = runs["n_active"].to_numpy(float)
    grid = np.logspace(np.log10(n.min() / 1.5), np.log10(n.max() * 1.5), 100)
    ax.scatter(n, runs["flops_per_token"], color="k", s=16, zorder=4, label="exact count per run")
    ax.plot(grid, law.flops_per_token(grid), color="C0", label=f"fit: {law.a:.2f}·N + {law.b:.3g}")
    if law_time is not None:
        per_token = runs["train_s"] / runs["tokens"] * runs["peak_flops"]
        ax.scatter(n, per_token, color="C2", s=16, marker="s", label="measured time × peak")
        ax.plot(
            grid,
            law_time.flops_per_token(grid),
            color="C2",
            label=f"time fit: {law_time.a:.2f}·N + {law_time.b:.3g}",
        )
    ax.plot(grid, DENSE_A * grid, color="grey", ls=":", label="6·N (dense rule)")
    ax.plot(
        grid,
        HUNYUAN_COMPUTE_A * grid + HUNYUAN_COMPUTE_B,
        color="C1",
        ls="--",
        label=f"{HUNYUAN_COMPUTE_A}·N + {HUNYUAN_COMPUTE_B:.2g} ({HUNYUAN_UNITS})",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("activated parameters N")
    ax.set_ylabel("training FLOPs per token")
    ax.set_title("the compute law C ≈ a·N·D + b·D")
    ax.legend(fontsize=7)
    return fig


def parametric(
    fit: ParametricFit,
    table: pd.DataFrame,
    n_col: str = "n_active",
    d_col: str = "tokens",
    loss_col: str = "final_loss",
    compute_law: ComputeLaw | None = None,
) -> Figure:
    """Iso-loss contours of L(N, D) with the efficient frontier, and the fit's residuals."""
    fig, (ax, res) = _figure(2, width=5.6)
    n, d = table[n_col].to_numpy(float), table[d_col].to_numpy(float)
    ng = np.logspace(np.log10(n.min() / 3), np.log10(n.max() * 3), 120)
    dg = np.logspace(np.log10(d.min() / 3), np.log10(d.max() * 3), 120)
    nn, dd = np.meshgrid(ng, dg)
    levels = np.quantile(fit.loss(nn, dd), np.linspace(0.02, 0.98, 12))
    contour = ax.contour(
        nn, dd, fit.loss(nn, dd), levels=np.unique(levels), cmap="viridis", linewidths=0.8
    )
    ax.clabel(contour, fontsize=6, fmt="%.2f")
    law = compute_law or DEFAULT_LAW
    spent = law.flops_per_token(n) * d
    budgets = np.logspace(np.log10(spent.min()), np.log10(spent.max()), 30)
    frontier = [fit.optimal(c, law) for c in budgets]
    ax.plot(
        [f["n_opt"] for f in frontier],
        [f["d_opt"] for f in frontier],
        color="C3",
        lw=2,
        label=f"efficient frontier (C = {law.a:.3g}·N·D + {law.b:.3g}·D)",
    )
    ax.scatter(n, d, c=table[loss_col], cmap="viridis", s=14, edgecolors="k", linewidths=0.3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(ng[0], ng[-1])
    ax.set_ylim(dg[0], dg[-1])
    ax.set_xlabel("N")
    ax.set_ylabel("D (tokens)")
    ax.set_title(
        f"L = {fit.E:.3f} + {fit.A:.3g}/N^{fit.alpha:.3f} + {fit.B:.3g}/D^{fit.beta:.3f}",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    residual = np.log(table[loss_col].to_numpy(float)) - np.log(fit.loss(n, d))
    res.scatter(n * d * 6, residual, s=14, color="k")
    res.axhline(0, color="grey", lw=0.8)
    res.set_xscale("log")
    res.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    res.set_xlabel("6·N·D")
    res.set_ylabel("log loss − log fit")
    res.set_title("residuals")
    return fig


def routing_health(routing: pd.DataFrame, run_id: str) -> Figure:
    """Per-layer expert load over training for one run: each layer's busiest expert's share
    relative to a balanced share (1 = balanced), and its quietest."""
    fig, (ax,) = _figure()
    n_experts = routing["expert"].nunique()
    for colour, (layer, group) in zip(
        _colours(routing["layer"].nunique()), routing.groupby("layer"), strict=True
    ):
        by_step = group.groupby("step")["fraction"]
        ax.plot(
            by_step.max().index,
            by_step.max() * n_experts,
            color=colour,
            label=f"layer {layer}: busiest",
        )
        ax.plot(
            by_step.min().index,
            by_step.min() * n_experts,
            color=colour,
            ls=":",
            label=f"layer {layer}: quietest",
        )
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("expert load / balanced load")
    ax.set_title(f"routing health of run {run_id}")
    ax.legend(fontsize=7, ncol=2)
    return fig


def lr_schedules(curves: pd.DataFrame, runs: pd.DataFrame) -> Figure:
    """The learning rate of every run against its share of training."""
    fig, (ax,) = _figure()
    merged = curves.merge(runs[["run_id", "n_active"]], on="run_id")
    sizes = np.sort(merged["n_active"].unique())
    colours = dict(zip(sizes, _colours(len(sizes)), strict=True))
    for _, curve in merged.groupby("run_id"):
        ax.plot(
            curve["step"] / curve["step"].max(),
            curve["lr"],
            color=colours[curve["n_active"].iloc[0]],
            lw=0.8,
        )
    ax.set_xlabel("share of training steps")
    ax.set_ylabel("learning rate")
    ax.set_title("learning-rate schedules")
    return fig


def validation(record: dict) -> Figure:
    """The realised isoFLOP curve at a validation budget (points and the per-budget fit)
    drawn over each method's extrapolated prediction: N_opt with its interval, and the loss."""
    fig, (ax,) = _figure()
    realised = record["realised"]
    ax.scatter(
        realised["n_active"], realised["loss"], color="k", s=22, zorder=5, label="validation runs"
    )
    ax.plot(np.exp(realised["curve_log_n"]), realised["curve_loss"], color="k", lw=1)
    for i, score in enumerate(record["scores"]):
        colour = f"C{i}"
        interval = score.get("n_opt_interval")
        if interval:
            ax.axvspan(*interval, color=colour, alpha=0.12, lw=0)
        ax.axvline(score["n_opt_predicted"], color=colour, ls="--", lw=1.2,
                   label=f"{score['method']}: N_opt {score['n_opt_predicted']:.3g}")  # fmt: skip
        if score.get("loss_predicted") is not None:
            ax.axhline(score["loss_predicted"], color=colour, ls=":", lw=1)
    best = record["scores"][0]
    ax.scatter([best["n_opt_realised"]], [best["loss_realised"]], marker="*", s=160, color="C3",
               zorder=6, label=f"realised optimum {best['n_opt_realised']:.3g}")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("activated parameters N")
    ax.set_ylabel("final held-out loss (nats/token)")
    ax.set_title(
        f"validation at C = {record['budget']:.3g} FLOPs: predicted (dashed, band = 95%) vs realised",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    return fig
