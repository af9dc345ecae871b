"""The default per-budget fit: every budget's isoFLOP curve as a slice of the parametric form,
L_c(N) = e_c + A_c·N^−α + B_c·D^−β, with the exponents α, β shared by every budget and the
three linear terms e_c, A_c ≥ 0, B_c ≥ 0 free per budget (D each run's own tokens).

Why this shape. A parabola in log N has three free terms per budget and so averages the
noise well, but a real curve is asymmetric (steep where N is too small, gentle where D is)
and a parabola over a wide span puts its minimum in the wrong place. Akima interpolation
follows the asymmetry but also every run's noise (an optimum from two or three runs). A slice
has the parabola's three free terms per budget and the asymmetry of the law, learnt from
every budget at once through two shared exponents; the per-budget free terms keep it honest
where the runs are not one global law (a per-budget mistuning, a schedule that suits some
budgets better). Residuals are Huber-weighted (scale from the MAD), so one bad edge run
does not move an optimum.

Fitting: for given (α, β) each budget is a weighted linear least-squares problem with
A_c, B_c ≥ 0, solved in closed form for every candidate pair — and every bootstrap draw — at
once, so only the two exponents are searched: a grid in log α, log β, then Nelder–Mead
from its best point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from moescale.fitting.laws.resample import robust_sd

# exponents searched between these (published α, β lie in 0.1–1.0)
LOG_EXPONENT_BOUNDS = (np.log(0.03), np.log(3.0))
COARSE = 25  # grid points per exponent over the bounds, then Nelder–Mead from the best
BOOTSTRAP_WINDOW = 0.7  # a bootstrap draw's exponents are searched within ±this (log) of the fit's
BOOTSTRAP_POINTS = 29
HUBER_K = 1.345  # Huber's tuning constant: 95% efficiency under Gaussian noise
ROBUST_PASSES = 2  # reweighting passes after the first least-squares fit
CHUNK_ELEMENTS = 2**21  # 16 MB per float64 temporary of a batched solve


@dataclass(frozen=True)
class SliceData:
    """One budget's runs as the fit sees them: sorted log N, losses and log D."""

    x: np.ndarray
    y: np.ndarray
    log_d: np.ndarray

    def log_d_at(self, log_n: np.ndarray) -> np.ndarray:
        """log D along the budget, smooth: 1/D = (a·N + b)/C is affine in N at a fixed
        budget, so 1/D is fitted as u + v·N by least squares in relative error — exact for
        any compute law of that form, and free of the kinks that interpolating between runs
        (whose own FLOPs scatter about the budget) puts into a curve this flat near its
        minimum, where the argmin snaps to them. A power law in N where the affine fit
        turns non-positive over the sizes."""
        n, d = np.exp(self.x), np.exp(self.log_d)
        design = np.stack([d, n * d], axis=1)  # (u + v·N)·D ≈ 1
        u, v = np.linalg.lstsq(design, np.ones_like(d), rcond=None)[0]
        at = np.exp(np.asarray(log_n, float))
        if min(u + v * n.min(), u + v * n.max()) > 0:
            return -np.log(u + v * at)
        slope, intercept = np.polyfit(self.x, self.log_d, 1)
        return intercept + slope * np.asarray(log_n, float)


@dataclass(frozen=True)
class SliceFit:
    """Shared exponents, every budget's (e, A, B), the fitted losses and the robust weights."""

    alpha: float
    beta: float
    coeffs: np.ndarray  # (budgets, 3): e, A, B
    fitted: tuple[np.ndarray, ...]
    weights: tuple[np.ndarray, ...]
    n_params: int  # 2 shared + 3 per budget

    def curve(self, j: int, data: SliceData, log_n: np.ndarray) -> np.ndarray:
        """Budget j's fitted loss at log N, with log D interpolated between its runs' own."""
        return slice_curve(self.alpha, self.beta, self.coeffs[j], data, log_n)


def slice_curve(
    alpha: float, beta: float, coeffs: np.ndarray, data: SliceData, log_n: np.ndarray
) -> np.ndarray:
    log_d = data.log_d_at(log_n)
    e, a, b = coeffs
    return e + a * np.exp(-alpha * log_n) + b * np.exp(-beta * log_d)


