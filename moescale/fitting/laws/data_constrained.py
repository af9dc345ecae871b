"""The data-constrained law of Muennighoff et al. 2023 ("Scaling Data-Constrained Language
Models", arXiv 2305.16264, §4): repeated tokens are worth less than fresh ones, and their
value decays with the number of repetitions. With U_D unique tokens read D/U_D times,

    U_D = min(D, unique tokens of the corpus)      the unique tokens the run saw
    R_D = D/U_D − 1                                repetitions beyond the first pass
    D'  = U_D + U_D·R*_D·(1 − exp(−R_D/R*_D))      effective data
    L   = E + A/N'^α + B/D'^β

and, for parameters beyond what U_D can feed (optional, `excess_params`), U_N = min(N, the
Chinchilla-optimal N of the compute whose optimal data is U_D), R_N = max(N/U_N − 1, 0) and
N' = U_N + U_N·R*_N·(1 − exp(−R_N/R*_N)). Fitted as the paper does, in two stages — the base
law (E, A, B, α, β) on the runs that read their data at most once (Approach 3's robust fit),
then R*_D (and R*_N) with the base fixed, by the same Huber loss on log L from several starts
— and then, unless the base is given, polished jointly so that the repeated runs inform the
fresh-data law too (with few single-pass runs, the base alone is not identified).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from moescale.errors import UserError
from moescale.fitting.laws.budgets import group_budgets
from moescale.fitting.laws.parametric import ParametricFit, fit_parametric, theta_of
from moescale.fitting.laws.powerlaw import percentile_interval
from moescale.fitting.laws.resample import draw_runs, what_is_resampled
from moescale.published.constants import (
    MUENNIGHOFF_FREE_EPOCHS,
    MUENNIGHOFF_R_STAR_D,
    MUENNIGHOFF_R_STAR_N,
)
from moescale.results import completed

REPEAT_THRESHOLD = MUENNIGHOFF_FREE_EPOCHS  # passes over the data that cost little
R_STAR_STARTS = (1.0, 3.0, 10.0, 100.0)  # beside the paper's own values, the first start
LOG_R_STAR_BOUNDS = (np.log(0.1), np.log(1e4))


def epochs(tokens, unique_tokens) -> np.ndarray:
    """Passes over the data: tokens read ÷ unique tokens."""
    return np.asarray(tokens, float) / np.asarray(unique_tokens, float)


def _decayed(unique: np.ndarray, repeats: np.ndarray, r_star: float) -> np.ndarray:
    return unique + unique * r_star * (1.0 - np.exp(-repeats / r_star))


@dataclass(frozen=True)
class DataConstrainedFit:
    """L(N, D, U_D) = E + A/N'^α + B/D'^β with the base law and the decay constants."""

    base: ParametricFit  # the law of fresh data
    r_star_d: float
    r_star_n: float | None = None  # None: the excess-parameter term is off
    objective: float = 0.0
    n_points: int = 0
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    interval_note: str = ""
    # bootstrap (R*_D, R*_N or nan) rows
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def effective_tokens(self, d, unique_d) -> np.ndarray:
        """D' of a run that read D tokens of a corpus of `unique_d` (U_D: the unique tokens
        it saw, at most D)."""
        d = np.asarray(d, float)
        seen = np.minimum(d, np.asarray(unique_d, float))
        return _decayed(seen, d / seen - 1.0, self.r_star_d)

    def effective_params(self, n, d, unique_d) -> np.ndarray:
        n = np.asarray(n, float)
        if self.r_star_n is None:
            return n
        unique_d = np.minimum(np.asarray(d, float), np.asarray(unique_d, float))
        b = self.base
        # the compute whose Chinchilla-optimal data is U_D, then its optimal N (C = 6ND)
        g = (b.alpha * b.A / (b.beta * b.B)) ** (1.0 / (b.alpha + b.beta))
        compute = 6.0 * (g * np.asarray(unique_d, float)) ** ((b.alpha + b.beta) / b.alpha)
        unique_n = np.minimum(n, g * (compute / 6.0) ** (b.beta / (b.alpha + b.beta)))
        return _decayed(unique_n, np.maximum(n / unique_n - 1.0, 0.0), self.r_star_n)

    def loss(self, n, d, unique_d) -> np.ndarray:
        return self.base.loss(
            self.effective_params(n, d, unique_d), self.effective_tokens(d, unique_d)
        )

    def repetition_penalty(self, n, d, unique_d) -> np.ndarray:
        """How much worse the loss is for reading U_D unique tokens D/U_D times than D fresh
        tokens: the correction that turns a repeated run into its fresh-data equivalent."""
        return self.loss(n, d, unique_d) - self.base.loss(n, d)

    def to_dict(self) -> dict:
        return {
            "form": "E + A/N'^alpha + B/D'^beta, D' = U_D + U_D·R*_D·(1 − exp(−R_D/R*_D)) (Muennighoff et al. 2023)",
            "base": self.base.to_dict(),
            "r_star_d": self.r_star_d,
            "r_star_n": self.r_star_n,
            "objective": self.objective,
            "n_points": self.n_points,
            "intervals": self.intervals,
            "interval_note": self.interval_note,
            "samples": None if self.samples is None else self.samples.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> DataConstrainedFit:
        samples = data.get("samples")
        return cls(
            base=ParametricFit.from_dict(data["base"]),
            r_star_d=data["r_star_d"],
            r_star_n=data.get("r_star_n"),
            objective=data.get("objective", 0.0),
            n_points=data.get("n_points", 0),
            intervals={k: tuple(v) for k, v in data.get("intervals", {}).items()},
            interval_note=data.get("interval_note", ""),
            samples=None if samples is None else np.asarray(samples, float),
        )


def _fit_r_stars(
    base: ParametricFit,
    n: np.ndarray,
    d: np.ndarray,
    unique_d: np.ndarray,
    log_loss: np.ndarray,
    delta: float,
    excess_params: bool,
    starts: list[tuple[float, ...]],
) -> tuple[float, float | None, float]:
    """(R*_D, R*_N or None, objective): the decay constants by Huber loss on log L."""

    def objective(theta: np.ndarray) -> float:
        fit = DataConstrainedFit(
            base, float(np.exp(theta[0])), float(np.exp(theta[1])) if excess_params else None
        )
        residual = np.log(fit.loss(n, d, unique_d)) - log_loss
        size = np.abs(residual)
        return float(np.where(size <= delta, 0.5 * residual**2, delta * (size - 0.5 * delta)).sum())

    best = None
    for start in starts:
        x0 = np.log(np.asarray(start[: 2 if excess_params else 1], float))
        result = minimize(
            objective, x0, method="L-BFGS-B", bounds=[LOG_R_STAR_BOUNDS] * len(x0),
            options={"ftol": 1e-15, "gtol": 1e-12},
        )  # fmt: skip
        if best is None or result.fun < best.fun:
            best = result
    r_star_n = float(np.exp(best.x[1])) if excess_params else None
    return float(np.exp(best.x[0])), r_star_n, float(best.fun)


def _joint_objective(n, d, unique_d, log_loss, delta: float):
    """The joint fit's Huber loss on log L and its exact gradient, as one function of
    x = (log A, log B, log E, α, β, log R*_D) for a law without the excess-parameter term."""
    seen = np.minimum(d, unique_d)
    repeats = d / seen - 1.0
    log_n = np.log(n)

    def value_and_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
        a, b, e, alpha, beta, log_r = x
        r_star = np.exp(log_r)
        decay = np.exp(-repeats / r_star)
        effective = seen + seen * r_star * (1.0 - decay)  # D'
        with np.errstate(over="ignore"):  # an extreme step's inf, as the law itself gives
            n_term = np.exp(a - alpha * log_n)
            d_term = np.exp(b - beta * np.log(effective))
        loss = np.exp(e) + n_term + d_term
        residual = np.log(loss) - log_loss
        size = np.abs(residual)
        value = np.where(size <= delta, 0.5 * residual**2, delta * (size - 0.5 * delta)).sum()
        weight = np.clip(residual, -delta, delta) / loss  # dHuber/dres · dres/dL
        # dD'/d log R*_D = R*·dD'/dR* = U·(R*·(1 − e^(−R/R*)) − R·e^(−R/R*))
        d_effective = seen * (r_star * (1.0 - decay) - repeats * decay)
        gradient = np.array(
            [
                weight @ n_term,
                weight @ d_term,
                weight.sum() * np.exp(e),
                -(weight * n_term) @ log_n,
                -(weight * d_term) @ np.log(effective),
                -beta * (weight * d_term / effective) @ d_effective,
            ]
        )
        return float(value), gradient

    return value_and_gradient


def _polish_jointly(
    base: ParametricFit,
    r_d: float,
    r_n: float | None,
    n: np.ndarray,
    d: np.ndarray,
    unique_d: np.ndarray,
    log_loss: np.ndarray,
    delta: float,
) -> tuple[ParametricFit, float, float | None, float]:
    """Every parameter at once, from the two-stage solution: the repeated runs then inform
    the fresh-data law as well (the paper's two stages use only single-pass runs for it)."""
    k = 1 if r_n is None else 2

    def unpack(x: np.ndarray) -> DataConstrainedFit:
        law = ParametricFit.from_theta(x[:5], objective=0.0, n_points=0, huber_delta=delta)
        return DataConstrainedFit(
            law, float(np.exp(x[5])), None if r_n is None else float(np.exp(x[6]))
        )

    def differenced(x: np.ndarray) -> float:  # with the excess-parameter term: no gradient
        residual = np.log(unpack(x).loss(n, d, unique_d)) - log_loss
        size = np.abs(residual)
        return float(np.where(size <= delta, 0.5 * residual**2, delta * (size - 0.5 * delta)).sum())

    x0 = np.concatenate([theta_of(base), np.log([r_d] + ([r_n] if k == 2 else []))])
    bounds = [(None, None)] * 3 + [(0.0, 2.5)] * 2 + [LOG_R_STAR_BOUNDS] * k
    # the usual law: its exact gradient, ~8x fewer evaluations than finite differences
    objective = _joint_objective(n, d, unique_d, log_loss, delta) if k == 1 else differenced
    result = minimize(
        objective,
        x0,
        jac=k == 1,
        method="L-BFGS-B",
        bounds=bounds,
        options={"ftol": 1e-15, "gtol": 1e-10},
    )
    fit = unpack(result.x)
    law = replace(
        base, E=fit.base.E, A=fit.base.A, B=fit.base.B, alpha=fit.base.alpha, beta=fit.base.beta,
        objective=float(result.fun), n_points=len(n),
    )  # fmt: skip
    return law, fit.r_star_d, fit.r_star_n, float(result.fun)


def _fresh_data_law(table: pd.DataFrame, huber_delta: float) -> ParametricFit:
    """The paper's first stage: the parametric law on the runs that read their data at most
    once."""
    fresh = table[
        table["tokens"].to_numpy(float) <= table["unique_tokens"].to_numpy(float) * (1 + 1e-9)
    ]
    if len(fresh) < 6:
        raise UserError(
            f"data-constrained fit: {len(fresh)} runs read their data at most once; the base "
            "law needs at least 6"
        )
    return fit_parametric(fresh, huber_delta=huber_delta)


def _resampled_fits(
    members: list[np.ndarray],
    columns: tuple[np.ndarray, ...],
    law: ParametricFit,
    r_stars: tuple[float, float | None],
    base: ParametricFit | None,
    huber_delta: float,
    excess_params: bool,
    bootstrap: int,
    seed: int,
) -> tuple[list[tuple[float, float]], list[np.ndarray]]:
    """(R*_D, R*_N) and the fresh-data law's parameters refitted on two-stage resamples
    (budgets, then runs within each) of the (N, D, U_D, log loss) columns; a draw with no
    repeated run is skipped (R* is not defined by it)."""
    n, d, unique_d, log_loss = columns
    r_d, r_n = r_stars
    rng = np.random.default_rng(seed)
    draws, base_draws = [], []
    for _ in range(bootstrap):
        pick = draw_runs(members, rng)
        if (d[pick] <= unique_d[pick] * (1 + 1e-9)).all():
            continue
        args = (n[pick], d[pick], unique_d[pick], log_loss[pick], huber_delta)
        if base is None:
            law_b, rd, rn, _ = _polish_jointly(law, r_d, r_n, *args)
        else:
            law_b = base
            rd, rn, _ = _fit_r_stars(law_b, *args, excess_params, [(r_d, r_n or r_d)])
        draws.append((rd, np.nan if rn is None else rn))
        base_draws.append(theta_of(law_b))
    return draws, base_draws


def fit_data_constrained(
    table: pd.DataFrame,
    *,
    excess_params: bool = False,
    base: ParametricFit | None = None,
    huber_delta: float = 1e-3,
    bootstrap: int = 0,
    seed: int = 0,
) -> DataConstrainedFit:
    """Fit the data-constrained law (module docstring) to a table with a unique-tokens
    column. `base` fixes the fresh-data law (the paper's second stage alone); without it,
    the paper's two stages (the base on the runs with D ≤ U_D, then the decay constants from
    the paper's values and a few others) are followed by a joint polish of every parameter. `bootstrap` > 0
    redoes both stages on two-stage resamples (budgets, then runs) for 95% intervals."""
    if "status" in table:
        table = completed(table)
    for column in ("n_active", "tokens", "final_loss", "unique_tokens"):
        if column not in table:
            raise UserError(f"data-constrained fit: missing column '{column}'")
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise UserError(
                f"data-constrained fit: column '{column}' has NaN or non-positive values"
            )
    n, d, unique_d = (table[c].to_numpy(float) for c in ("n_active", "tokens", "unique_tokens"))
    log_loss = np.log(table["final_loss"].to_numpy(float))
    fresh = d <= unique_d * (1 + 1e-9)
    if not (~fresh).any():
        raise UserError("data-constrained fit: no run repeats its data (every D ≤ U_D)")

    law = base if base is not None else _fresh_data_law(table, huber_delta)
    starts = [(MUENNIGHOFF_R_STAR_D, MUENNIGHOFF_R_STAR_N)] + [(r, r) for r in R_STAR_STARTS]
    r_d, r_n, objective = _fit_r_stars(
        law, n, d, unique_d, log_loss, huber_delta, excess_params, starts
    )
    if base is None:  # then every run, repeated or not, informs the fresh-data law too
        law, r_d, r_n, objective = _polish_jointly(
            law, r_d, r_n, n, d, unique_d, log_loss, huber_delta
        )
    intervals, samples, note = {}, None, "no bootstrap asked for"
    if bootstrap > 0:
        group, centres = (
            group_budgets(table["budget_flops"].to_numpy(float))
            if "budget_flops" in table
            else (np.zeros(len(table), dtype=int), np.ones(1))
        )
        members = [np.flatnonzero(group == g) for g in range(len(centres))]
        columns = (n, d, unique_d, log_loss)
        draws, base_draws = _resampled_fits(
            members, columns, law, (r_d, r_n), base, huber_delta, excess_params, bootstrap, seed
        )
        samples = np.array(draws) if draws else None
        if samples is not None:
            intervals["r_star_d"] = percentile_interval(samples[:, 0])
            if excess_params:
                intervals["r_star_n"] = percentile_interval(samples[:, 1])
        note = f"{len(draws)} bootstrap refits: " + what_is_resampled(
            len(members), "runs within each budget with replacement"
        )
        if base is None and base_draws:  # the fresh-data law carries its own bootstrap
            law = replace(law, samples=np.array(base_draws), interval_note=note)
    return DataConstrainedFit(
        base=law,
        r_star_d=r_d,
        r_star_n=r_n,
        objective=objective,
        n_points=len(table),
        intervals=intervals,
        interval_note=note,
        samples=samples,
    )
