"""Approach 2, as in the Hunyuan-Large report: per budget, the loss against log N is fitted
by a quadratic (or Akima interpolation, Porian et al. 2024) and its minimum taken; then
N_opt and D_opt are regressed on the budget as power laws in log space.

An optimum at the edge of a budget's sizes (the lowest loss at the smallest or largest N,
a non-convex quadratic, or a vertex outside the sizes) is flagged, warned about by name and
left out of the power laws. Bootstrap intervals resample the quadratic's residuals (pooled
over budgets): loss noise, the uncertainty that seeds would show.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

from moescale.errors import UserError
from moescale.fitting.budgets import batch_adjusted_budget, group_budgets
from moescale.fitting.powerlaw import (
    PowerLaw,
    SaturatingLaw,
    fit_log_linear,
    fit_power_law,
    fit_saturating_params,
)

METHODS = ("parabola", "akima")


class EdgeOptimumWarning(UserWarning):
    """A budget's lowest loss is at the edge of its sizes: its optimum is not bracketed."""


@dataclass(frozen=True)
class IsoflopFit:
    """Per-budget optima and the power laws n_opt = n_coef·C^n_exponent, d_opt = d_coef·C^d_exponent."""

    budgets: (
        pd.DataFrame
    )  # budget, budget_min, n_runs, n_sizes, n_opt, d_opt, loss_opt, at_edge, reason
    n_law: PowerLaw
    d_law: PowerLaw
    loss_law: SaturatingLaw | PowerLaw | None = None  # the optimal loss against C
    method: str = "parabola"
    excluded: tuple[str, ...] = ()
    curves: dict = field(
        default_factory=dict, repr=False, compare=False
    )  # budget → polynomial / grid

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

    def predict(self, flops: float) -> dict:
        """N_opt, D_opt (and the optimal loss, when fitted) at budget `flops`, with 95% intervals."""
        out = {
            "flops": float(flops),
            "n_opt": float(self.n_law(flops)),
            "n_opt_interval": self.n_law.interval(flops),
            "d_opt": float(self.d_law(flops)),
            "d_opt_interval": self.d_law.interval(flops),
        }
        if self.loss_law is not None:
            out["loss_opt"] = float(self.loss_law(flops))
            out["loss_opt_interval"] = self.loss_law.interval(flops)
        return out

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "n_law": self.n_law.to_dict(),
            "d_law": self.d_law.to_dict(),
            "loss_law": None if self.loss_law is None else self.loss_law.to_dict(),
            "budgets": self.budgets.to_dict(orient="records"),
            "excluded": list(self.excluded),
        }


