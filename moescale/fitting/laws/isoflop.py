"""Approach 2, as in the Hunyuan-Large report: per budget, the loss against log N is fitted
and its minimum taken; then N_opt is regressed on the budget as a power law in log space.

The per-budget fit (`auto`, the default) is the shape the runs support, by leave-one-out
error: the shared-exponent slice of the parametric form (fitting/laws/slices.py: asymmetric like
real curves, noise averaged like a parabola) or the parabola in log N (where the slice's form
does not fit, as on Chinchilla's sweep). `slices`, `parabola` (the report's own method),
`akima` (Porian et al. 2024) and a parabola on the `n_nearest` sizes stay selectable.

D_opt at a budget follows from N_opt and the compute law, D = C/(a·N + b), so that a
prediction spends exactly its budget; the D_opt power law is kept for display only.

An optimum at the edge of a budget's sizes (the lowest loss at the smallest or largest N,
a non-convex quadratic, or a fitted minimum at the end of the sizes) is flagged, warned
about by name and left out of the power laws. Intervals: a fixed-design residual bootstrap
of the runs through the per-budget optima and the laws, with the scatter between budgets
that the laws' own residuals show (`_noise_draws`, `_law_draws`); no case bootstrap.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.interpolate import Akima1DInterpolator

from moescale.errors import UserError
from moescale.fitting.laws.budgets import group_budgets
from moescale.fitting.laws.compute_law import ComputeLaw
from moescale.fitting.laws.powerlaw import (
    PowerLaw,
    SaturatingLaw,
    fit_log_linear,
    fit_power_law,
    fit_saturating_params,
    loss_law_from_dict,
)
from moescale.fitting.laws.resample import MAD_TO_SD, draw_by_position, position_pools
from moescale.fitting.laws.slices import SliceData, SliceFit, fit_slices, refit_draws
from moescale.fitting.options import DEFAULT_ISOFLOP_METHOD, ISOFLOP_METHODS
from moescale.results import RunStatus

# "auto" and "slices" use the sizes within this factor of each budget's lowest loss: it trims
# far tails only (Chinchilla's 1e19 budget runs to 6.8B at a loss of 5.0, 1.7 nats above its
# minimum), which say little about where the minimum is and most about the form's tails
WINDOW = 30.0
WINDOWED = ("auto", "slices")
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
    method: str = DEFAULT_ISOFLOP_METHOD
    shape: str = ""  # the per-budget fit used: the method's own, or what "auto" chose
    shape_scores: dict = field(default_factory=dict)  # "auto": each shape's held-out error
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

    def draws(self, flops: float) -> dict[str, np.ndarray]:
        """The bootstrap draws of N_opt and the optimal loss at `flops` (empty without)."""
        out = {}
        if self.n_law.samples is not None:
            out["n_opt"] = np.exp(self.n_law.samples @ np.array([1.0, np.log(flops)]))
        law = self.loss_law
        if law is not None and law.samples is not None:
            if isinstance(law, SaturatingLaw):
                floor, scale, decay = law.samples.T
                out["loss_opt"] = floor + scale * (flops / law.x_ref) ** (-decay)
            else:
                out["loss_opt"] = np.exp(law.samples @ np.array([1.0, np.log(flops)]))
        return out

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
            "shape": self.shape,
            "shape_scores": self.shape_scores,
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
            shape=data.get("shape", data["method"]),
            shape_scores=data.get("shape_scores", {}),
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


def single_budget_method(method: str) -> str:
    """The per-budget fit for one budget on its own (a validation's runs): the method itself,
    except that a slice needs other budgets to share its exponents with and the choice
    between shapes needs a sweep to be scored on — so those read one budget by the parabola."""
    return "parabola" if method in ("auto", "slices") else method


def within_window(x: np.ndarray, y: np.ndarray, window: float) -> np.ndarray:
    """Indices of the sizes within a factor `window` of the lowest loss's (at least the 4
    nearest): the far tails of a wide isoFLOP curve say little about where its minimum is."""
    lowest = int(np.argmin(y))
    keep = np.flatnonzero(np.abs(x - x[lowest]) <= np.log(window))
    if len(keep) < 4:
        keep = np.sort(np.argsort(np.abs(x - x[lowest]), kind="stable")[:4])
    return keep


def budget_curve(x: np.ndarray, y: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """The per-budget fit evaluated on a grid over the sizes used: (log N grid, loss grid)."""
    grid = np.linspace(x[0], x[-1], CURVE_POINTS)
    if method == "akima":
        return grid, Akima1DInterpolator(x, y)(grid)
    return grid, np.polyval(np.polyfit(x, y, 2), grid)


def _budget_optimum(x: np.ndarray, y: np.ndarray, method: str) -> tuple[float, float, str]:
    """(log n_opt, loss_opt, edge reason or '') for one budget's sorted log sizes and losses
    (already cut to the sizes the method uses), by Akima or the parabola."""
    lowest = int(np.argmin(y))
    if lowest in (0, len(x) - 1):
        return float(x[lowest]), float(y[lowest]), _edge_reason(lowest == 0)
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


def _edge_reason(smallest: bool) -> str:
    return f"lowest loss at the {'smallest' if smallest else 'largest'} size"


def _slice_optima(
    theta: np.ndarray, coeffs: np.ndarray, data: SliceData, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per draw — exponents theta (S, 2), this budget's coefficients (S, 3), its losses y
    (n, S) — the slice's minimum over the sizes: (log N, loss, at an edge). An edge is the
    lowest loss at the smallest or largest size, or the fitted minimum at the end of the grid."""
    grid = np.linspace(data.x[0], data.x[-1], CURVE_POINTS)
    log_d = data.log_d_at(grid)
    alpha, beta = np.exp(theta[:, :1]), np.exp(theta[:, 1:])
    values = (
        coeffs[:, :1]
        + coeffs[:, 1:2] * np.exp(-alpha * grid[None, :])
        + coeffs[:, 2:] * np.exp(-beta * log_d[None, :])
    )
    i = np.argmin(values, axis=1)
    lowest = np.argmin(y, axis=0)
    edge = (i == 0) | (i == CURVE_POINTS - 1) | (lowest == 0) | (lowest == len(data.x) - 1)
    return grid[i], values[np.arange(len(i)), i], edge


