"""Approach 2, as in the Hunyuan-Large report: per budget, the loss against log N is fitted
and its minimum taken; then N_opt is regressed on the budget as a power law in log space.

The per-budget fit defaults to Akima interpolation (Porian et al. 2024): real isoFLOP curves
are asymmetric in log N, and a parabola over a wide span of sizes puts their minimum in the
wrong place. The parabola (the report's own method) and a parabola on the `n_nearest` sizes
around the lowest loss stay selectable.

D_opt at a budget follows from N_opt and the compute law, D = C/(a·N + b), so that a
prediction spends exactly its budget; the D_opt power law is kept for display only.

An optimum at the edge of a budget's sizes (the lowest loss at the smallest or largest N,
a non-convex quadratic, or a vertex outside the sizes) is flagged, warned about by name and
left out of the power laws. The bootstrap re-runs the per-budget method actually used on
losses perturbed by that sweep's own residuals, and resamples the budgets (resample.py).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

from moescale.errors import UserError
from moescale.fitting.budgets import batch_adjusted_budget, group_budgets
from moescale.fitting.compute_law import ComputeLaw
from moescale.fitting.powerlaw import (
    PowerLaw,
    SaturatingLaw,
    fit_log_linear,
    fit_power_law,
    fit_saturating_params,
    loss_law_from_dict,
)
from moescale.fitting.resample import draw_budgets, resamples_budgets, what_is_resampled
from moescale.results import RunStatus

METHODS = ("akima", "parabola")
DEFAULT_METHOD = "akima"
CURVE_POINTS = 801  # grid on which a budget's fitted curve is evaluated and minimised


class EdgeOptimumWarning(UserWarning):
    """A budget's lowest loss is at the edge of its sizes: its optimum is not bracketed."""


def interior_of(budgets: pd.DataFrame) -> pd.DataFrame:
    """The budgets whose optimum is bracketed by their sizes: the ones the laws use."""
    return budgets[~budgets["at_edge"] & budgets["n_opt"].notna()]