def _vertex(coeffs: np.ndarray) -> np.ndarray:
    """x of the quadratic's vertex for coefficient rows (c2, c1, c0); nan where not convex."""
    c2, c1 = coeffs[..., 0], coeffs[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(c2 > 0, -c1 / (2 * c2), np.nan)


def _akima_minimum(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    spline = Akima1DInterpolator(x, y)
    grid = np.linspace(x[0], x[-1], 2001)
    values = spline(grid)
    i = int(np.nanargmin(values))
    return float(grid[i]), float(values[i])


def _budget_optimum(
    x: np.ndarray, y: np.ndarray, method: str, n_nearest: int | None
) -> tuple[float, float, str]:
    """(log n_opt, loss_opt, edge reason or '') for one budget's sorted log sizes and losses."""
    if n_nearest is not None and len(x) > n_nearest:
        keep = np.sort(np.argsort(np.abs(np.arange(len(x)) - np.argmin(y)))[:n_nearest])
        x, y = x[keep], y[keep]
    lowest = int(np.argmin(y))
    if lowest in (0, len(x) - 1):
        side = "smallest" if lowest == 0 else "largest"
        return float(x[lowest]), float(y[lowest]), f"lowest loss at the {side} size"
    if method == "akima":
        log_n, loss = _akima_minimum(x, y)
        return log_n, loss, ""
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
        bad = table[status_col] != "completed"
        for status, count in table.loc[bad, status_col].value_counts().items():
            excluded.append(f"{count} run(s) {status}: not used")
        table = table[~bad]
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise UserError(f"isoFLOP fit: column '{column}' has NaN or non-positive values")
    return table, excluded


def fit_isoflop(
    table: pd.DataFrame,
    n_col: str = "n_active",
    budget_col: str = "budget_flops",
    loss_col: str = "final_loss",
    d_col: str = "tokens",
    method: str = "parabola",
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
    columns = [n_col, budget_col, loss_col, d_col] + ([batch_col] if batch_col else [])
    table, excluded = _clean(table, columns, status_col)
    if table.empty:
        raise UserError("isoFLOP fit: no completed runs to fit")
    group, centres = group_budgets(table[budget_col].to_numpy(float))

    rows, points = [], []
    for g, budget in enumerate(centres):
        runs = table[group == g].sort_values(n_col)
        # repeated sizes (seeds) are averaged: one point per size
        per_size = runs.groupby(n_col, sort=True).agg(loss=(loss_col, "mean"), d=(d_col, "mean"))
        x = np.log(per_size.index.to_numpy(float))
        y = per_size["loss"].to_numpy(float)
        if batch_col and b_crit:
            budget = float(
                np.exp(
                    np.log(batch_adjusted_budget(runs[budget_col], runs[batch_col], b_crit)).mean()
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
        log_n, loss, reason = _budget_optimum(x, y, method, n_nearest)
        # D at the optimum: interpolated in log-log between the runs' own token counts
        log_d = np.log(per_size["d"].to_numpy(float))
        row |= {
            "n_opt": float(np.exp(log_n)),
            "d_opt": float(np.exp(_interp_extrapolate(log_n, x, log_d))),
            "loss_opt": loss,
            "at_edge": bool(reason),
            "reason": reason,
        }
        if reason:
            excluded.append(f"budget {budget:.3g}: edge optimum ({reason})")
            warnings.warn(
                f"budget {budget:.3g}: optimum at the edge of its sizes ({reason}); left out of the power laws",
                EdgeOptimumWarning,
                stacklevel=2,
            )
        else:
            points.append((g, x, y, log_d))
        rows.append(row)

    budgets = pd.DataFrame(rows)
    usable = budgets[~budgets["at_edge"] & budgets["n_opt"].notna()]
    if len(usable) < min_budgets:
        raise UserError(
            f"isoFLOP fit: {len(usable)} budget(s) with an interior optimum; needs at least {min_budgets}"
        )
    weights = usable["n_runs"].to_numpy(float)
    samples = (
        _bootstrap(points, usable, method, n_nearest, bootstrap, seed) if bootstrap > 0 else None
    )
    n_law = fit_power_law(
        usable["budget"], usable["n_opt"], weights, None if samples is None else samples[0]
    )
    d_law = fit_power_law(
        usable["budget"], usable["d_opt"], weights, None if samples is None else samples[1]
    )
    x_ref = float(np.exp(np.log(usable["budget"]).mean()))
    if len(usable) >= 4:  # three parameters need a fourth point to be tested at all
        loss_law = SaturatingLaw(
            *fit_saturating_params(usable["budget"], usable["loss_opt"], x_ref, weights),
            x_ref=x_ref,
            samples=None if samples is None else samples[2],
        )
    else:
        loss_law = fit_power_law(usable["budget"], usable["loss_opt"], weights, None)
    return IsoflopFit(
        budgets=budgets,
        n_law=n_law,
        d_law=d_law,
        loss_law=loss_law,
        method=method,
        excluded=tuple(excluded),
        curves={float(centres[g]): (x, y) for g, x, y, *_ in points},
    )


def _bootstrap(points, usable: pd.DataFrame, method: str, n_nearest, n_samples: int, seed: int):
    """Residual bootstrap: refit every budget on its fitted losses plus resampled residuals
    (pooled over budgets, scaled for the quadratic's 3 parameters), then the power laws.
    Returns (log coef, exponent) samples for n_opt and d_opt, (floor, scale, decay) for loss_opt."""
    rng = np.random.default_rng(seed)
    fitted, residuals = [], []
    for _, x, y, *_ in points:
        coeffs = np.polyfit(x, y, 2)
        prediction = np.polyval(coeffs, x)
        fitted.append(prediction)
        if len(x) > 3:
            residuals.append((y - prediction) * np.sqrt(len(x) / (len(x) - 3)))
    pool = np.concatenate(residuals) if residuals else np.zeros(1)
    if not np.any(pool):  # exactly-fitting quadratics (3 sizes each): no noise to resample
        pool = np.array([0.0])
    log_budget = np.log(usable["budget"].to_numpy(float))
    weights = usable["n_runs"].to_numpy(float)
    n_opt = np.full((n_samples, len(points)), np.nan)
    d_opt = np.full_like(n_opt, np.nan)
    loss_opt = np.full_like(n_opt, np.nan)
    for j, ((_, x, _, log_d), base) in enumerate(zip(points, fitted, strict=True)):
        noisy = base + rng.choice(pool, size=(n_samples, len(x)))
        if method == "parabola" and n_nearest is None:
            # one least-squares solve for every sample at once
            design = np.vander(x, 3)
            coeffs = np.linalg.lstsq(design, noisy.T, rcond=None)[0].T
            vertex = _vertex(coeffs)
            inside = (vertex > x[0]) & (vertex < x[-1]) & ~_lowest_at_edge(noisy)
            n_opt[:, j] = np.where(inside, vertex, np.nan)
            loss_opt[:, j] = np.where(
                inside,
                (coeffs * np.stack([vertex**2, vertex, np.ones_like(vertex)], 1)).sum(1),
                np.nan,
            )
        else:
            for s in range(n_samples):
                log_n, loss, reason = _budget_optimum(x, noisy[s], method, n_nearest)
                if not reason:
                    n_opt[s, j], loss_opt[s, j] = log_n, loss
        d_opt[:, j] = _interp_extrapolate(n_opt[:, j], x, log_d)

    out = []
    for values in (n_opt, d_opt):
        laws = []
        for s in range(n_samples):
            ok = np.isfinite(values[s])
            if ok.sum() >= 2:
                laws.append(
                    fit_log_linear(np.exp(log_budget[ok]), np.exp(values[s, ok]), weights[ok])
                )
        out.append(np.array(laws) if laws else None)
    x_ref = float(np.exp(log_budget.mean()))
    laws = []
    for s in range(n_samples):
        ok = np.isfinite(loss_opt[s])
        if ok.sum() >= 4:
            laws.append(
                fit_saturating_params(np.exp(log_budget[ok]), loss_opt[s, ok], x_ref, weights[ok])
            )
    out.append(np.array(laws) if laws else None)
    return out


def _interp_extrapolate(at, x: np.ndarray, y: np.ndarray):
    """Piecewise-linear interpolation of y(x), extended linearly beyond the end points."""
    at = np.asarray(at, float)
    inner = np.interp(at, x, y)
    left = y[0] + (at - x[0]) * (y[1] - y[0]) / (x[1] - x[0])
    right = y[-1] + (at - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2])
    return np.where(at < x[0], left, np.where(at > x[-1], right, inner))


def _lowest_at_edge(losses: np.ndarray) -> np.ndarray:
    lowest = np.argmin(losses, axis=1)
    return (lowest == 0) | (lowest == losses.shape[1] - 1)