@dataclass(frozen=True)
class Stacked:
    """Every budget's runs padded to one length, so that one solve covers all budgets: x,
    log_d (budgets, n), the draws y (budgets, n, S) and the weights w (budgets, n). Padding
    repeats a budget's first run with weight 0 (it changes no sum and no column's scale)."""

    x: np.ndarray
    log_d: np.ndarray
    y: np.ndarray
    w: np.ndarray

    @classmethod
    def of(cls, data: list[SliceData], ys: list[np.ndarray], weights: list[np.ndarray]) -> Stacked:
        size = max(len(d.x) for d in data)

        def pad(values: np.ndarray, fill=None) -> np.ndarray:
            extra = np.repeat(values[:1] if fill is None else fill, size - len(values), axis=0)
            return np.concatenate([values, extra])

        return cls(
            x=np.stack([pad(d.x) for d in data]),
            log_d=np.stack([pad(d.log_d) for d in data]),
            y=np.stack([pad(y) for y in ys]),
            w=np.stack([pad(w, np.zeros(1)) for w in weights]),
        )

    def draw(self, s: int) -> Stacked:
        """The same runs with only draw s."""
        return Stacked(self.x, self.log_d, self.y[:, :, [s]], self.w)


def _solve(columns: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of every budget's draws y (budgets, n, S) on `columns` (pairs,
    budgets, n, p), for every pair at once: (coefficients (pairs, budgets, S, p), weighted
    SSE (pairs, budgets, S)). Columns are scaled for conditioning (N^−α spans many decades)."""
    scale = np.maximum(np.abs(columns).max(axis=2, keepdims=True), 1e-300)
    z = columns / scale
    zw = z * w[None, :, :, None]
    gram = np.einsum("gbnp,gbnq->gbpq", zw, z) + 1e-12 * np.eye(z.shape[3])
    coef = np.linalg.solve(gram, np.einsum("gbnp,bns->gbps", zw, y))
    resid = y[None] - np.einsum("gbnp,gbps->gbns", z, coef)
    sse = np.einsum("gbns,bn->gbs", resid**2, w)
    return np.swapaxes(coef / np.swapaxes(scale, 2, 3), 2, 3), sse


def budget_terms(theta: np.ndarray, runs: Stacked) -> tuple[np.ndarray, np.ndarray]:
    """The best (e, A ≥ 0, B ≥ 0) of every budget for every exponent pair in theta (pairs, 2:
    log α, log β) and every draw, (pairs, budgets, S, 3), and the SSE (pairs, budgets, S):
    the unconstrained solution where both terms come out non-negative, else the better of
    the one-term fits (a curve with one term is monotone: its optimum is at an edge), else a
    constant."""
    alpha, beta = np.exp(theta[:, 0]), np.exp(theta[:, 1])
    term_n = np.exp(-alpha[:, None, None] * runs.x[None])
    term_d = np.exp(-beta[:, None, None] * runs.log_d[None])
    ones = np.ones_like(term_n)
    y, w = runs.y, runs.w
    full, sse = _solve(np.stack([ones, term_n, term_d], axis=3), y, w)
    ok = (full[..., 1] >= 0) & (full[..., 2] >= 0)
    coef = np.where(ok[..., None], full, 0.0)
    best = np.where(ok, sse, np.inf)
    # the one-term fits only for the pairs that need one (each pair's solve is its own)
    some = np.flatnonzero(~ok.all(axis=(1, 2)))
    for keep, term in ((1, term_n), (2, term_d)):
        if some.size == 0:
            break
        part, part_sse = _solve(np.stack([ones[some], term[some]], axis=3), y, w)
        better = ~ok[some] & (part[..., 1] >= 0) & (part_sse < best[some])
        c = coef[some]
        c[..., 0] = np.where(better, part[..., 0], c[..., 0])
        c[..., keep] = np.where(better, part[..., 1], c[..., keep])
        c[..., 3 - keep] = np.where(better, 0.0, c[..., 3 - keep])
        coef[some] = c
        best[some] = np.where(better, part_sse, best[some])
    constant = ~np.isfinite(best)
    mean = np.einsum("bn,bns->bs", w, y) / w.sum(1)[:, None]
    coef[..., 0] = np.where(constant, mean[None], coef[..., 0])
    flat = np.einsum("bns,bn->bs", (y - mean[:, None, :]) ** 2, w)
    return coef, np.where(constant, flat[None], best)


def _grid(centre: np.ndarray, half_width: float, points: int) -> np.ndarray:
    axis = np.linspace(-half_width, half_width, points)
    pairs = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2) + centre
    return np.clip(pairs, *LOG_EXPONENT_BOUNDS)


def _best_sse(theta: np.ndarray, runs: Stacked) -> np.ndarray:
    """The SSE summed over budgets for every exponent pair and draw: (pairs, S), the pairs
    taken in chunks whose (pairs, budgets, n, S) temporaries hold about CHUNK_ELEMENTS."""
    step = max(1, CHUNK_ELEMENTS // runs.y.size)
    chunks = (theta[i : i + step] for i in range(0, len(theta), step))
    return np.concatenate([budget_terms(chunk, runs)[1].sum(axis=1) for chunk in chunks])


def _best_on(theta: np.ndarray, runs: Stacked) -> np.ndarray:
    """For each draw, the exponent pair of `theta` with the lowest summed SSE: (S, 2)."""
    return theta[np.argmin(_best_sse(theta, runs), axis=0)]


def _huber_weights(residuals: list[np.ndarray], dof_scale: float) -> list[np.ndarray]:
    pooled = np.concatenate(residuals)
    scale = robust_sd(pooled) * dof_scale
    if not scale > 0:
        return [np.ones_like(r) for r in residuals]
    return [np.minimum(1.0, HUBER_K * scale / np.maximum(np.abs(r), 1e-300)) for r in residuals]


def _fit_at(theta: np.ndarray, runs: Stacked) -> list[np.ndarray]:
    """Every budget's (e, A, B) at one exponent pair per draw: list over budgets of (S, 3)."""
    coef = np.stack(
        [budget_terms(t[None, :], runs.draw(s))[0][0, :, 0] for s, t in enumerate(theta)], 1
    )
    return list(coef)


