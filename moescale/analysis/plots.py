"""The figures of a sweep and its fits (matplotlib, Agg). Each function takes tables and fit
records and returns a Figure; nothing here fits anything."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from moescale.fitting.compute_law import DENSE_A, HUNYUAN_A, HUNYUAN_B, ComputeLaw  # noqa: E402
from moescale.fitting.envelope import EnvelopeFit  # noqa: E402
from moescale.fitting.isoflop import IsoflopFit  # noqa: E402
from moescale.fitting.parametric import ParametricFit  # noqa: E402
from moescale.fitting.powerlaw import PowerLaw  # noqa: E402

# Hunyuan-Large report §2.3.1: N_opt = 5.9e-3·C^0.5305, D_opt = 3.2·C^0.50; 58.1B / 5.6T at 3.1e24.
HUNYUAN_N_LAW = PowerLaw(5.9e-3, 0.5305)
HUNYUAN_D_LAW = PowerLaw(3.2, 0.50)
HUNYUAN_POINT = (3.1e24, 58.1e9, 5.6e12)


def _figure(ncols: int = 1, width: float = 6.4, height: float = 4.2) -> tuple[Figure, list]:
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), constrained_layout=True)
    return fig, list(np.atleast_1d(axes))


def _colours(n: int):
    return plt.get_cmap("viridis")(np.linspace(0.1, 0.9, max(n, 1)))


def isoflop_curves(runs: pd.DataFrame, fit: IsoflopFit) -> Figure:
    """Loss against n_active per budget, the fitted quadratics, the optima (hollow at an edge)."""
    fig, (ax,) = _figure()
    done = runs[runs["status"] == "completed"] if "status" in runs else runs
    budgets = fit.budgets
    for colour, row in zip(_colours(len(budgets)), budgets.itertuples(), strict=True):
        near = done[
            np.isclose(np.log(done["budget_flops"]), np.log(row.budget_min), atol=0.1)
            | np.isclose(done["budget_flops"], row.budget, rtol=0.1)
        ]
        ax.scatter(
            near["n_active"], near["final_loss"], color=colour, s=18, label=f"C = {row.budget:.2g}"
        )
        curve = fit.curves.get(float(row.budget))
        if curve is not None and fit.method == "parabola":
            x, y = curve
            grid = np.linspace(x.min() - 0.15, x.max() + 0.15, 100)
            ax.plot(np.exp(grid), np.polyval(np.polyfit(x, y, 2), grid), color=colour, lw=1)
        if np.isfinite(row.n_opt):
            style = (
                dict(facecolors="none", edgecolors=colour) if row.at_edge else dict(color=colour)
            )
            ax.scatter([row.n_opt], [row.loss_opt], marker="*", s=140, zorder=5, **style)
    ax.set_xscale("log")
    ax.set_xlabel("activated parameters N")
    ax.set_ylabel("final held-out loss (nats/token)")
    ax.set_title("isoFLOP curves (★ optimum; hollow ★ at an edge, not used)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def _band(ax, law: PowerLaw, grid: np.ndarray, colour, label: str) -> None:
    ax.plot(grid, law(grid), color=colour, label=label)
    if law.samples is not None and len(law.samples) > 1:
        predictions = np.exp(law.samples[:, :1] + law.samples[:, 1:2] * np.log(grid)[None, :])
        low, high = np.percentile(predictions, [2.5, 97.5], axis=0)
        ax.fill_between(grid, low, high, color=colour, alpha=0.2, lw=0)


def optimal_scaling(
    fit: IsoflopFit, target_flops: float, hunyuan_reference: bool = False
) -> Figure:
    """N_opt and D_opt against C: fitted power laws with 95% bootstrap bands, extrapolated to
    the target, the prediction annotated; optionally the Hunyuan-Large report's laws."""
    fig, axes = _figure(2, width=5.6)
    usable = fit.budgets[~fit.budgets["at_edge"] & fit.budgets["n_opt"].notna()]
    low = min(usable["budget"].min(), target_flops) / 2
    high = (
        max(usable["budget"].max(), target_flops, HUNYUAN_POINT[0] if hunyuan_reference else 0) * 2
    )
    grid = np.logspace(np.log10(low), np.log10(high), 200)
    for ax, law, column, name, reference, ref_value in (
        (axes[0], fit.n_law, "n_opt", "N_opt (activated)", HUNYUAN_N_LAW, HUNYUAN_POINT[1]),
        (axes[1], fit.d_law, "d_opt", "D_opt (tokens)", HUNYUAN_D_LAW, HUNYUAN_POINT[2]),
    ):
        ax.scatter(
            usable["budget"], usable[column], color="k", s=20, zorder=4, label="isoFLOP optima"
        )
        _band(ax, law, grid, "C0", f"{law.coef:.3g}·C^{law.exponent:.3f}")
        value = law(target_flops)
        ax.scatter([target_flops], [value], marker="D", color="C3", zorder=5)
        interval = law.interval(target_flops)
        text = f"{value:.3g}" + (f"\n[{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")
        ax.annotate(
            text,
            (target_flops, value),
            textcoords="offset points",
            xytext=(8, -22),
            ha="left",
            fontsize=8,
            color="C3",
        )
        if hunyuan_reference:
            ax.plot(
                grid,
                reference(grid),
                color="C1",
                ls="--",
                lw=1,
                label=f"Hunyuan-Large: {reference.coef:g}·C^{reference.exponent:g}",
            )
            ax.scatter([HUNYUAN_POINT[0]], [ref_value], marker="x", color="C1", zorder=5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    fig.suptitle(f"compute-optimal allocation, extrapolated to C = {target_flops:.3g}")
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
            label="envelope (lowest loss at each C)",
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
        HUNYUAN_A * grid + HUNYUAN_B,
        color="C1",
        ls="--",
        label="9.59·N + 2.3e8 (Hunyuan-Large)",
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
    budgets = np.logspace(np.log10(6 * n.min() * d.min()), np.log10(6 * n.max() * d.max()), 30)
    frontier = [fit.optimal(c) for c in budgets]
    ax.plot(
        [f["n_opt"] for f in frontier],
        [f["d_opt"] for f in frontier],
        color="C3",
        lw=2,
        label="efficient frontier (C = 6ND)",
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
