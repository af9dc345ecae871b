"""Tuned isoFLOP points and the laws of the best learning rate and batch size.

A sweep with `tune:` trains every (budget, size, variant, seed) point at several values of a
hyperparameter. The tuned loss of a point is the lowest over them — for the learning rate
interpolated in log LR: a parabola through the best grid value and its two neighbours, whose
vertex is the point's η_opt and whose value there (never above the best run's) its loss.
Where the best value sits at the grid's edge, there is nothing to interpolate: the edge value
is kept and the point is flagged. Batch size and the routed-expert LR scale take the best
grid value.

The laws (Porian et al. 2024; DeepSeek LLM 2024, §3.1): over every tuned point,

    log η_opt = log k + a·log C + b·log(N / N_opt(C))

with N_opt(C) the tuned isoFLOP fit's: η_opt(C) = k·C^a is the best LR at the compute-
optimal size, and b says how the best LR moves with size at a fixed budget. Along the
compute-optimal path the same law is a power law of N, η_opt = k·(N/n_coef)^(a/n_exponent).
B_opt likewise. Intervals: a two-stage bootstrap over the points (budgets, then points).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moescale.errors import UserError
from moescale.fitting.laws.budgets import group_budgets
from moescale.fitting.laws.isoflop import IsoflopFit
from moescale.fitting.laws.powerlaw import percentile_interval
from moescale.fitting.laws.resample import draw_runs, robust_sd, what_is_resampled
from moescale.results import completed

TUNE_COLUMNS = ("lr", "batch_tokens", "routed_lr_scale")
HUBER_K = 1.345  # the Huber weight's cut, in robust standard deviations (95% efficiency)
POINT = ("budget_flops", "n_active", "variant", "seed")  # what one tuned point is
INTERPOLATION = (
    "η_opt and the tuned loss of each point: the vertex of a parabola in log LR through the "
    "best grid LR and its two neighbours (the loss never above the best run's); at a grid "
    "edge, the edge value, flagged"
)


def _point_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in POINT if c in runs]


def tuned_axes(runs: pd.DataFrame) -> list[str]:
    """The hyperparameters that take more than one value within some point."""
    keys = _point_columns(runs)
    if not {"budget_flops", "n_active"} <= set(keys):
        return []
    groups = runs.groupby(keys, dropna=False)
    return [c for c in TUNE_COLUMNS if c in runs and (groups[c].nunique() > 1).any()]


def _vertex(log_lr: np.ndarray, loss: np.ndarray) -> tuple[float, float]:
    """(log η at the vertex, loss there) of the parabola through three points."""
    a, b, c = np.polyfit(log_lr, loss, 2)
    if a <= 0:  # not convex: keep the best grid value
        i = int(np.argmin(loss))
        return float(log_lr[i]), float(loss[i])
    x = -b / (2 * a)
    x = float(np.clip(x, log_lr.min(), log_lr.max()))
    return x, float(min(np.polyval([a, b, c], x), loss.min()))


def _tune_one(group: pd.DataFrame, axes: list[str]) -> dict:
    """One point: its tuned loss, η_opt (and B_opt, best routed scale) and the best run."""
    best_run = group.loc[group["final_loss"].idxmin()]
    row = best_run.to_dict()
    row["n_tried"] = len(group)
    row["at_edge"] = ""
    if "lr" in axes:
        # the lowest loss at each LR (over any other tuned axis)
        by_lr = group.groupby("lr")["final_loss"].min().sort_index()
        log_lr, loss = np.log(by_lr.index.to_numpy(float)), by_lr.to_numpy(float)
        i = int(np.argmin(loss))
        if len(loss) >= 3 and 0 < i < len(loss) - 1:
            x, value = _vertex(log_lr[i - 1 : i + 2], loss[i - 1 : i + 2])
            row["lr_opt"], row["final_loss"] = float(np.exp(x)), value
        else:
            row["lr_opt"], row["final_loss"] = float(by_lr.index[i]), float(loss[i])
            if len(loss) >= 2 and i in (0, len(loss) - 1):
                row["at_edge"] = "lr " + ("low" if i == 0 else "high")
    for axis in axes:
        if axis == "lr":
            continue
        by_value = group.groupby(axis)["final_loss"].min().sort_index()
        i = int(np.argmin(by_value.to_numpy()))
        row[f"{axis}_opt"] = float(by_value.index[i])
        if len(by_value) >= 2 and i in (0, len(by_value) - 1):
            row["at_edge"] = (row["at_edge"] + f" {axis} " + ("low" if i == 0 else "high")).strip()
    if "untuned" in group:
        own = group[group["untuned"].fillna(False).astype(bool)]
        row["untuned_loss"] = float(own["final_loss"].min()) if len(own) else np.nan
    row["best_run_id"] = row.get("run_id", "")
    return row


def tune_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per point of completed runs: the best run's row with its loss replaced by the
    tuned loss, plus lr_opt (and batch_tokens_opt, routed_lr_scale_opt when tuned),
    `at_edge`, `n_tried` and `untuned_loss` (the recipe's own values, where trained)."""
    done = completed(runs)
    axes = tuned_axes(done)
    if not axes:
        raise UserError(
            "tuning: no point was trained at more than one value of lr, batch_tokens or routed_lr_scale"
        )
    keys = _point_columns(done)
    rows = [_tune_one(group, axes) for _, group in done.groupby(keys, dropna=False, sort=True)]
    return pd.DataFrame(rows).reset_index(drop=True)