@dataclass(frozen=True)
class IsoflopFit:
    """Per-budget optima and the power laws n_opt = n_coef·C^n_exponent (and d_opt, loss_opt)."""

    # budget, budget_min, n_runs, n_sizes, n_opt, d_opt, loss_opt, at_edge, reason
    budgets: pd.DataFrame
    n_law: PowerLaw
    d_law: PowerLaw
    loss_law: SaturatingLaw | PowerLaw | None = None  # the optimal loss against C
    method: str = DEFAULT_METHOD
    n_nearest: int | None = None
    excluded: tuple[str, ...] = ()
    interval_note: str = ""  # what the bootstrap resampled, or why there is no interval
    # one row per run used: run_id, budget (its group's budget), n_active, loss, used
    points: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False, compare=False)
    # budget → (log N grid, loss grid): the per-budget fit as the method drew it
    curves: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def interior(self) -> pd.DataFrame:
        """The budgets whose optimum is bracketed by their sizes: the ones the laws use."""
        return interior_of(self.budgets)

    @property
    def n_coef(self) -> float:
        return self.n_law.coef

    @property
    def n_exponent(self) -> float:
        return self.n_law.exponent

    @property
    def d_coef(self) -> float:
        return self.d_law.coef

    @property
    def d_exponent(self) -> float:
        return self.d_law.exponent

    @classmethod
    def from_laws(
        cls, n_law: PowerLaw, d_law: PowerLaw, loss_law: PowerLaw | None = None
    ) -> IsoflopFit:
        """A fit from published laws alone (e.g. the Hunyuan-Large report's), for prediction."""
        empty = pd.DataFrame(
            columns=["budget", "n_runs", "n_opt", "d_opt", "loss_opt", "at_edge", "reason"]
        )
        return cls(budgets=empty, n_law=n_law, d_law=d_law, loss_law=loss_law, method="published")

    def predict(self, flops: float, compute_law: ComputeLaw | None = None) -> dict:
        """N_opt, D_opt (and the optimal loss, when fitted) at budget `flops`, with 95%
        intervals. With a compute law, D_opt = C/(a·N_opt + b) sample by sample, so the
        prediction spends exactly `flops`; without one, the D_opt power law."""
        n_opt = float(self.n_law(flops))
        out = {"flops": float(flops), "n_opt": n_opt, "n_opt_interval": self.n_law.interval(flops)}
        if compute_law is None:
            out |= {"d_opt": float(self.d_law(flops)), "d_opt_interval": self.d_law.interval(flops)}
        else:
            out["d_opt"] = float(compute_law.tokens(flops, n_opt))
            low_high = out["n_opt_interval"]  # D falls as N grows: the ends swap
            out["d_opt_interval"] = (
                None
                if low_high is None
                else tuple(float(compute_law.tokens(flops, n)) for n in low_high[::-1])
            )
        if self.loss_law is not None:
            out["loss_opt"] = float(self.loss_law(flops))
            out["loss_opt_interval"] = self.loss_law.interval(flops)
        return out

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "n_nearest": self.n_nearest,
            "n_law": self.n_law.to_dict(),
            "d_law": self.d_law.to_dict(),
            "loss_law": None if self.loss_law is None else self.loss_law.to_dict(),
            "interval_note": self.interval_note,
            "budgets": self.budgets.to_dict(orient="records"),
            "excluded": list(self.excluded),
            "points": self.points.to_dict(orient="list"),
            "curves": [
                {"budget": budget, "log_n": x.tolist(), "loss": y.tolist()}
                for budget, (x, y) in self.curves.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> IsoflopFit:
        return cls(
            budgets=pd.DataFrame(data["budgets"]),
            n_law=PowerLaw.from_dict(data["n_law"]),
            d_law=PowerLaw.from_dict(data["d_law"]),
            loss_law=loss_law_from_dict(data.get("loss_law")),
            method=data["method"],
            n_nearest=data.get("n_nearest"),
            excluded=tuple(data.get("excluded", ())),
            interval_note=data.get("interval_note", ""),
            points=pd.DataFrame(data.get("points", {})),
            curves={
                c["budget"]: (np.asarray(c["log_n"]), np.asarray(c["loss"]))
                for c in data.get("curves", [])
            },
        )


def _vertex(coeffs: np.ndarray) -> np.ndarray:
    """x of the quadratic's vertex for coefficient rows (c2, c1, c0); nan where not convex."""
    c2, c1 = coeffs[..., 0], coeffs[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(c2 > 0, -c1 / (2 * c2), np.nan)


def nearest_sizes(y: np.ndarray, n_nearest: int | None) -> np.ndarray:
    """Indices of the `n_nearest` sizes nearest (in rank) the lowest loss; all if None."""
    if n_nearest is None or len(y) <= n_nearest:
        return np.arange(len(y))
    return np.sort(np.argsort(np.abs(np.arange(len(y)) - np.argmin(y)), kind="stable")[:n_nearest])


def budget_curve(x: np.ndarray, y: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """The per-budget fit evaluated on a grid over the sizes used: (log N grid, loss grid)."""
    grid = np.linspace(x[0], x[-1], CURVE_POINTS)
    if method == "akima":
        return grid, Akima1DInterpolator(x, y)(grid)
    return grid, np.polyval(np.polyfit(x, y, 2), grid)


def _budget_optimum(x: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float, str]:
    """(log n_opt, loss_opt, edge reason or '') for one budget's sorted log sizes and losses
    (already cut to the sizes the method uses)."""
    lowest = int(np.argmin(y))
    if lowest in (0, len(x) - 1):
        side = "smallest" if lowest == 0 else "largest"
        return float(x[lowest]), float(y[lowest]), f"lowest loss at the {side} size"
    if method == "akima":
        grid, values = budget_curve(x, y, method)
        i = int(np.nanargmin(values))
        return float(grid[i]), float(values[i]), ""
    coeffs = np.polyfit(x, y, 2)
    vertex = float(_vertex(coeffs))
    if not np.isfinite(vertex):
        return float(x[lowest]), float(y[lowest]), "quadratic not convex"
    if not x[0] < vertex < x[-1]:
        return vertex, float(np.polyval(coeffs, vertex)), "quadratic minimum outside the sizes"
    return vertex, float(np.polyval(coeffs, vertex)), ""


def _clean(
    table: pd.DataFrame, columns: list[str], status_col: str
) -> tuple[pd.DataFrame, list[str]]:
    excluded = []
    for column in columns:
        if column not in table:
            raise UserError(f"isoFLOP fit: missing column '{column}'")
    if status_col in table:
        bad = table[status_col] != RunStatus.COMPLETED
        for status, count in table.loc[bad, status_col].value_counts().items():
            excluded.append(f"{count} run(s) {status}: not used")
        table = table[~bad]
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise UserError(f"isoFLOP fit: column '{column}' has NaN or non-positive values")
    return table, excluded


@dataclass(frozen=True)
class _Budget:
    """One interior budget's data as the bootstrap needs it: the sizes the method used."""

    x: np.ndarray  # log N of the sizes used
    y: np.ndarray  # their (seed-averaged) losses
    log_d: np.ndarray  # log D of those sizes


def fit_isoflop(
    table: pd.DataFrame,
    n_col: str = "n_active",
    budget_col: str = "budget_flops",
    loss_col: str = "final_loss",
    d_col: str = "tokens",
    method: str = DEFAULT_METHOD,
    bootstrap: int = 0,
    n_nearest: int | None = None,
    min_budgets: int = 3,
    batch_col: str | None = None,
    b_crit: float | None = None,
    status_col: str = "status",
    seed: int = 0,
) -> IsoflopFit:
    """Fit the isoFLOP optima of a table of runs and their power laws in the budget.

    `n_nearest` keeps only that many sizes nearest each budget's lowest loss; `batch_col` with
    `b_crit` regresses on the batch-adjusted budget C_min = C/(1 + B/B_crit) (report §2.3.1).
    Weighted least squares: each budget weighs as many as its runs.
    """
    if method not in METHODS:
        raise UserError(f"isoFLOP fit: method must be one of {', '.join(METHODS)}, got '{method}'")
    if n_nearest is not None and n_nearest < 3:
        raise UserError(f"isoFLOP fit: n_nearest must be at least 3, got {n_nearest}")
    columns = [n_col, budget_col, loss_col, d_col] + ([batch_col] if batch_col else [])
    table, excluded = _clean(table, columns, status_col)
    if table.empty:
        raise UserError("isoFLOP fit: no completed runs to fit")
    group, centres = group_budgets(table[budget_col].to_numpy(float))

    rows, interior, points, curves = [], [], [], {}
    for g, budget in enumerate(centres):
        runs = table[group == g].sort_values(n_col)
        # repeated sizes (seeds) are averaged: one point per size
        per_size = runs.groupby(n_col, sort=True).agg(loss=(loss_col, "mean"), d=(d_col, "mean"))
        x = np.log(per_size.index.to_numpy(float))
        y = per_size["loss"].to_numpy(float)
        log_d = np.log(per_size["d"].to_numpy(float))
        if batch_col and b_crit:
            budget = float(
                np.exp(
                    np.log(batch_adjusted_budget(runs[budget_col], runs[batch_col], b_crit)).mean()
                )
            )
        keep = nearest_sizes(y, n_nearest) if len(x) >= 3 else np.arange(len(x))
        points.append(
            pd.DataFrame(
                {
                    "run_id": runs["run_id"].to_numpy() if "run_id" in runs else "",
                    "budget": float(budget),
                    "n_active": runs[n_col].to_numpy(float),
                    "loss": runs[loss_col].to_numpy(float),
                    "used": np.isin(np.log(runs[n_col].to_numpy(float)), x[keep]),
                }
            )
        )
        # budget_min: the smallest raw budget value of the group, to select runs below it
        row = {
            "budget": float(budget),
            "budget_min": float(runs[budget_col].min()),
            "n_runs": len(runs),
            "n_sizes": len(x),
        }
        if len(x) < 3:
            row |= {"n_opt": np.nan, "d_opt": np.nan, "loss_opt": np.nan, "at_edge": False}
            row["reason"] = f"only {len(x)} size(s): needs 3"
            excluded.append(f"budget {budget:.3g}: {row['reason']}")
            rows.append(row)
            continue
        x, y, log_d = x[keep], y[keep], log_d[keep]
        log_n, loss, reason = _budget_optimum(x, y, method)
        row |= {
            "n_opt": float(np.exp(log_n)),
            # D at the optimum: interpolated in log-log between the runs' own token counts
            "d_opt": float(np.exp(_interp_extrapolate(log_n, x, log_d))),
            "loss_opt": loss,
            "at_edge": bool(reason),
            "reason": reason,
        }
        curves[float(budget)] = budget_curve(x, y, method)
        if reason:
            excluded.append(f"budget {budget:.3g}: edge optimum ({reason})")
            warnings.warn(
                f"budget {budget:.3g}: optimum at the edge of its sizes ({reason}); left out of the power laws",
                EdgeOptimumWarning,
                stacklevel=2,
            )
        else:
            interior.append(_Budget(x, y, log_d))
        rows.append(row)

    budgets = pd.DataFrame(rows)
    usable = interior_of(budgets)
    if len(usable) < min_budgets:
        raise UserError(
            f"isoFLOP fit: {len(usable)} budget(s) with an interior optimum; needs at least {min_budgets}"
        )
    weights = usable["n_runs"].to_numpy(float)
    log_budget = np.log(usable["budget"].to_numpy(float))
    samples, note = (None, "no bootstrap asked for")
    if bootstrap > 0:
        samples, note = _bootstrap(interior, log_budget, weights, method, bootstrap, seed)
    n_law = fit_power_law(usable["budget"], usable["n_opt"], weights, samples and samples[0])
    d_law = fit_power_law(usable["budget"], usable["d_opt"], weights, samples and samples[1])
    x_ref = float(np.exp(log_budget.mean()))
    if len(usable) >= 4:  # three parameters need a fourth point to be tested at all
        loss_law = SaturatingLaw(
            *fit_saturating_params(usable["budget"], usable["loss_opt"], x_ref, weights),
            x_ref=x_ref,
            samples=samples and samples[2],
        )
    else:
        loss_law = fit_power_law(usable["budget"], usable["loss_opt"], weights, None)
    return IsoflopFit(
        budgets=budgets,
        n_law=n_law,
        d_law=d_law,
        loss_law=loss_law,
        method=method,
        n_nearest=n_nearest,
        excluded=tuple(excluded),
        interval_note=note,
        points=pd.concat(points, ignore_index=True),
        curves=curves,
    )


def _noise_residuals(budgets: list[_Budget]) -> np.ndarray:
    """Loss residuals of every budget about a smooth curve in log N — a cubic with 5 or more
    sizes (it follows the asymmetry of real curves), a quadratic with 4 — scaled up for the
    parameters spent (√(n/(n−p))). Budgets of 3 sizes have no residual degrees of freedom."""
    pooled = []
    for b in budgets:
        n = len(b.x)
        if n < 4:
            continue
        degree = 3 if n >= 5 else 2
        fitted = np.polyval(np.polyfit(b.x, b.y, degree), b.x)
        pooled.append((b.y - fitted) * np.sqrt(n / (n - degree - 1)))
    return np.concatenate(pooled) if pooled else np.zeros(0)


def _bootstrap(
    budgets: list[_Budget],
    log_budget: np.ndarray,
    weights: np.ndarray,
    method: str,
    n_samples: int,
    seed: int,
) -> tuple[list | None, str]:
    """Two levels: every budget's losses are redrawn as its fitted curve plus residuals drawn
    from the sweep's pool, and its optimum found again by `method`; the budgets themselves are
    drawn with replacement (when there are enough). Returns the samples — (log coef, exponent)
    for n_opt and d_opt, (floor, scale, decay) for loss_opt — and what was resampled, or
    (None, why not)."""
    rng = np.random.default_rng(seed)
    pool = _noise_residuals(budgets)
    n_budgets = len(budgets)
    if not np.any(pool) and not resamples_budgets(n_budgets):
        return None, (
            "no interval: no budget has a size beyond the 3 its per-budget fit needs (no residual "
            f"degrees of freedom to estimate loss noise from), and {n_budgets} budgets are too few "
            "to resample"
        )
    # the centre each budget's redrawn losses scatter about: the method's own fit — the
    # parabola's values, or for Akima (an interpolant) the losses themselves, which adds the
    # noise on top of noisy points: a conservative interval (noise spread up to √2 too wide)
    centre = [
        b.y if method == "akima" else np.polyval(np.polyfit(b.x, b.y, 2), b.x) for b in budgets
    ]
    n_opt = np.full((n_samples, n_budgets), np.nan)
    d_opt = np.full_like(n_opt, np.nan)
    loss_opt = np.full_like(n_opt, np.nan)
    picks = np.empty((n_samples, n_budgets), dtype=int)
    for s in range(n_samples):
        picks[s] = draw_budgets(n_budgets, rng)
        for j in range(n_budgets):
            b = budgets[j]
            y = centre[j] + rng.choice(pool, len(b.x)) if np.any(pool) else b.y
            log_n, loss, reason = _budget_optimum(b.x, y, method)
            if not reason:
                n_opt[s, j], loss_opt[s, j] = log_n, loss
                d_opt[s, j] = _interp_extrapolate(log_n, b.x, b.log_d)

    out: list = []
    for values in (n_opt, d_opt):
        laws = []
        for s in range(n_samples):
            cols = picks[s][np.isfinite(values[s, picks[s]])]
            if len(np.unique(cols)) >= 2:
                laws.append(
                    fit_log_linear(np.exp(log_budget[cols]), np.exp(values[s, cols]), weights[cols])
                )
        out.append(np.array(laws) if len(laws) >= 2 else None)
    x_ref = float(np.exp(log_budget.mean()))
    laws = []
    for s in range(n_samples):
        cols = picks[s][np.isfinite(loss_opt[s, picks[s]])]
        if len(np.unique(cols)) >= 4:
            laws.append(
                fit_saturating_params(
                    np.exp(log_budget[cols]), loss_opt[s, cols], x_ref, weights[cols]
                )
            )
    out.append(np.array(laws) if len(laws) >= 2 else None)
    within = (
        f"each budget's losses redrawn about its {method} fit with the sweep's {len(pool)} "
        f"residuals, the {method} optimum found again"
        if np.any(pool)
        else "no loss noise redrawn (no budget has residual degrees of freedom)"
    )
    return out, f"{n_samples} bootstrap samples: " + what_is_resampled(n_budgets, within)


def _interp_extrapolate(at, x: np.ndarray, y: np.ndarray):
    """Piecewise-linear interpolation of y(x), extended linearly beyond the end points."""
    at = np.asarray(at, float)
    inner = np.interp(at, x, y)
    left = y[0] + (at - x[0]) * (y[1] - y[0]) / (x[1] - x[0])
    right = y[-1] + (at - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2])
    return np.where(at < x[0], left, np.where(at > x[-1], right, inner))
