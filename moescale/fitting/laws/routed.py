"""Clark et al. (2022), "Unified Scaling Laws for Routed Language Models" (arXiv 2202.01169):
loss against the dense model size N and the expert count E,

    log10 L = a·log10 N + b·log10 Ê + c·log10 N·log10 Ê + d,

with Ê their saturating transform of E: Ê = 1 / (1/(E − 1 + (1/E_start − 1/E_max)⁻¹) + 1/E_max),
which maps E = 1 (dense) to E_start and saturates at E_max. For a given (E_start, E_max) the law
is linear in (a, b, c, d); those two are found by a bounded search on their logs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from moescale.errors import UserError


def saturating_experts(experts: np.ndarray, e_start: float, e_max: float) -> np.ndarray:
    """Clark et al.'s Ê(E)."""
    experts = np.asarray(experts, float)
    offset = 1.0 / (1.0 / e_start - 1.0 / e_max)
    return 1.0 / (1.0 / (experts - 1.0 + offset) + 1.0 / e_max)


@dataclass(frozen=True)
class RoutedFit:
    a: float
    b: float
    c: float
    d: float
    e_start: float
    e_max: float
    rmse_log10: float  # root-mean-square error in log10 loss
    n_points: int

    def loss(self, n: float | np.ndarray, experts: float | np.ndarray) -> np.ndarray:
        log_n = np.log10(np.asarray(n, float))
        log_e = np.log10(saturating_experts(experts, self.e_start, self.e_max))
        return 10 ** (self.a * log_n + self.b * log_e + self.c * log_n * log_e + self.d)

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("a", "b", "c", "d", "e_start", "e_max", "rmse_log10", "n_points")
        }


def _linear_fit(log_n, log_e, log_l):
    design = np.stack([log_n, log_e, log_n * log_e, np.ones_like(log_n)], axis=1)
    coeffs, *_ = np.linalg.lstsq(design, log_l, rcond=None)
    return coeffs, float(np.sqrt(np.mean((design @ coeffs - log_l) ** 2)))


def fit_routed(table: pd.DataFrame, n_col: str, experts_col: str, loss_col: str) -> RoutedFit:
    """Fit Clark et al.'s routed law to a table with a dense-size, an expert-count and a loss column."""
    for column in (n_col, experts_col, loss_col):
        if column not in table:
            raise UserError(f"routed fit: missing column '{column}'")
    n = table[n_col].to_numpy(float)
    experts = table[experts_col].to_numpy(float)
    loss = table[loss_col].to_numpy(float)
    if np.any(~np.isfinite(n) | ~np.isfinite(loss) | (n <= 0) | (loss <= 0) | (experts < 1)):
        raise UserError("routed fit: sizes and losses must be positive and expert counts >= 1")
    if len(np.unique(experts)) < 3:
        raise UserError("routed fit: needs at least 3 different expert counts")
    log_n, log_l = np.log10(n), np.log10(loss)

    def rmse(params: np.ndarray) -> float:
        e_start, e_max = (
            1.0 + np.exp(np.clip(params[0], -20, 20)),
            np.exp(np.clip(params[1], -20, 20)),
        )
        if e_max <= e_start:
            return 1e3
        return _linear_fit(log_n, np.log10(saturating_experts(experts, e_start, e_max)), log_l)[1]

    starts = [np.log([s - 1.0, m]) for s in (1.5, 2.0, 4.0) for m in (64.0, 256.0, 1024.0)]
    best = min(
        (
            minimize(rmse, s, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-12})
            for s in starts
        ),
        key=lambda r: r.fun,
    )
    e_start, e_max = 1.0 + float(np.exp(best.x[0])), float(np.exp(best.x[1]))
    (a, b, c, d), error = _linear_fit(
        log_n, np.log10(saturating_experts(experts, e_start, e_max)), log_l
    )
    return RoutedFit(float(a), float(b), float(c), float(d), e_start, e_max, error, len(n))