@dataclass(frozen=True)
class HyperLaw:
    """log y_opt = log k + a·log C + b·log(N / N_opt(C)) over the tuned points; `samples`
    are bootstrap (log k, a, b) rows. `along_n`: the same law along the compute-optimal
    path, as a power law of N."""

    name: str  # lr | batch_tokens
    coef: float
    exponent: float  # a
    size_exponent: float  # b
    n_points: int
    along_n: dict = field(default_factory=dict)  # coef, exponent
    interval_note: str = ""
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __call__(self, flops: float) -> float:
        return float(self.coef * flops**self.exponent)

    def interval(self, flops: float) -> tuple[float, float] | None:
        if self.samples is None:
            return None
        return percentile_interval(np.exp(self.samples[:, 0] + self.samples[:, 1] * np.log(flops)))

    def exponent_interval(self) -> tuple[float, float] | None:
        return None if self.samples is None else percentile_interval(self.samples[:, 1])

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "law": f"{self.name}_opt = coef · C^exponent at the compute-optimal size; "
            f"× (N / N_opt(C))^size_exponent off it",
            "coef": self.coef,
            "exponent": self.exponent,
            "exponent_interval": self.exponent_interval(),
            "coef_interval": None
            if self.samples is None
            else percentile_interval(np.exp(self.samples[:, 0])),
            "size_exponent": self.size_exponent,
            "size_exponent_interval": None
            if self.samples is None
            else percentile_interval(self.samples[:, 2]),
            "n_points": self.n_points,
            "along_n": self.along_n,
            "interval_note": self.interval_note,
            "samples": None if self.samples is None else self.samples.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> HyperLaw:
        samples = data.get("samples")
        return cls(
            name=data["name"],
            coef=data["coef"],
            exponent=data["exponent"],
            size_exponent=data["size_exponent"],
            n_points=data["n_points"],
            along_n=data.get("along_n", {}),
            interval_note=data.get("interval_note", ""),
            samples=None if samples is None else np.asarray(samples, float),
        )


