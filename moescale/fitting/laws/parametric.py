"""Approach 3: the parametric law L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022),
fitted as Epoch's replication does (Besiroglu et al. 2024, arXiv 2404.10102): the sum of
Huber losses between log L and its log-sum-exp form

    log L̂ = LSE(a − alpha·log N, b − beta·log D, e),  A = e^a, B = e^b, E = e^e,

minimised from a grid of starting points. All starts are optimised together by a vectorised
quasi-Newton (BFGS) method in numpy; the best is then polished by scipy's L-BFGS-B.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from moescale.errors import UserError
from moescale.fitting.laws.budgets import group_budgets
from moescale.fitting.laws.compute_law import DEFAULT_LAW, ComputeLaw
from moescale.fitting.laws.powerlaw import percentile_interval
from moescale.fitting.laws.resample import draw_by_position, position_pools, robust_sd
from moescale.results import RunStatus

PARAMS = ("a", "b", "e", "alpha", "beta")
PREDICTION_SEED = 7  # the run-scatter draws' own stream, apart from the bootstrap's
# the median of a χ² with one degree of freedom: median(e²)/0.455 estimates a mean square
# that one far-off held-out run cannot inflate
CHI2_1_MEDIAN = 0.4549

# starts for a refit on part of a sweep (`refit_on`): this coarse grid (3^5 = 243) plus the
# full fit's own optimum — the full 4,500 where the part's law is near the whole's is waste
REFIT_GRID = {
    "a": np.array([0.0, 10.0, 20.0]),
    "b": np.array([0.0, 10.0, 20.0]),
    "e": np.array([-1.0, 0.0, 1.0]),
    "alpha": np.array([0.2, 0.5, 1.0]),
    "beta": np.array([0.2, 0.5, 1.0]),
}

# The start grid is screened: every start takes SCREEN_STEPS BFGS steps and only the
# SCREEN_KEEP lowest go on to convergence. On every real data set in ../shared/data and on
# simulated sweeps of every design this ends at the full grid's objective (to 1e-13 of it:
# `python -m benchmarks.bench_fitting --screen`) 10–20× sooner.
SCREEN_STEPS = 5
SCREEN_KEEP = 128

EXP_CAP = 700.0  # exp(700) ≈ 1e304: two capped terms still sum below float64's maximum

# Epoch's grid of starting points: 6 × 6 × 5 × 5 × 5 = 4,500 (their analysis notebook).
EPOCH_GRID = {
    "a": np.arange(0, 30, 5.0),
    "b": np.arange(0, 30, 5.0),
    "e": np.arange(-1, 1.5, 0.5),
    "alpha": np.arange(0, 2.5, 0.5),
    "beta": np.arange(0, 2.5, 0.5),
}


@dataclass(frozen=True)
class ParametricFit:
    """L(N, D) = E + A/N^alpha + B/D^beta with bootstrap intervals when asked for."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float  # the minimised sum of Huber losses
    n_points: int
    huber_delta: float
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    excluded: tuple[str, ...] = ()
    interval_note: str = ""  # what the bootstrap resampled
    # bootstrap parameter vectors [S, 5] as (log A, log B, log E, alpha, beta)
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)
    # what a run's log loss scatters about the law beyond the parameters' own spread: the
    # runs' noise (robust s.d. of the log residuals) and the law's extrapolation error
    # (`extrapolation_scatter`); both 0 without a bootstrap
    noise_log_sd: float = 0.0
    extrapolation_log_sd: float = 0.0

    @classmethod
    def from_theta(cls, theta: np.ndarray, **rest) -> ParametricFit:
        a, b, e, alpha, beta = (float(v) for v in theta)
        return cls(
            E=float(np.exp(e)),
            A=float(np.exp(a)),
            B=float(np.exp(b)),
            alpha=alpha,
            beta=beta,
            **rest,
        )

    def loss(self, n: float | np.ndarray, d: float | np.ndarray) -> float | np.ndarray:
        n, d = np.asarray(n, float), np.asarray(d, float)
        with np.errstate(over="ignore"):  # a bootstrap fit's extreme exponent: an inf, not noise
            return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def run_scatter(self, shape: tuple[int, ...]) -> np.ndarray:
        """Multiplicative draws of a run's noise and the law's extrapolation error about its
        expected loss, to widen the bootstrap's parameter draws into a prediction interval
        for a run's loss (not only the law's mean). Seeded: a fit's intervals are repeatable."""
        scale = float(np.hypot(self.noise_log_sd, self.extrapolation_log_sd))
        return np.exp(scale * np.random.default_rng(PREDICTION_SEED).standard_normal(shape))

    def loss_draws(self, n: float, d: float) -> np.ndarray:
        """Draws of the loss a run of n parameters on d tokens reaches: every bootstrap fit's
        value there times `run_scatter` (empty without samples)."""
        if self.samples is None:
            return np.array([])
        log_a, log_b, log_e, alpha, beta = self.samples.T
        with np.errstate(over="ignore"):
            mean = np.exp(log_e) + np.exp(log_a) / n**alpha + np.exp(log_b) / d**beta
        return mean * self.run_scatter(mean.shape)

    @property
    def allocation_exponent(self) -> float:
        """a in N_opt ∝ C^a under C = 6ND: beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    def optimal(self, flops: float, compute_law: ComputeLaw | None = None) -> dict[str, float]:
        """N_opt, D_opt and loss minimising L(N, D) subject to C = a·N·D + b·D (6ND if None)."""
        optima = optima_of(theta_of(self)[None, :], flops, compute_law)
        return {key: float(values[0]) for key, values in optima.items()}

    def draws(self, flops: float, compute_law: ComputeLaw | None = None) -> dict[str, np.ndarray]:
        """Every bootstrap fit's optimum at `flops` (D = C/(a·N + b) in each, so every draw
        spends C): arrays of n_opt, d_opt and loss_opt (empty without samples); loss_opt is
        the loss a run trained there reaches (`run_scatter` included)."""
        if self.samples is None or len(self.samples) == 0:
            return {}
        out = optima_of(self.samples, flops, compute_law)
        out["loss_opt"] = out["loss_opt"] * self.run_scatter(out["loss_opt"].shape)
        return out

    def predict(self, flops: float, compute_law: ComputeLaw | None = None) -> dict:
        """The optimum at `flops` under the compute law, with 95% intervals from its
        bootstrap fits' optima (`draws`)."""
        out = {"flops": float(flops), **self.optimal(flops, compute_law)}
        draws = self.draws(flops, compute_law)
        for key in ("n_opt", "d_opt", "loss_opt"):
            out[f"{key}_interval"] = percentile_interval(draws.get(key, []))
        return out

    def to_dict(self) -> dict:
        return {
            "E": self.E,
            "A": self.A,
            "B": self.B,
            "alpha": self.alpha,
            "beta": self.beta,
            "allocation_exponent": self.allocation_exponent,
            "objective": self.objective,
            "n_points": self.n_points,
            "huber_delta": self.huber_delta,
            "intervals": self.intervals,
            "excluded": list(self.excluded),
            "interval_note": self.interval_note,
            "samples": None if self.samples is None else self.samples.tolist(),
            "noise_log_sd": self.noise_log_sd,
            "extrapolation_log_sd": self.extrapolation_log_sd,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ParametricFit:
        samples = data.get("samples")
        return cls(
            E=data["E"],
            A=data["A"],
            B=data["B"],
            alpha=data["alpha"],
            beta=data["beta"],
            objective=data["objective"],
            n_points=data["n_points"],
            huber_delta=data["huber_delta"],
            intervals={k: tuple(v) for k, v in data.get("intervals", {}).items()},
            excluded=tuple(data.get("excluded", ())),
            interval_note=data.get("interval_note", ""),
            samples=None if samples is None else np.asarray(samples, float),
            noise_log_sd=data.get("noise_log_sd", 0.0),
            extrapolation_log_sd=data.get("extrapolation_log_sd", 0.0),
        )


GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
OPTIMUM_LOG_N_TOL = 1e-10  # the optimum's log N to this (N to 1e-10 of itself)


def optima_of(
    thetas: np.ndarray, flops: float, compute_law: ComputeLaw | None = None
) -> dict[str, np.ndarray]:
    """The optimum of each law in `thetas` [S, 5] ((log A, log B, log E, alpha, beta)) at
    `flops` under the compute law (6ND if None): arrays of n_opt, d_opt and loss_opt. The
    loss along a budget is unimodal in log N, so a golden-section search between N = 1 and
    N = C/a finds every law's minimum at once (a bootstrap's hundreds of draws in one pass)."""
    law = compute_law or DEFAULT_LAW
    a, b, e, alpha, beta = (thetas[:, i] for i in range(5))

    def loss(log_n: np.ndarray) -> np.ndarray:
        log_d = np.log(law.tokens(flops, np.exp(log_n)))
        with np.errstate(over="ignore"):  # a bootstrap fit's extreme exponent: an inf, not noise
            return np.exp(e) + np.exp(a - alpha * log_n) + np.exp(b - beta * log_d)

    low = np.zeros(len(thetas))
    high = np.full(len(thetas), np.log(flops / law.a))
    inner_low, inner_high = high - GOLDEN * (high - low), low + GOLDEN * (high - low)
    f_low, f_high = loss(inner_low), loss(inner_high)
    # the bracket shrinks by GOLDEN a step: about 60 steps from ln(C/a) ≈ 60 to 1e-10
    width = max(float(np.max(high)), OPTIMUM_LOG_N_TOL)
    for _ in range(int(np.ceil(np.log(OPTIMUM_LOG_N_TOL / width) / np.log(GOLDEN))) + 1):
        left = f_low < f_high  # the minimum lies in [low, inner_high]
        high = np.where(left, inner_high, high)
        low = np.where(left, low, inner_low)
        probe = np.where(left, high - GOLDEN * (high - low), low + GOLDEN * (high - low))
        f_probe = loss(probe)
        # left: the old inner_low becomes inner_high; else the old inner_high becomes inner_low
        inner_low, inner_high = (
            np.where(left, probe, inner_high),
            np.where(left, inner_low, probe),
        )
        f_low, f_high = np.where(left, f_probe, f_high), np.where(left, f_low, f_probe)
    log_n = (low + high) / 2
    n_opt = np.exp(log_n)
    return {"n_opt": n_opt, "d_opt": law.tokens(flops, n_opt), "loss_opt": loss(log_n)}


def _objective_and_gradient(
    theta: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_loss: np.ndarray,
    delta: float,
    gradient: bool = True,
    designs: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Sum of Huber losses (and its gradient) for many parameter vectors theta [S, 5] at once.
    The sum E + A/N^α + B/D^β is taken relative to E (a per-row shift that costs nothing):
    1 + its two terms over E never underflows, and each term is capped at exp(EXP_CAP), so a
    wild line-search step has a large finite objective and a finite gradient. `designs`:
    `gradient_designs(log_n, log_d)`, made once by a caller that asks many times."""
    a, b, e, alpha, beta = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3], theta[:, 3:4], theta[:, 4:5]
    term_n = np.exp(np.minimum((a - e) - alpha * log_n, EXP_CAP))  # A N^−α / E
    term_d = np.exp(np.minimum((b - e) - beta * log_d, EXP_CAP))  # B D^−β / E
    total = term_n + term_d
    total += 1.0
    residual = np.log(total)
    residual += e - log_loss
    # Huber(r) = c (r - c/2) with c = clip(r, -δ, δ); c is also Huber'(r)
    clipped = np.clip(residual, -delta, delta)
    huber = np.einsum("sp,sp->s", clipped, residual - 0.5 * clipped)
    if not gradient:
        return huber, None
    clipped /= total  # Huber'(r) / the relative sum: d r / d log(each term)
    w_n, w_d = clipped * term_n, clipped * term_d
    design_n, design_d = designs or gradient_designs(log_n, log_d)
    grad = np.empty((theta.shape[0], 5))
    grad[:, [0, 3]] = w_n @ design_n
    grad[:, [1, 4]] = w_d @ design_d
    grad[:, 2] = clipped.sum(1)
    return huber, grad


def gradient_designs(log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d log(term) / d (log A, alpha) and d / d (log B, beta) per run: [1, −log N], [1, −log D]."""
    return (
        np.column_stack([np.ones_like(log_n), -log_n]),
        np.column_stack([np.ones_like(log_d), -log_d]),
    )


def batched_bfgs(
    starts: np.ndarray, fun, max_iter: int = 100, gtol: float = 1e-9, ftol: float = 1e-13
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimise `fun(x [S, P], rows, gradient=bool)` from every start at once: BFGS with a
    backtracking Armijo line search per start; converged starts drop out of the batch.
    `rows` are the starts' indices among all (an objective may differ by row: the
    bootstrap's draws); every row's steps depend on its own values only. Returns the end
    points, their values, and which rows stopped by a test of their own (not at max_iter)."""
    x = starts.astype(float).copy()
    n_starts, n_params = x.shape
    f, g = fun(x, np.arange(n_starts))
    h_inv = np.broadcast_to(np.eye(n_params), (n_starts, n_params, n_params)).copy()
    h_inv /= np.maximum(np.linalg.norm(g, axis=1), 1e-12)[:, None, None]
    active = np.arange(n_starts)
    for _ in range(max_iter):
        if active.size == 0:
            break
        xa, fa, ga, ha = x[active], f[active], g[active], h_inv[active]
        direction = -np.einsum("sij,sj->si", ha, ga)
        slope = np.einsum("si,si->s", direction, ga)
        uphill = slope >= 0
        if uphill.any():  # lost curvature: restart from steepest descent
            ha[uphill] = (
                np.eye(n_params)
                / np.maximum(np.linalg.norm(ga[uphill], axis=1), 1e-12)[:, None, None]
            )
            direction[uphill] = -np.einsum("sij,sj->si", ha[uphill], ga[uphill])
            slope[uphill] = np.einsum("si,si->s", direction[uphill], ga[uphill])
        step = np.ones(active.size)
        accepted = np.zeros(active.size, bool)
        f_new = fa.copy()
        for _ in range(30):
            trying = ~accepted
            if not trying.any():
                break
            candidate = xa[trying] + step[trying, None] * direction[trying]
            values, _ = fun(candidate, active[trying], gradient=False)
            ok = values <= fa[trying] + 1e-4 * step[trying] * slope[trying]
            idx = np.flatnonzero(trying)
            accepted[idx[ok]] = True
            f_new[idx[ok]] = values[ok]
            step[idx[~ok]] *= 0.5
        moved = accepted
        s = step[:, None] * direction
        x_new = np.where(moved[:, None], xa + s, xa)
        _, g_new = fun(x_new, active)
        y = g_new - ga
        sy = np.einsum("si,si->s", s, y)
        update = moved & (sy > 1e-12)
        if update.any():
            hs, ss, ys, sys_ = ha[update], s[update], y[update], sy[update]
            rho = 1.0 / sys_
            eye = np.eye(n_params)
            left = eye - rho[:, None, None] * np.einsum("si,sj->sij", ss, ys)
            # (I − ρ s yᵀ) H (I − ρ y sᵀ) + ρ s sᵀ. Batched matrix products would be faster
            # for the joint law's ~10 parameters, but they sum in another order, and that
            # alone moves results/example's held-out lack-of-fit z-scores by up to 0.5%
            # (measured): its bootstrap refits of the lower budgets are pinned that loosely
            ha[update] = np.einsum("sij,sjk,slk->sil", left, hs, left) + rho[
                :, None, None
            ] * np.einsum("si,sj->sij", ss, ss)
        x[active], g[active], h_inv[active] = x_new, np.where(moved[:, None], g_new, ga), ha
        f_old = fa
        f[active] = np.where(moved, f_new, fa)
        done = (
            (~moved)
            | (np.abs(g[active]).max(1) < gtol)
            | (f_old - f[active] <= ftol * np.maximum(1.0, np.abs(f_old)))
        )
        active = active[~done]
    stopped = np.ones(n_starts, bool)
    stopped[active] = False
    return x, f, stopped


def _lowest(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` lowest finite values, lowest first."""
    return np.argsort(np.where(np.isfinite(values), values, np.inf))[:count]


def minimise_from_starts(
    fun, starts: np.ndarray, polish: int = 8, screen: bool = True
) -> tuple[np.ndarray, float]:
    """Best (theta, objective) of `fun(theta [S, P], gradient=bool)`: a grid of more than
    SCREEN_KEEP starts is screened first (SCREEN_STEPS BFGS steps from each, the lowest
    SCREEN_KEEP go on; `screen=False` takes every start on, the reference the screen is
    checked against), then batched BFGS, then L-BFGS-B from the `polish` best distinct end
    points (the batch stops early; the polish finishes)."""

    def same_for_every_row(x, rows, gradient=True):
        return fun(x, gradient)

    if screen and len(starts) > SCREEN_KEEP:
        ends, values, _ = batched_bfgs(starts, same_for_every_row, max_iter=SCREEN_STEPS)
        starts = ends[_lowest(values, SCREEN_KEEP)]
    ends, values, _ = batched_bfgs(starts, same_for_every_row)
    order = _lowest(values, len(values))
    _, distinct = np.unique(np.round(ends[order], 3), axis=0, return_index=True)
    best_theta, best_value = ends[order[0]], float(values[order[0]])
    for i in order[np.sort(distinct)[:polish]]:
        theta, value = _polish(fun, ends[i])
        if value < best_value:
            best_theta, best_value = theta, value
    return best_theta, best_value


def _polish(fun, start: np.ndarray) -> tuple[np.ndarray, float]:
    """L-BFGS-B from one point of `fun(theta [1, P], gradient=bool)` to tight tolerances."""
    result = minimize(
        lambda th: tuple(v[0] for v in fun(th[None, :])),
        start,
        jac=True,
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 2000},
    )
    return result.x, float(result.fun)


def minimise_each(fun, starts: np.ndarray) -> np.ndarray:
    """Row s of `starts` minimised on its own objective `fun(theta, rows, gradient=bool)`
    (rows: which objectives): batched BFGS for every row at once, then L-BFGS-B from the end
    of each row the batch left at its iteration limit, the lower of the two kept. Rows that
    stopped by the batch's own tests are left as they are: on simulated sweeps of three
    designs (100 draws each) L-BFGS-B moved such a row by at most 2e-8 in any parameter,
    and polishing every row took a quarter of a bootstrap's time."""
    ends, values, stopped = batched_bfgs(starts, fun)
    for s in np.flatnonzero(~stopped):
        theta, value = _polish(
            lambda th, gradient=True, row=np.array([s]): fun(th, row, gradient), ends[s]
        )
        if value < values[s]:
            ends[s] = theta
    return ends


def _fit_once(
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_loss: np.ndarray,
    delta: float,
    starts: np.ndarray,
    screen: bool = True,
) -> tuple[np.ndarray, float]:
    designs = gradient_designs(log_n, log_d)

    def fun(theta: np.ndarray, gradient: bool = True):
        return _objective_and_gradient(theta, log_n, log_d, log_loss, delta, gradient, designs)

    return minimise_from_starts(fun, starts, screen=screen)


def theta_of(fit: ParametricFit) -> np.ndarray:
    """(log A, log B, log E, alpha, beta): the vector the fit is optimised in."""
    return np.array([np.log(fit.A), np.log(fit.B), np.log(fit.E), fit.alpha, fit.beta])


def grid_at(fit: ParametricFit) -> dict[str, np.ndarray]:
    """A one-point start grid at a fit's optimum: refits that should land near it."""
    return {
        "a": np.array([np.log(fit.A)]),
        "b": np.array([np.log(fit.B)]),
        "e": np.array([np.log(fit.E)]),
        "alpha": np.array([fit.alpha]),
        "beta": np.array([fit.beta]),
    }


def start_grid(grid: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The starting points [S, 5] in the order a, b, e, alpha, beta (Epoch's grid by default)."""
    grid = grid or EPOCH_GRID
    return np.array(list(itertools.product(*(grid[p] for p in PARAMS))), dtype=float)


def _at_grid_edge(table: pd.DataFrame) -> np.ndarray:
    """Runs at their budget's smallest or largest size (all False without budgets)."""
    if "budget_flops" not in table:
        return np.zeros(len(table), dtype=bool)
    group = group_budgets(table["budget_flops"].to_numpy(float))[0]
    n = table["n_active"].to_numpy(float)
    edge = np.zeros(len(table), dtype=bool)
    for g in np.unique(group):
        members = group == g
        edge |= members & ((n == n[members].min()) | (n == n[members].max()))
    return edge


def _residual_bootstrap(
    theta: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_loss: np.ndarray,
    huber_delta: float,
    at_edge: np.ndarray,
    bootstrap: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(theta samples [bootstrap, 5], the scaled residuals) of a fixed-design residual
    bootstrap: every run's log loss redrawn as the fit's value plus a residual from the
    sweep's own pool (scaled up for the 5 parameters spent; edge runs from the edge runs'),
    the law refitted from the fit's optimum. Not a case bootstrap of the budgets: drawing 5–9
    budgets with replacement leaves draws that span half the sweep, and an interval several
    times wider than the estimator's own spread."""
    point = ParametricFit.from_theta(theta, objective=0.0, n_points=0, huber_delta=0.0)
    fitted = np.log(point.loss(np.exp(log_n), np.exp(log_d)))
    residual = (log_loss - fitted) * np.sqrt(len(log_n) / max(len(log_n) - 5, 1))
    pools = position_pools(residual, at_edge) or {True: residual, False: residual}
    rng = np.random.default_rng(seed)
    draws = np.array(
        [fitted + draw_by_position(pools, at_edge, (len(residual),), rng) for _ in range(bootstrap)]
    )

    designs = gradient_designs(log_n, log_d)

    def on_draws(x: np.ndarray, rows: np.ndarray, gradient: bool = True):
        return _objective_and_gradient(x, log_n, log_d, draws[rows], huber_delta, gradient, designs)

    start = np.repeat(theta[None, :], bootstrap, axis=0)
    return minimise_each(on_draws, start), residual


def fit_parametric(
    table: pd.DataFrame,
    huber_delta: float = 1e-3,
    drop_highest: int = 0,
    bootstrap: int = 0,
    grid: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    extrapolation_error: bool = True,
) -> ParametricFit:
    """Fit L = E + A/N^alpha + B/D^beta to a table (Approach 3). `drop_highest` removes the
    points of highest loss first (Epoch drops 5 of Chinchilla's 245); `bootstrap` > 0 refits
    (from the best start) on that many residual redraws, for 95% intervals, and (unless
    `extrapolation_error` is off: a refit that only needs its parameters' spread) measures
    the runs' noise and the law's extrapolation error for run-loss intervals."""
    excluded: list[str] = []
    if "status" in table:
        bad = table["status"] != RunStatus.COMPLETED
        if bad.any():
            excluded.append(
                f"{int(bad.sum())} runs not completed ({', '.join(sorted(set(table.loc[bad, 'status'])))})"
            )
        table = table[~bad]
    for column in ("n_active", "tokens", "final_loss"):
        if column not in table:
            raise UserError(f"parametric fit: missing column '{column}'")
        values = table[column].to_numpy(float)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise UserError(f"parametric fit: column '{column}' has NaN or non-positive values")
    if drop_highest:
        table = table.sort_values("final_loss").iloc[:-drop_highest]
        excluded.append(f"{drop_highest} highest-loss points dropped")
    if len(table) < 6:
        raise UserError(f"parametric fit: needs at least 6 points, got {len(table)}")
    log_n = np.log(table["n_active"].to_numpy(float))
    log_d = np.log(table["tokens"].to_numpy(float))
    log_loss = np.log(table["final_loss"].to_numpy(float))
    theta, objective = _fit_once(log_n, log_d, log_loss, huber_delta, start_grid(grid))

    intervals: dict[str, tuple[float, float]] = {}
    samples, note = None, "no bootstrap asked for"
    noise = extrapolation = 0.0
    if bootstrap > 0:
        point = ParametricFit.from_theta(theta, objective=0.0, n_points=0, huber_delta=0.0)
        at_edge = _at_grid_edge(table)
        samples, residual = _residual_bootstrap(
            theta, log_n, log_d, log_loss, huber_delta, at_edge, bootstrap, seed
        )
        natural = np.column_stack([np.exp(samples[:, :3]), samples[:, 3:]])
        for i, name in enumerate(("A", "B", "E", "alpha", "beta")):
            intervals[name] = percentile_interval(natural[:, i])
        noise = robust_sd(residual)
        if extrapolation_error:
            extrapolation = extrapolation_scatter(table, point, noise, huber_delta)
        note = (
            f"{bootstrap} bootstrap refits: every run's log loss redrawn as the fit's value plus "
            f"a residual from the {len(residual)} runs' own (edge runs from the edge runs', "
            "the rest from the rest), the law refitted; a loss is predicted for a run, with "
            f"its noise ({noise:.2%}) and the law's extrapolation error ({extrapolation:.2%}, "
            "refitted on the lower half of the budgets, asked about the upper half)"
        )
    return ParametricFit.from_theta(
        theta,
        objective=objective,
        n_points=len(log_n),
        huber_delta=huber_delta,
        intervals=intervals,
        excluded=tuple(excluded),
        interval_note=note,
        samples=samples,
        noise_log_sd=noise,
        extrapolation_log_sd=extrapolation,
    )


def refit_on(part: pd.DataFrame, fit: ParametricFit, **args) -> ParametricFit:
    """The law refitted on part of its runs (`fit_parametric`'s `args`), from REFIT_GRID and
    from `fit`'s own optimum: whichever start ends lower. Kept for the process by what it is
    a function of: the extrapolation error and the lack-of-fit test of one fit ask for the
    same lower half of the budgets (a seventh of a `moescale fit`)."""
    key = _refit_key(part, fit, args)
    if key not in _REFITS:
        if len(_REFITS) >= 16:
            _REFITS.pop(next(iter(_REFITS)))
        _REFITS[key] = min(
            (fit_parametric(part, grid=g, **args) for g in (REFIT_GRID, grid_at(fit))),
            key=lambda f: f.objective,
        )
    return _REFITS[key]


_REFITS: dict[str, ParametricFit] = {}  # refit_on's results (frozen), oldest first
_FIT_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(fit_parametric).parameters.items()
    if p.default is not inspect.Parameter.empty
}


def _refit_key(part: pd.DataFrame, fit: ParametricFit, args: dict) -> str:
    """A digest of everything `fit_parametric` reads from `part`, `fit`'s optimum and `args`."""
    digest = hashlib.blake2b(digest_size=16)
    for column in ("n_active", "tokens", "final_loss", "budget_flops", "status"):
        values = part[column].to_numpy() if column in part else np.array([])
        digest.update(column.encode() + repr(values.dtype).encode())
        digest.update(values.astype(str).tobytes() if values.dtype == object else values.tobytes())
    # an argument given at its default value asks for the same refit as one left out
    options = {**_FIT_DEFAULTS, **args}
    digest.update(theta_of(fit).tobytes() + repr(sorted(options.items())).encode())
    return digest.hexdigest()


def extrapolation_scatter(
    table: pd.DataFrame,
    fit: ParametricFit,
    noise_log_sd: float,
    huber_delta: float,
) -> float:
    """How far the law misses past the budgets it saw, beyond the runs' noise: refitted on
    the lower half of the budgets (`refit_on`), its log-loss errors on the upper half give a
    robust mean square (`CHI2_1_MEDIAN`) less the noise's; the square root of what is left.
    One number for any distance: measured at about the sweep's own span, the span the
    headline extrapolates over is larger, so it is a floor, not a bound. 0 where the lower
    half has fewer than 6 runs or the budgets are unknown."""
    if "budget_flops" not in table:
        return 0.0
    group, centres = group_budgets(table["budget_flops"].to_numpy(float))
    below = group < (len(centres) + 1) // 2
    if below.sum() < 6 or below.all():
        return 0.0
    lower, upper = table[below], table[~below]
    try:
        refit = refit_on(lower, fit, huber_delta=huber_delta)
    except UserError:
        return 0.0
    predicted = refit.loss(upper["n_active"].to_numpy(float), upper["tokens"].to_numpy(float))
    error = np.log(upper["final_loss"].to_numpy(float) / predicted)
    mean_square = float(np.median(error**2)) / CHI2_1_MEDIAN
    return float(np.sqrt(max(0.0, mean_square - noise_log_sd**2)))
