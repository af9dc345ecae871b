"""The compute law C ≈ a·N·D + b·D: least squares of cost per token on activated parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from moescale.errors import UserError

# Hunyuan-Large report (arXiv 2411.02265, §2.3.1): C ≈ 9.59·N·D + 2.3e8·D for its MoE family.
HUNYUAN_A, HUNYUAN_B = 9.59, 2.3e8
DENSE_A = 6.0  # the 6ND rule of dense transformers (Kaplan et al. 2020)


@dataclass(frozen=True)
class ComputeLaw:
    """flops_per_token ≈ a·n_active + b, i.e. C ≈ a·N·D + b·D."""

    a: float
    b: float
    r2: float
    cost: str = "flops"
    n_runs: int = 0

    def flops_per_token(self, n_active: float | np.ndarray) -> float | np.ndarray:
        return self.a * np.asarray(n_active, float) + self.b

    def tokens(self, flops: float | np.ndarray, n_active: float | np.ndarray) -> float | np.ndarray:
        """D = C / (a·N + b)."""
        return np.asarray(flops, float) / self.flops_per_token(n_active)

    def summary(self) -> str:
        what = "exact FLOP counts" if self.cost == "flops" else "measured time × peak FLOP/s"
        return (
            f"C ≈ {self.a:.3f}·N·D + {self.b:.3g}·D  (R² {self.r2:.4f}, {self.n_runs} runs, {what}); "
            f"dense rule 6·N·D; Hunyuan-Large report {HUNYUAN_A}·N·D + {HUNYUAN_B:.2g}·D"
        )

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "r2": self.r2, "cost": self.cost, "n_runs": self.n_runs}


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
    """Regress per-token cost on `n_active` over the completed runs (ordinary least squares)."""
    if "status" in runs:
        runs = runs[runs["status"] == "completed"]
    if "n_active" not in runs:
        raise UserError("the compute law needs column 'n_active'")
    y = cost_per_token(runs, cost).to_numpy(float)
    x = runs["n_active"].to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y) & (y > 0)
    x, y = x[ok], y[ok]
    if len(np.unique(x)) < 2:
        raise UserError("the compute law needs runs of at least 2 different n_active")
    a, b = np.polyfit(x, y, 1)
    residual = np.sum((y - (a * x + b)) ** 2)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - residual / total if total > 0 else 1.0
    return ComputeLaw(a=float(a), b=float(b), r2=float(r2), cost=cost, n_runs=int(len(x)))