def _regress(log_c: np.ndarray, log_off: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """(log k, a, b) by Huber-weighted least squares (IRLS): a point's η_opt comes from three
    noisy losses and has heavy tails, so a few far-off vertices must not steer the law."""
    design = np.column_stack([np.ones_like(log_c), log_c, log_off])
    weights = np.ones_like(log_y)
    for _ in range(20):
        root = np.sqrt(weights)
        theta, *_ = np.linalg.lstsq(design * root[:, None], log_y * root, rcond=None)
        residual = log_y - design @ theta
        scale = robust_sd(residual) or 1.0
        cut = HUBER_K * scale
        weights = np.minimum(1.0, cut / np.maximum(np.abs(residual), 1e-12))
    return theta


def fit_hyper_law(
    points: pd.DataFrame, column: str, isoflop: IsoflopFit, bootstrap: int = 0, seed: int = 0
) -> HyperLaw:
    """The law of `column` (lr_opt or batch_tokens_opt) over tuned points, against C and the
    points' distance from the tuned isoFLOP fit's N_opt(C). Points whose best value sat at
    the grid's edge are left out (their optimum is only bounded)."""
    name = column.removesuffix("_opt")
    usable = points[~points["at_edge"].str.contains(name)] if "at_edge" in points else points
    if len(usable) < 4 or usable["budget_flops"].nunique() < 2:
        raise UserError(
            f"tuning: {name} law needs interior optima at 2+ budgets (have {len(usable)} points "
            f"over {usable['budget_flops'].nunique()} budgets)"
        )
    c = usable["budget_flops"].to_numpy(float)
    log_c = np.log(c)
    log_off = np.log(usable["n_active"].to_numpy(float) / isoflop.n_law(c))
    log_y = np.log(usable[column].to_numpy(float))
    theta = _regress(log_c, log_off, log_y)
    samples, note = None, "no bootstrap asked for"
    if bootstrap > 0:
        group, centres = group_budgets(c)
        members = [np.flatnonzero(group == g) for g in range(len(centres))]
        rng = np.random.default_rng(seed)
        # N_opt(C) is itself uncertain, and an error in its exponent moves a by b times it:
        # each draw takes one of the isoFLOP fit's bootstrap laws along
        n_laws = isoflop.n_law.samples
        draws = []
        for i in range(bootstrap):
            pick = draw_runs(members, rng)
            if len(np.unique(log_c[pick])) < 2:
                continue
            off = log_off
            if n_laws is not None and len(n_laws):
                log_coef, exponent = n_laws[i % len(n_laws)]
                off = np.log(usable["n_active"].to_numpy(float)) - log_coef - exponent * log_c
            draws.append(_regress(log_c[pick], off[pick], log_y[pick]))
        samples = np.array(draws)
        note = (
            f"{len(draws)} bootstrap refits: "
            + what_is_resampled(len(members), "tuned points within each budget with replacement")
            + ", each with one of the isoFLOP fit's bootstrap N_opt laws"
        )
    log_k, a, b = (float(v) for v in theta)
    # along N = n_coef·C^n_exponent: C = (N / n_coef)^(1/n_exponent)
    along_n_exponent = a / isoflop.n_exponent
    along_n = {
        "coef": float(np.exp(log_k) * isoflop.n_coef ** (-along_n_exponent)),
        "exponent": along_n_exponent,
        "law": f"{name}_opt = coef · N^exponent along the compute-optimal path",
    }
    return HyperLaw(name, float(np.exp(log_k)), a, b, len(usable), along_n, note, samples)


POINT_COLUMNS = ("run_id", "budget_flops", "n_active", "variant", "seed", "tokens", "flops", "final_loss",
                 "untuned_loss", "lr_opt", "batch_tokens_opt", "routed_lr_scale_opt",
                 "at_edge", "n_tried", "best_run_id")  # fmt: skip


@dataclass(frozen=True)
class TuningFit:
    """What fit.json's `tuning` holds: the tuned points, the laws of the best values, and the
    N_opt exponent with the recipe's own values (untuned) against tuned."""

    axes: list[str]
    points: pd.DataFrame
    laws: dict[str, HyperLaw]
    untuned: dict  # n_exponent and its interval, or why it could not be fitted
    tuned: dict
    how: str = INTERPOLATION
    skipped: dict = field(default_factory=dict)

    def predict(self, flops: float) -> dict:
        """Each law's best value at `flops`, with its interval."""
        out = {}
        for name, law in self.laws.items():
            out[f"{name}_opt"] = law(flops)
            out[f"{name}_opt_interval"] = law.interval(flops)
        return out

    def to_dict(self) -> dict:
        columns = [c for c in POINT_COLUMNS if c in self.points]
        return {
            "axes": self.axes,
            "how": self.how,
            "points": self.points[columns].to_dict(orient="list"),
            "laws": {name: law.to_dict() for name, law in self.laws.items()},
            "untuned": self.untuned,
            "tuned": self.tuned,
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TuningFit:
        return cls(
            axes=data["axes"],
            points=pd.DataFrame(data["points"]),
            laws={k: HyperLaw.from_dict(v) for k, v in data["laws"].items()},
            untuned=data["untuned"],
            tuned=data["tuned"],
            how=data.get("how", INTERPOLATION),
            skipped=data.get("skipped", {}),
        )


def exponent_summary(fit: IsoflopFit) -> dict:
    return {
        "n_exponent": fit.n_exponent,
        "n_exponent_interval": fit.n_law.exponent_interval,
        "budgets": fit.interior[["budget", "n_opt", "loss_opt"]].to_dict(orient="records"),
    }


def fit_tuning(
    runs: pd.DataFrame, points: pd.DataFrame, tuned: IsoflopFit, bootstrap: int, fit_isoflop
) -> TuningFit:
    """The laws of the tuned values and the untuned comparison (`fit_isoflop` with the
    pipeline's options, on the runs at the recipe's own values)."""
    axes = tuned_axes(completed(runs))
    laws, skipped = {}, {}
    for name in ("lr", "batch_tokens"):
        if name in axes:
            try:
                laws[name] = fit_hyper_law(points, f"{name}_opt", tuned, bootstrap)
            except UserError as err:
                skipped[f"{name} law"] = str(err)
    untuned: dict = {"reason": "no runs at the recipe's own values"}
    if "untuned" in runs and runs["untuned"].fillna(False).astype(bool).any():
        own = runs[runs["untuned"].fillna(False).astype(bool)]
        try:
            untuned = exponent_summary(fit_isoflop(own, bootstrap=bootstrap))
        except UserError as err:
            untuned = {"reason": str(err)}
    return TuningFit(axes, points, laws, untuned, exponent_summary(tuned), skipped=skipped)