def _optima(
    data: list[SliceData], method: str, slices: SliceFit | None
) -> list[tuple[float, float, str, tuple[np.ndarray, np.ndarray]]]:
    """Every budget's (log n_opt, loss_opt, edge reason or '', its fitted curve)."""
    out = []
    for j, d in enumerate(data):
        if method != "slices":
            out.append((*_budget_optimum(d.x, d.y, method), budget_curve(d.x, d.y, method)))
            continue
        theta = np.log([[slices.alpha, slices.beta]])
        log_n, loss, edge = _slice_optima(theta, slices.coeffs[j][None, :], d, d.y[:, None])
        grid = np.linspace(d.x[0], d.x[-1], CURVE_POINTS)
        lowest = int(np.argmin(d.y))
        if lowest in (0, len(d.x) - 1):
            reason = _edge_reason(lowest == 0)
            log_n, loss = d.x[lowest], d.y[lowest]
        else:
            reason = "fitted minimum at the edge of the sizes" if edge[0] else ""
        out.append(
            (
                float(np.ravel(log_n)[0]),
                float(np.ravel(loss)[0]),
                reason,
                (grid, slices.curve(j, d, grid)),
            )
        )
    return out


def _loo_residuals(design: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Leave-one-out residuals of a linear least-squares fit, from its hat matrix."""
    hat = design @ np.linalg.pinv(design)
    return (y - hat @ y) / np.maximum(1.0 - np.diag(hat), 1e-9)


def choose_shape(data: list[SliceData], slices: SliceFit | None) -> tuple[str, dict]:
    """The per-budget shape the runs support: the shared-exponent slice or the parabola in
    log N, whichever predicts each left-out size better (leave-one-out, Huber loss on a
    common robust scale, the slice's exponents held at the fit's; budgets of 4 sizes or
    more). Why both: on curves of the law's own form (and asymmetric ones) the slice is
    right where a parabola is not, but real curves need not be of that form — on
    Chinchilla's isoFLOP sweep the slice's exponents run to the bounds and its held-out error
    is 2.5× the parabola's. A tie (or nothing to tell them by) goes to the slice."""
    usable = [(j, d) for j, d in enumerate(data) if len(d.x) >= 4]
    if slices is None or not usable:
        return "slices", {}
    residuals = {"slices": [], "parabola": []}
    for _, d in usable:
        shape_terms = np.stack(
            [np.ones_like(d.x), np.exp(-slices.alpha * d.x), np.exp(-slices.beta * d.log_d)], axis=1
        )
        residuals["slices"].append(_loo_residuals(shape_terms, d.y))
        quadratic = np.stack([np.ones_like(d.x), d.x, d.x**2], axis=1)
        residuals["parabola"].append(_loo_residuals(quadratic, d.y))
    pooled = {k: np.concatenate(v) for k, v in residuals.items()}
    both = np.concatenate(list(pooled.values()))
    scale = MAD_TO_SD * np.median(np.abs(both)) or 1.0  # about zero: residuals, not centred
    limit = 1.345 * scale

    def huber(r: np.ndarray) -> float:
        a = np.abs(r)
        return float(np.sum(np.where(a <= limit, a**2, 2 * limit * a - limit**2)))

    scores = {k: huber(v) for k, v in pooled.items()}
    return ("slices" if scores["slices"] <= scores["parabola"] else "parabola"), scores


def _clean(table: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, list[str]]:
    excluded = []
    for column in columns:
        if column not in table:
            raise UserError(f"isoFLOP fit: missing column '{column}'")
    if "status" in table:
        bad = table["status"] != RunStatus.COMPLETED
        for status, count in table.loc[bad, "status"].value_counts().items():
            excluded.append(f"{count} run(s) {status}: not used")
        table = table[~bad]
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise UserError(f"isoFLOP fit: column '{column}' has NaN or non-positive values")
    return table, excluded


def _per_budget(
    table: pd.DataFrame,
    method: str,
    n_nearest: int | None,
    window: float,
    excluded: list[str],
) -> tuple[list[dict], list[SliceData], list[pd.DataFrame]]:
    """Each budget's row (its sizes and runs; why it cannot be fitted, if so), the sizes its
    per-budget fit uses, and one point per run saying whether it was used."""
    group, centres = group_budgets(table["budget_flops"].to_numpy(float))
    rows, data, points = [], [], []
    for g, budget in enumerate(centres):
        runs = table[group == g].sort_values("n_active")
        # repeated sizes (seeds) are averaged: one point per size
        per_size = runs.groupby("n_active", sort=True).agg(
            loss=("final_loss", "mean"), d=("tokens", "mean")
        )
        x = np.log(per_size.index.to_numpy(float))
        y = per_size["loss"].to_numpy(float)
        log_d = np.log(per_size["d"].to_numpy(float))
        keep = nearest_sizes(y, n_nearest) if len(x) >= 3 else np.arange(len(x))
        if method in WINDOWED and len(keep) > 4:
            keep = keep[within_window(x[keep], y[keep], window)]
        points.append(
            pd.DataFrame(
                {
                    "run_id": runs["run_id"].to_numpy() if "run_id" in runs else "",
                    "budget": float(budget),
                    "n_active": runs["n_active"].to_numpy(float),
                    "loss": runs["final_loss"].to_numpy(float),
                    "used": np.isin(np.log(runs["n_active"].to_numpy(float)), x[keep]),
                }
            )
        )
        # budget_min: the smallest raw budget value of the group, to select runs below it
        row = {
            "budget": float(budget),
            "budget_min": float(runs["budget_flops"].min()),
            "n_runs": len(runs),
            "n_sizes": len(x),
        }
        if len(x) < 3:
            row |= {"n_opt": np.nan, "d_opt": np.nan, "loss_opt": np.nan, "at_edge": False}
            row["reason"] = f"only {len(x)} size(s): needs 3"
            excluded.append(f"budget {budget:.3g}: {row['reason']}")
        else:
            data.append(SliceData(x[keep], y[keep], log_d[keep]))
        rows.append(row)

    return rows, data, points


def _record_optima(
    rows: list[dict], data: list[SliceData], optima: list, excluded: list[str]
) -> dict:
    """Each fitted budget's optimum into its row (an edge optimum flagged, warned of and
    listed); returns each budget's fitted curve."""
    fitted_rows = [row for row in rows if "reason" not in row]
    curves = {}
    for row, d, (log_n, loss, reason, curve) in zip(fitted_rows, data, optima, strict=True):
        row |= {
            "n_opt": float(np.exp(log_n)),
            # D at the optimum: interpolated in log-log between the runs' own token counts
            "d_opt": float(np.exp(_interp_extrapolate(log_n, d.x, d.log_d))),
            "loss_opt": loss,
            "at_edge": bool(reason),
            "reason": reason,
        }
        curves[row["budget"]] = curve
        if reason:
            excluded.append(f"budget {row['budget']:.3g}: edge optimum ({reason})")
            warnings.warn(
                f"budget {row['budget']:.3g}: optimum at the edge of its sizes ({reason}); "
                "left out of the power laws",
                EdgeOptimumWarning,
                stacklevel=2,
            )
    return curves


def _law_samples(
    data: list[SliceData],
    inner: list[int],
    shape: str,
    slices,
    bootstrap: int,
    seed: int,
    budgets: pd.DataFrame,
    usable: pd.DataFrame,
    loss_floor: LossFloor | None,
) -> tuple[tuple, str]:
    """Bootstrap draws of the three laws (N_opt, D_opt, loss_opt against C): each budget's
    noise draws plus the scatter between budgets; also writes each interior budget's
    standard errors into `budgets`. Returns the draws and what they resampled."""
    samples = (None, None, None)
    weights = usable["n_runs"].to_numpy(float)
    c = usable["budget"].to_numpy(float)
    estimates = np.log(usable[["n_opt", "d_opt"]].to_numpy(float)).T
    loss_opt = usable["loss_opt"].to_numpy(float)
    draws, note = _noise_draws(data, inner, shape, slices, bootstrap, seed)
    if draws is not None:
        rng = np.random.default_rng(seed + 1)
        log_c = np.log(c)
        scatter = [
            _scatter(est, _line(log_c, est, weights)[1], draw, weights)
            for est, draw in zip(estimates, draws[:2], strict=True)
        ]
        samples = tuple(
            _law_draws(log_c, est, draw, weights, rng, tau2)
            for est, draw, tau2 in zip(estimates, draws[:2], scatter, strict=True)
        ) + (_loss_draws(c, loss_opt, draws[2], weights, rng, loss_floor),)
        note += "; " + _BETWEEN_NOTE
        # each interior budget's standard error: its own noise draws and the scatter
        # between budgets (what a law through it cannot tell from noise)
        index = usable.index
        budgets.loc[index, "n_opt_log_se"] = np.sqrt(
            np.nanvar(draws[0], axis=0) + scatter[0].between
        )
        loss_scatter = _scatter(
            loss_opt,
            np.array(_loss_law(c, loss_opt, weights, loss_floor, None)(c)),
            draws[2],
            weights,
        )
        budgets.loc[index, "loss_opt_se"] = np.sqrt(
            np.nanvar(draws[2], axis=0) + loss_scatter.between
        )
    return samples, note


def fit_isoflop(
    table: pd.DataFrame,
    method: str = DEFAULT_ISOFLOP_METHOD,
    bootstrap: int = 0,
    n_nearest: int | None = None,
    min_budgets: int = 3,
    seed: int = 0,
    loss_floor: LossFloor | None = None,
    window: float = WINDOW,
) -> IsoflopFit:
    """Fit the isoFLOP optima of a table of runs and their power laws in the budget.

    `n_nearest` keeps only that many sizes nearest each budget's lowest loss (a table on the
    batch-adjusted budget C_min is critical_batch.on_minimal_compute's); `loss_floor` is the irreducible loss the optimal-loss law levels off at (with its
    bootstrap draws), from the parametric fit. Weighted least squares: each budget weighs as
    many as its runs.
    """
    if method not in ISOFLOP_METHODS:
        raise UserError(
            f"isoFLOP fit: method must be one of {', '.join(ISOFLOP_METHODS)}, got '{method}'"
        )
    if n_nearest is not None and n_nearest < 3:
        raise UserError(f"isoFLOP fit: n_nearest must be at least 3, got {n_nearest}")
    table, excluded = _clean(table, ["n_active", "budget_flops", "final_loss", "tokens"])
    if table.empty:
        raise UserError("isoFLOP fit: no completed runs to fit")
    rows, data, points = _per_budget(table, method, n_nearest, window, excluded)
    slices = fit_slices(data) if data else None
    shape, scores = (method, {}) if method != "auto" else choose_shape(data, slices)
    optima = _optima(data, shape, slices)
    curves = _record_optima(rows, data, optima, excluded)

    budgets = pd.DataFrame(rows)
    usable = interior_of(budgets)
    if len(usable) < min_budgets:
        raise UserError(
            f"isoFLOP fit: {len(usable)} budget(s) with an interior optimum; needs at least {min_budgets}"
        )
    inner = [j for j, (*_, reason, _) in enumerate(optima) if not reason]
    weights = usable["n_runs"].to_numpy(float)
    c = usable["budget"].to_numpy(float)
    loss_opt = usable["loss_opt"].to_numpy(float)
    budgets["n_opt_log_se"] = budgets["loss_opt_se"] = np.nan
    samples, note = (None, None, None), "no bootstrap asked for"
    if bootstrap > 0:
        samples, note = _law_samples(
            data, inner, shape, slices, bootstrap, seed, budgets, usable, loss_floor
        )
    n_law = fit_power_law(c, usable["n_opt"], weights, samples[0])
    d_law = fit_power_law(c, usable["d_opt"], weights, samples[1])
    loss_law = _loss_law(c, loss_opt, weights, loss_floor, samples[2])
    return IsoflopFit(
        budgets=budgets,
        n_law=n_law,
        d_law=d_law,
        loss_law=loss_law,
        method=method,
        shape=shape,
        shape_scores=scores,
        n_nearest=n_nearest,
        excluded=tuple(excluded),
        interval_note=note,
        points=pd.concat(points, ignore_index=True),
        curves=curves,
    )


_BETWEEN_NOTE = (
    "then each law refitted to its fitted line plus those draws plus a between-budget scatter "
    "(normal, of the variance the law's own residuals show beyond the within-budget noise, "
    "that variance itself drawn from its χ² distribution on the budgets less 2)"
)


@dataclass(frozen=True)
class LossFloor:
    """The irreducible loss the optimal-loss law levels off at, and its bootstrap draws."""

    value: float
    samples: np.ndarray | None = None
    source: str = "the parametric fit's E"


def _noise_pool(
    data: list[SliceData], fitted: tuple[np.ndarray, ...], n_params: int
) -> tuple[dict[bool, np.ndarray], list[np.ndarray]] | None:
    """The sweep's loss noise, from the residuals about the per-budget fits (scaled up for
    the parameters spent): residual pools by position — edge runs (a budget's smallest and
    largest size) and interior ones, each drawn only for its own kind when both have 5 or
    more (edge runs are noisier: a size far from its optimum is the hardest to tune, and one
    of them diverging says nothing of the runs near the optimum) — and each budget's edge
    mask. None without residual degrees of freedom."""
    n_points = sum(len(d.y) for d in data)
    if n_points <= n_params:
        return None
    residuals = [
        (d.y - f) * np.sqrt(n_points / (n_points - n_params))
        for d, f in zip(data, fitted, strict=True)
    ]
    edge = [np.isin(np.arange(len(d.y)), (0, len(d.y) - 1)) for d in data]
    pools = position_pools(np.concatenate(residuals), np.concatenate(edge))
    return (pools, edge) if pools is not None else None


def _noise_draws(
    data: list[SliceData],
    inner: list[int],
    method: str,
    slices: SliceFit,
    n_samples: int,
    seed: int,
) -> tuple[list[np.ndarray] | None, str]:
    """A fixed-design residual bootstrap of the runs: every budget's losses redrawn as its
    fitted curve plus residuals from the sweep's own pool, and every optimum found again by
    `method`. Returns (log n_opt, log d_opt, loss_opt) draws, each (S, interior budgets) and
    NaN where a draw's optimum fell at an edge, and what was resampled; or (None, why not)."""
    if method == "parabola":  # not the slice's residuals: where its form misfits they are
        # misfit, not noise; nor the parabola's own over a wide span, for the same reason —
        # a cubic per budget where there are 6 sizes or more (it follows an asymmetric curve)
        fitted = tuple(
            np.polyval(np.polyfit(d.x, d.y, 3 if len(d.x) >= 6 else 2), d.x) for d in data
        )
        noise = _noise_pool(data, fitted, sum(4 if len(d.x) >= 6 else 3 for d in data))
    else:
        noise = _noise_pool(data, slices.fitted, slices.n_params)
    if noise is None:
        return None, (
            "no interval: no residual degrees of freedom to estimate loss noise from (the "
            "per-budget fits use every run: each budget needs more sizes than its 3 free terms)"
        )
    pools, edges = noise
    rng = np.random.default_rng(seed)
    # the centre the redrawn losses scatter about: the method's own fit — the slice's or the
    # parabola's values, or for Akima (an interpolant) the losses themselves, which adds the
    # noise on top of noisy points: a conservative interval
    if method == "slices":
        centre = list(slices.fitted)
    elif method == "parabola":
        centre = [np.polyval(np.polyfit(d.x, d.y, 2), d.x) for d in data]
    else:
        centre = [d.y for d in data]
    ys = [
        c[:, None] + draw_by_position(pools, e, (len(c), n_samples), rng)
        for c, e in zip(centre, edges, strict=True)
    ]
    out = np.full((3, n_samples, len(inner)), np.nan)
    if method == "slices":
        theta, coeffs = refit_draws(slices, data, ys)
        for k, j in enumerate(inner):
            log_n, loss, edge = _slice_optima(theta, coeffs[j], data[j], ys[j])
            out[0, :, k] = np.where(edge, np.nan, log_n)
            out[2, :, k] = np.where(edge, np.nan, loss)
    else:
        for k, j in enumerate(inner):
            for s in range(n_samples):
                log_n, loss, reason = _budget_optimum(data[j].x, ys[j][:, s], method)
                if not reason:
                    out[0, s, k], out[2, s, k] = log_n, loss
    for k, j in enumerate(inner):
        out[1, :, k] = _interp_extrapolate(out[0, :, k], data[j].x, data[j].log_d)
    kinds = (
        "one pool for all runs"
        if pools[True] is pools[False]
        else "edge and interior runs each from their own"
    )
    note = (
        f"{n_samples} bootstrap samples: each budget's losses redrawn about its {method} fit "
        f"with the sweep's {sum(len(d.y) for d in data)} residuals about the "
        f"{'per-budget cubics' if method == 'parabola' else 'slice fit'} ({kinds}), the {method} "
        "optimum found again"
    )
    return list(out), note


@dataclass(frozen=True)
class Scatter:
    """The residual variance about a law in C (df-corrected) and the share the within-budget
    noise draws explain; what is left is the scatter between budgets."""

    total: float
    within: float
    dof: int

    @property
    def between(self) -> float:
        return max(0.0, self.total - self.within)

    def draws(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n draws of the between-budget variance that carry its own uncertainty: the total
        drawn as total·dof/χ²_dof (a t-like interval from few budgets), less the within part.
        With one degree of freedom that draw has no finite mean, so the point value is used."""
        if self.dof < 2:
            return np.full(n, self.between)
        total = self.total * self.dof / rng.chisquare(self.dof, n)
        return np.maximum(0.0, total - self.within)


def _scatter(
    est: np.ndarray, fitted: np.ndarray, draws: np.ndarray, weights: np.ndarray
) -> Scatter:
    """The between-budget scatter about a law through `est` (fitted at `fitted`) given the
    noise draws of every estimate; none with 2 budgets (nothing to tell it by)."""
    k = len(est)
    within = np.nanvar(draws, axis=0)
    within = float(np.average(np.where(np.isfinite(within), within, 0.0), weights=weights))
    if k <= 2:
        return Scatter(within, within, 0)
    total = float(np.sum(weights * (est - fitted) ** 2) / weights.sum() * k / (k - 2))
    return Scatter(total, within, k - 2)


def _line(log_c: np.ndarray, est: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(intercept, slope) of the weighted least-squares line of est on log C, and its values."""
    design = np.stack([np.ones_like(log_c), log_c], axis=1)
    w = np.sqrt(weights)
    line = np.linalg.lstsq(design * w[:, None], est * w, rcond=None)[0]
    return line, design @ line


def _law_draws(
    log_c: np.ndarray,
    est: np.ndarray,
    draws: np.ndarray,
    weights: np.ndarray,
    rng: np.random.Generator,
    scatter: Scatter,
) -> np.ndarray | None:
    """Bootstrap (log coef, exponent) pairs of a log-linear law in C: its fitted line plus
    each draw's deviation from the estimates plus a between-budget scatter, refitted."""
    fitted = _line(log_c, est, weights)[1]
    tau = np.sqrt(scatter.draws(rng, len(draws)))[:, None]
    target = fitted + (draws - est) + tau * rng.standard_normal(draws.shape)
    laws = []
    for row in target:
        ok = np.isfinite(row)
        if ok.sum() >= 2:
            laws.append(_line(log_c[ok], row[ok], weights[ok])[0])
    return np.array(laws) if len(laws) >= 2 else None


def _loss_law(
    c: np.ndarray,
    loss: np.ndarray,
    weights: np.ndarray,
    floor: LossFloor | None,
    samples: np.ndarray | None,
) -> SaturatingLaw | PowerLaw:
    """The optimal loss against C: E + k·C^−γ with E the given floor (where every budget's
    loss is above it), else with E fitted (4 budgets or more), else a power law with no floor."""
    x_ref = float(np.exp(np.average(np.log(c), weights=weights)))
    params = _floored_params(c, loss, weights, x_ref, floor and floor.value)
    if params is not None:
        return SaturatingLaw(*params, x_ref=x_ref, samples=samples)
    return fit_power_law(c, loss, weights, samples)


def _floored_params(
    c: np.ndarray, loss: np.ndarray, weights: np.ndarray, x_ref: float, floor: float | None
) -> tuple[float, float, float] | None:
    """(floor, scale, decay): the floor given (when below every loss) and the rest by
    least squares in log(L − E), or all three fitted with 4 budgets or more; else None."""
    if floor is not None and np.all(loss > floor) and np.isfinite(floor):
        log_scale, slope = fit_log_linear(c / x_ref, loss - floor, weights)
        if slope < 0:
            return float(floor), float(np.exp(log_scale)), float(-slope)
    if len(c) >= 4:  # three parameters need a fourth point to be tested at all
        return fit_saturating_params(c, loss, x_ref, weights)
    return None


def _loss_draws(
    c: np.ndarray,
    loss: np.ndarray,
    draws: np.ndarray,
    weights: np.ndarray,
    rng: np.random.Generator,
    floor: LossFloor | None,
) -> np.ndarray | None:
    """Bootstrap parameters of `_loss_law`: (floor, scale, decay) triples when it has a floor
    — each draw with its own floor from the floor's draws — else (log coef, exponent)."""
    x_ref = float(np.exp(np.average(np.log(c), weights=weights)))
    if _floored_params(c, loss, weights, x_ref, floor and floor.value) is None:
        log_c, log_loss = np.log(c), np.log(loss)
        scatter = _scatter(log_loss, _line(log_c, log_loss, weights)[1], np.log(draws), weights)
        return _law_draws(log_c, log_loss, np.log(draws), weights, rng, scatter)
    centre = np.array(_loss_law(c, loss, weights, floor, None)(c), float)
    tau = np.sqrt(_scatter(loss, centre, draws, weights).draws(rng, len(draws)))[:, None]
    target = centre + (draws - loss) + tau * rng.standard_normal(draws.shape)
    # each draw's floor: one of the floor's own draws, else its value, else none (fitted)
    floors: list = [None] * len(target)
    if floor is not None and floor.samples is not None and len(floor.samples):
        floors = list(rng.choice(np.asarray(floor.samples, float), len(target)))
    elif floor is not None:
        floors = [floor.value] * len(target)
    out = []
    for row, given in zip(target, floors, strict=True):
        ok = np.isfinite(row)
        if ok.sum() < 2:
            continue
        params = _floored_params(c[ok], row[ok], weights[ok], x_ref, given)
        if params is not None:
            out.append(params)
    return np.array(out) if len(out) >= 2 else None


def _interp_extrapolate(at, x: np.ndarray, y: np.ndarray):
    """Piecewise-linear interpolation of y(x), extended linearly beyond the end points."""
    at = np.asarray(at, float)
    inner = np.interp(at, x, y)
    left = y[0] + (at - x[0]) * (y[1] - y[0]) / (x[1] - x[0])
    right = y[-1] + (at - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2])
    return np.where(at < x[0], left, np.where(at > x[-1], right, inner))