def fit_slices(data: list[SliceData], robust: bool = True) -> SliceFit:
    """The shared-exponent slice fit of every budget in `data` (each with 3 or more sizes)."""
    weights = [np.ones_like(d.y) for d in data]
    ys = [d.y[:, None] for d in data]
    n_points = sum(len(d.y) for d in data)
    n_params = 2 + 3 * len(data)
    dof_scale = np.sqrt(n_points / max(n_points - n_params, 1))
    for _ in range(1 + (ROBUST_PASSES if robust else 0)):
        centre = np.full(2, np.mean(LOG_EXPONENT_BOUNDS))
        runs = Stacked.of(data, ys, weights)
        centre = _best_on(_grid(centre, np.ptp(LOG_EXPONENT_BOUNDS) / 2, COARSE), runs)[0]
        # the exponents trade off along a valley that a grid refined about one point can miss
        centre = minimize(
            lambda t, runs=runs: float(
                _best_sse(np.clip(t, *LOG_EXPONENT_BOUNDS)[None, :], runs)[0, 0]
            ),
            centre,
            method="Nelder-Mead",
            options={"xatol": 1e-5, "fatol": 1e-14, "maxiter": 600},
        ).x
        centre = np.clip(centre, *LOG_EXPONENT_BOUNDS)
        coeffs = np.array([c[0] for c in _fit_at(centre[None, :], runs)])
        alpha, beta = np.exp(centre)
        fitted = tuple(slice_curve(alpha, beta, coeffs[j], d, d.x) for j, d in enumerate(data))
        if robust:
            residuals = [d.y - f for d, f in zip(data, fitted, strict=True)]
            weights = _huber_weights(residuals, dof_scale)
    return SliceFit(
        alpha=float(alpha),
        beta=float(beta),
        coeffs=coeffs,
        fitted=fitted,
        weights=tuple(weights),
        n_params=n_params,
    )


def refit_draws(
    fit: SliceFit, data: list[SliceData], ys: list[np.ndarray]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The slice fit of S bootstrap draws at once (ys: per budget (n, S)), with the full fit's
    robust weights, exponents searched within ±BOOTSTRAP_WINDOW of its own: ((S, 2) log
    exponents, per budget (S, 3) coefficients)."""
    centre = np.log([fit.alpha, fit.beta])
    runs = Stacked.of(data, ys, list(fit.weights))
    theta = _best_on(_grid(centre, BOOTSTRAP_WINDOW, BOOTSTRAP_POINTS), runs)
    return theta, _fit_at(theta, runs)
