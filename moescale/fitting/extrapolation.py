"""How well do the isoFLOP laws extrapolate? Fit on every budget but the largest, predict
the largest budget's N_opt and optimal loss, and compare with its own fitted optimum."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from moescale.errors import UserError
from moescale.fitting.isoflop import fit_isoflop


@dataclass(frozen=True)
class ExtrapolationCheck:
    held_out_budget: float
    n_opt_fitted: float  # the held-out budget's own optimum
    n_opt_predicted: float  # from the laws of the smaller budgets
    loss_fitted: float
    loss_predicted: float
    n_budgets_used: int

    @property
    def n_opt_rel_error(self) -> float:
        return self.n_opt_predicted / self.n_opt_fitted - 1.0

    @property
    def loss_rel_error(self) -> float:
        return self.loss_predicted / self.loss_fitted - 1.0

    def to_dict(self) -> dict:
        return {
            "held_out_budget": self.held_out_budget,
            "n_opt_fitted": self.n_opt_fitted,
            "n_opt_predicted": self.n_opt_predicted,
            "n_opt_rel_error": self.n_opt_rel_error,
            "loss_fitted": self.loss_fitted,
            "loss_predicted": self.loss_predicted,
            "loss_rel_error": self.loss_rel_error,
            "n_budgets_used": self.n_budgets_used,
        }


def extrapolation_check(table: pd.DataFrame, **isoflop_args) -> ExtrapolationCheck:
    """Hold out the largest budget with an interior optimum; fit the rest (at least 2)."""
    full = fit_isoflop(table, **isoflop_args)
    interior = full.budgets[~full.budgets["at_edge"] & full.budgets["n_opt"].notna()]
    if len(interior) < 3:
        raise UserError("extrapolation check: needs at least 3 budgets with an interior optimum")
    held = interior.loc[interior["budget"].idxmax()]
    budget_col = isoflop_args.get("budget_col", "budget_flops")
    smaller = table[table[budget_col] < held["budget_min"]]
    partial = fit_isoflop(smaller, **{**isoflop_args, "min_budgets": 2, "bootstrap": 0})
    prediction = partial.predict(held["budget"])
    return ExtrapolationCheck(
        held_out_budget=float(held["budget"]),
        n_opt_fitted=float(held["n_opt"]),
        n_opt_predicted=prediction["n_opt"],
        loss_fitted=float(held["loss_opt"]),
        loss_predicted=prediction["loss_opt"],
        n_budgets_used=int((~partial.budgets["at_edge"] & partial.budgets["n_opt"].notna()).sum()),
    )
