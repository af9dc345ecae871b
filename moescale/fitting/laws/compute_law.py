"""The compute law C ≈ a·N·D + b·D: cost per token regressed on activated parameters, on
relative error so that every run's FLOPs per token counts equally, small models included."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from moescale.errors import UserError
from moescale.published.constants import DENSE_A, HUNYUAN_COMPUTE_A, HUNYUAN_COMPUTE_B
from moescale.results import completed

COSTS = {
    "flops": "exact FLOP counts",
    "time": "measured time × peak FLOP/s",
    "assumed": "assumed, not measured",
}


@dataclass(frozen=True)
class ComputeLaw:
    """flops_per_token ≈ a·n_active + b, i.e. C ≈ a·N·D + b·D."""

    a: float
    b: float
    r2: float
    cost: str = "flops"
    n_runs: int = 0
    max_rel_error: float = 0.0  # the worst |fitted / measured − 1| over the runs

    def flops_per_token(self, n_active: float | np.ndarray) -> float | np.ndarray:
        return self.a * np.asarray(n_active, float) + self.b

    def tokens(self, flops: float | np.ndarray, n_active: float | np.ndarray) -> float | np.ndarray:
        """D = C / (a·N + b)."""
        return np.asarray(flops, float) / self.flops_per_token(n_active)

    def summary(self) -> str:
        if self.cost == "assumed":
            return f"C = {self.a:g}·N·D + {self.b:.3g}·D (assumed, not measured: the table has no FLOP counts)"
        return (
            f"C ≈ {self.a:.3f}·N·D + {self.b:.3g}·D  ({COSTS[self.cost]}, {self.n_runs} runs, "
            f"worst relative error {self.max_rel_error:.2%}, R² {self.r2:.4f}); dense rule 6·N·D; "
            f"the Hunyuan-Large report gives {HUNYUAN_COMPUTE_A}·N·D + {HUNYUAN_COMPUTE_B:.2g}·D "
            "in its own counting"
        )

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "r2": self.r2,
            "cost": self.cost,
            "how": COSTS.get(self.cost, self.cost),
            "n_runs": self.n_runs,
            "max_rel_error": self.max_rel_error,
            "fitted_on": "relative error of flops_per_token (each run counts equally)",
        }

    @classmethod
    def from_dict(cls, data: dict) -> ComputeLaw:
        return cls(
            a=data["a"],
            b=data["b"],
            r2=data["r2"],
            cost=data["cost"],
            n_runs=data.get("n_runs", 0),
            max_rel_error=data.get("max_rel_error", 0.0),
        )


DEFAULT_LAW = ComputeLaw(a=DENSE_A, b=0.0, r2=1.0, cost="assumed")


def cost_per_token(runs: pd.DataFrame, cost: Literal["flops", "time"]) -> pd.Series:
    """Per-token cost of each run: counted FLOPs, or training seconds per token × peak FLOP/s."""
    if cost == "flops":
        return runs["flops_per_token"].astype(float)
    if cost == "time":
        for column in ("train_s", "tokens", "peak_flops"):
            if column not in runs:
                raise UserError(f"cost='time' needs column '{column}'")
        return runs["train_s"] / runs["tokens"] * runs["peak_flops"]
    raise UserError(f"cost must be 'flops' or 'time', got '{cost}'")


def fit_compute_law(runs: pd.DataFrame, cost: Literal["flops", "time"] = "flops") -> ComputeLaw:
    """Regress per-token cost on `n_active` over the completed runs by least squares on
    relative error, Σ((a·N + b)/y − 1)²: an absolute fit would be decided by the largest
    models alone and could miss the smallest by a factor."""
    if "status" in runs:
        runs = completed(runs)
    if "n_active" not in runs:
        raise UserError("the compute law needs column 'n_active'")
    y = cost_per_token(runs, cost).to_numpy(float)
    x = runs["n_active"].to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y) & (y > 0)
    x, y = x[ok], y[ok]
    if len(np.unique(x)) < 2:
        raise UserError("the compute law needs runs of at least 2 different n_active")
    design = np.stack([x / y, 1.0 / y], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
    fitted = a * x + b
    residual = np.sum((y - fitted) ** 2)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return ComputeLaw(
        a=float(a),
        b=float(b),
        r2=float(r2),
        cost=cost,
        n_runs=int(len(x)),
        max_rel_error=float(np.max(np.abs(fitted / y - 1.0))),
    )
