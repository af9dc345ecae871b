"""How well do the laws extrapolate? Hold out the largest 1, 2 and 3 budgets in turn, fit each
method on the budgets below them, predict every held-out budget's optimum, and compare with
that budget's own fitted optimum: the error against the extrapolation factor (held-out budget
÷ the largest budget fitted) is the evidence a prediction far past the sweep stands on."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from moescale.errors import UserError
from moescale.fitting.laws.compute_law import ComputeLaw
from moescale.fitting.laws.isoflop import IsoflopFit, fit_isoflop
from moescale.fitting.laws.parametric import ParametricFit, refit_on

HOLD_OUTS = (1, 2, 3)


@dataclass(frozen=True)
class HeldOut:
    """One held-out budget predicted by one method from the budgets below it."""

    method: str  # "isoflop" or "parametric"
    held_out: int  # how many of the largest budgets were left out of that fit
    budget: float  # the held-out budget
    factor: float  # budget ÷ the largest budget fitted
    n_budgets_used: int
    n_opt_fitted: float  # the held-out budget's own optimum (its per-budget fit)
    n_opt_predicted: float
    loss_fitted: float
    loss_predicted: float

    @property
    def n_opt_rel_error(self) -> float:
        return self.n_opt_predicted / self.n_opt_fitted - 1.0

    @property
    def loss_rel_error(self) -> float:
        return self.loss_predicted / self.loss_fitted - 1.0


@dataclass(frozen=True)
class ExtrapolationCheck:
    rows: tuple[HeldOut, ...]
    skipped: tuple[str, ...] = ()

    def for_method(self, method: str) -> tuple[HeldOut, ...]:
        return tuple(r for r in self.rows if r.method == method)

    def max_factor(self, method: str) -> float | None:
        """The furthest this check extrapolated `method`, as a factor in C."""
        rows = self.for_method(method)
        return max(r.factor for r in rows) if rows else None

    def median_n_error(self, method: str) -> float | None:
        """The median |N_opt error| of `method` over its held-out budgets."""
        rows = self.for_method(method)
        return float(np.median([abs(r.n_opt_rel_error) for r in rows])) if rows else None

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                asdict(r)
                | {"n_opt_rel_error": r.n_opt_rel_error, "loss_rel_error": r.loss_rel_error}
                for r in self.rows
            ]
        )

    def to_dict(self) -> dict:
        return {"rows": self.table().to_dict(orient="records"), "skipped": list(self.skipped)}

    @classmethod
    def from_dict(cls, data: dict) -> ExtrapolationCheck:
        fields = HeldOut.__dataclass_fields__
        rows = tuple(HeldOut(**{k: v for k, v in r.items() if k in fields}) for r in data["rows"])
        return cls(rows=rows, skipped=tuple(data.get("skipped", ())))


def extrapolation_check(
    table: pd.DataFrame,
    *,
    compute_law: ComputeLaw | None = None,
    parametric: ParametricFit | None = None,
    full: IsoflopFit | None = None,
    hold_outs: tuple[int, ...] = HOLD_OUTS,
    **isoflop_args,
) -> ExtrapolationCheck:
    """Hold out the largest k interior budgets for each k in `hold_outs` (while at least 2
    remain); predict them with the isoFLOP laws and, when `parametric` is given (the full
    fit, whose optimum seeds the refits), with the parametric law under `compute_law`.
    `full`: the isoFLOP fit of the whole table with the same `isoflop_args`, if made already
    (its budgets' optima are the check's reference; a bootstrap does not move them)."""
    isoflop_args = {**isoflop_args, "bootstrap": 0}
    if full is None:
        full = fit_isoflop(table, **isoflop_args)
    interior = full.interior.sort_values("budget")
    if len(interior) < 3:
        raise UserError("extrapolation check: needs at least 3 budgets with an interior optimum")
    rows, skipped = [], []
    for k in hold_outs:
        if len(interior) - k < 2:
            skipped.append(f"holding out {k}: fewer than 2 budgets would remain")
            continue
        held = interior.iloc[-k:]
        below = table[table["budget_flops"] < held["budget_min"].min()]
        common = {"held_out": k, "n_budgets_used": len(interior) - k}
        partial = fit_isoflop(below, **{**isoflop_args, "min_budgets": 2})
        largest = float(partial.interior["budget"].max())
        rows += _scored("isoflop", held, partial.predict, largest, common)
        if parametric is None:
            continue
        try:
            refit = refit_on(below, parametric)
        except UserError as err:
            skipped.append(f"parametric, holding out {k}: {err}")
            continue
        rows += _scored(
            "parametric", held, lambda c, f=refit: f.optimal(c, compute_law), largest, common
        )
    return ExtrapolationCheck(rows=tuple(rows), skipped=tuple(skipped))


def _scored(
    method: str, held: pd.DataFrame, predict, largest: float, common: dict
) -> list[HeldOut]:
    """Each held-out budget's own optimum against `predict(budget)` of a partial fit."""
    rows = []
    for row in held.itertuples():
        p = predict(row.budget)
        rows.append(
            HeldOut(
                method=method,
                budget=float(row.budget),
                factor=float(row.budget) / largest,
                n_opt_fitted=float(row.n_opt),
                n_opt_predicted=p["n_opt"],
                loss_fitted=float(row.loss_opt),
                loss_predicted=p.get("loss_opt", np.nan),
                **common,
            )
        )
    return rows
