"""The joint MoE law over activated size N, tokens D, expansion E and granularity G:

    L = c + (A + g·G^−γ_G) · E^δ · N^−(α + γ·ln E) + B · E^ω · D^−(β + ζ·ln E)

At G = 1 it is the form of Ludziejewski et al. 2025 ("Joint MoE Scaling Laws"): coefficients
and exponents that move with ln E (there with a saturating transform of E; here E itself,
over the narrow range a sweep covers). At fixed E it is Krajewski et al. 2024's fine-grained
law, L = c + (g/G^γ + a)/N^α + B/D^β. Dense is E = 1, G = 1, where it is Chinchilla's.

E is the expansion — routed experts per activated routed expert (n_experts / top_k), 1 for
dense — so cutting experts finer (granularity) keeps E and moves G alone.

Fitted as Approach 3 is (parametric.py): Huber loss on log L against the log-sum-exp of the
law's terms, each term's log linear in the parameters; batched BFGS from a grid of starts,
then L-BFGS-B. `form` "shared" fixes γ = ζ = 0 (E scales the coefficients only), "per-E"
lets the exponents move with ln E. G enters as the data allow (g_mode_of): not at all with
one value, as a factor G^−γ_G on the N term with two, in Krajewski's form with three or more.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from moescale.errors import UserError
from moescale.fitting.laws.budgets import group_budgets
from moescale.fitting.laws.compute_law import DEFAULT_LAW, ComputeLaw
from moescale.fitting.laws.parametric import minimise_from_starts
from moescale.fitting.laws.powerlaw import percentile_interval
from moescale.fitting.laws.resample import draw_runs, what_is_resampled

PARAMS = ("a", "g", "gamma_g", "delta", "alpha", "gamma", "b", "omega", "beta", "zeta", "e")
FORMS = {
    "shared": "c + (A + g·G^−γ_G)·E^δ·N^−α + B·E^ω·D^−β",
    "per-E": "c + (A + g·G^−γ_G)·E^δ·N^−(α+γ·ln E) + B·E^ω·D^−(β+ζ·ln E)",
}
HUBER_DELTA = 1e-3
N_GRID = 600  # log-spaced sizes searched for each optimum
# starts: a coarse grid for the Chinchilla part (E and G parameters at rest), then its best
# end with a few values of the E and G parameters
COARSE_GRID = {
    "a": (0.0, 5.0, 10.0, 20.0),
    "b": (0.0, 5.0, 10.0, 20.0),
    "e": (0.0, 0.5),
    "alpha": (0.3, 0.6),
    "beta": (0.3, 0.6),
}
AROUND = {"delta": (-0.3, -0.1, 0.0, 0.1, 0.3), "omega": (-0.3, -0.1, 0.0, 0.1, 0.3),
          "g_offset": (-1.0, -3.0), "gamma_g": (0.3, 1.0)}  # fmt: skip


def expansion(table: pd.DataFrame) -> np.ndarray:
    """E of each row: n_experts / top_k, 1 for dense (no routed experts)."""
    experts = table["n_experts"].to_numpy(float)
    top_k = np.maximum(table["top_k"].to_numpy(float), 1)
    return np.where(experts > 0, experts / top_k, 1.0)


def granularity(table: pd.DataFrame) -> np.ndarray:
    return table["granularity"].to_numpy(float) if "granularity" in table else np.ones(len(table))


def g_mode_of(g: np.ndarray) -> str:
    """How the law takes G, by how many distinct values the data have: none (one value);
    scale — the N term × G^−γ_G — with two (Krajewski's A, g and γ_G are not identified by
    two values); additive — Krajewski's (A + g·G^−γ_G) — with three or more."""
    distinct = len(np.unique(np.round(g, 6)))
    return "none" if distinct < 2 else "scale" if distinct == 2 else "additive"


def active_params(form: str, g_mode: str) -> list[str]:
    """The parameters a form fits (the others are held at 0)."""
    drop = set() if form == "per-E" else {"gamma", "zeta"}
    if g_mode != "additive":
        drop |= {"g"}
    if g_mode == "none":
        drop |= {"gamma_g"}
    return [p for p in PARAMS if p not in drop]


def _features(x, y, u, v, g_mode: str) -> np.ndarray:
    """[K terms, n points, len(PARAMS)]: each term's log as a linear map of the parameters."""
    n = len(x)
    zero, one = np.zeros(n), np.ones(n)
    scale = -v if g_mode == "scale" else zero
    # a, g, gamma_g, delta, alpha, gamma, b, omega, beta, zeta, e
    t_n = [one, zero, scale, u, -x, -u * x, zero, zero, zero, zero, zero]
    t_g = [zero, one, -v, u, -x, -u * x, zero, zero, zero, zero, zero]
    t_d = [zero, zero, zero, zero, zero, zero, one, u, -y, -u * y, zero]
    t_c = [zero] * 10 + [one]
    terms = [t_n, t_g, t_d, t_c] if g_mode == "additive" else [t_n, t_d, t_c]
    return np.array([np.stack(t, axis=1) for t in terms])


@dataclass(frozen=True)
class JointLaw:
    """A fitted joint law: its parameters (θ in PARAMS order, 0 where the form holds them),
    bootstrap θ samples, and the data's range of E and G."""

    form: str
    theta: np.ndarray
    g_mode: str  # none | scale | additive (g_mode_of)
    objective: float
    n_points: int
    e_range: tuple[float, float]
    g_range: tuple[float, float]
    intervals: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    interval_note: str = ""
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)

    def params(self) -> dict[str, float]:
        """The law in its natural units: c, A, g, B and the exponents."""
        t = dict(zip(PARAMS, (float(v) for v in self.theta), strict=True))
        out = {"c": np.exp(t["e"]), "A": np.exp(t["a"]), "B": np.exp(t["b"])}
        out |= {k: t[k] for k in ("alpha", "beta", "delta", "omega", "gamma", "zeta")}
        if self.g_mode == "additive":
            out["g"] = np.exp(t["g"])
        if self.g_mode != "none":
            out["gamma_g"] = t["gamma_g"]
        return {k: float(v) for k, v in out.items()}

    def loss(self, n, d, e, g=1.0, theta: np.ndarray | None = None) -> np.ndarray:
        """The law at (N, D, E, G) for θ [P] (this fit's) or θ [S, P] (→ [S, points])."""
        theta = self.theta if theta is None else theta
        n, d, e, g = np.broadcast_arrays(
            *(np.atleast_1d(np.asarray(a, float)) for a in (n, d, e, g))
        )
        f = _features(np.log(n), np.log(d), np.log(e), np.log(g), self.g_mode)
        with np.errstate(over="ignore"):
            return np.exp(np.einsum("knp,...p->...kn", f, theta)).sum(-2)

    def optimum(self, flops: float, e: float, g: float = 1.0, theta=None,
                compute_law: ComputeLaw | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """(loss, N) at the best size for `flops` (each θ of `theta` [S, P]: arrays [S])."""
        law = compute_law or DEFAULT_LAW
        theta = np.atleast_2d(self.theta if theta is None else theta)
        log_n = np.linspace(np.log(10.0), np.log(flops / law.a / 10.0), N_GRID)
        n = np.exp(log_n)
        losses = self.loss(n, law.tokens(flops, n), e, g, theta)  # [S, N_GRID]
        best = np.nanargmin(np.where(np.isfinite(losses), losses, np.inf), axis=1)
        return losses[np.arange(len(theta)), best], n[best]

    def all_thetas(self) -> np.ndarray:
        """This fit's θ first, then its bootstrap samples."""
        rows = [self.theta[None, :]]
        if self.samples is not None:
            rows.append(self.samples)
        return np.concatenate(rows)

    def to_dict(self) -> dict:
        return {
            "form": self.form,
            "law": law_text(self.form, self.g_mode),
            "params": self.params(),
            "theta": self.theta.tolist(),
            "g_mode": self.g_mode,
            "objective": self.objective,
            "n_points": self.n_points,
            "e_range": list(self.e_range),
            "g_range": list(self.g_range),
            "intervals": self.intervals,
            "interval_note": self.interval_note,
            "samples": None if self.samples is None else self.samples.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> JointLaw:
        samples = data.get("samples")
        return cls(
            form=data["form"],
            theta=np.asarray(data["theta"], float),
            g_mode=data["g_mode"],
            objective=data["objective"],
            n_points=data["n_points"],
            e_range=tuple(data["e_range"]),
            g_range=tuple(data["g_range"]),
            intervals={k: None if v is None else tuple(v) for k, v in data["intervals"].items()},
            interval_note=data.get("interval_note", ""),
            samples=None if samples is None else np.asarray(samples, float),
        )


def law_text(form: str, g_mode: str) -> str:
    text = FORMS[form]
    if g_mode == "none":
        return text.replace("(A + g·G^−γ_G)", "A")
    if g_mode == "scale":
        return text.replace("(A + g·G^−γ_G)", "A·G^−γ_G")
    return text


def _objective(features: np.ndarray, log_loss: np.ndarray, active: np.ndarray):
    """fun(θ_active [S, P'], gradient) → (sum of Huber losses [S], gradient [S, P'])."""
    f = features[:, :, active]  # [K, n, P']
    n_terms, n_runs, n_params = f.shape
    flat = f.reshape(n_terms * n_runs, n_params)  # both contractions as one matrix product each

    def fun(theta: np.ndarray, gradient: bool = True):
        t = (theta @ flat.T).reshape(len(theta), n_terms, n_runs)
        top = t.max(1, keepdims=True)
        w = np.exp(t - top)
        total = w.sum(1)
        residual = top[:, 0] + np.log(total) - log_loss
        size = np.abs(residual)
        huber = np.where(
            size <= HUBER_DELTA, 0.5 * residual**2, HUBER_DELTA * (size - 0.5 * HUBER_DELTA)
        )
        if not gradient:
            return huber.sum(1), None
        slope = np.clip(residual, -HUBER_DELTA, HUBER_DELTA) / total  # [S, n]
        grad = (w * slope[:, None, :]).reshape(len(theta), -1) @ flat
        return huber.sum(1), grad

    return fun


def _coarse_starts(active: list[str]) -> np.ndarray:
    """The coarse grid [S, len(active)] with the E and G parameters at rest."""
    rows = [
        {"a": a, "b": b, "e": e, "alpha": alpha, "beta": beta, "g": a - 1.0, "gamma_g": 0.5}
        for a, b, e, alpha, beta in itertools.product(*COARSE_GRID.values())
    ]
    return np.array([[row.get(p, 0.0) for p in active] for row in rows], float)


def _starts_around(active: list[str], best: np.ndarray) -> np.ndarray:
    """`best` with a few values of each E and G parameter (the others kept)."""
    rows = [best]
    at = dict(zip(active, best, strict=True))
    for delta, omega, offset, gamma_g in itertools.product(*AROUND.values()):
        row = at | {"delta": delta, "omega": omega, "g": at["a"] + offset, "gamma_g": gamma_g}
        rows.append([row[p] for p in active])
    return np.array(rows, float)


def fit_joint_law(
    table: pd.DataFrame,
    form: str = "shared",
    bootstrap: int = 0,
    seed: int = 0,
) -> JointLaw:
    """Fit the joint law to completed runs of several variants (n_active, tokens, n_experts,
    top_k, granularity, final_loss, budget_flops); `bootstrap` refits on two-stage resamples
    (budgets, then runs within each) for 95% intervals."""
    if form not in FORMS:
        raise UserError(f"joint law: form must be one of {', '.join(FORMS)}, got '{form}'")
    e, g = expansion(table), granularity(table)
    g_mode = g_mode_of(g)
    active = active_params(form, g_mode)
    if len(table) < len(active) + 2:
        raise UserError(f"joint law: {len(table)} runs for {len(active)} parameters")
    x, y = np.log(table["n_active"].to_numpy(float)), np.log(table["tokens"].to_numpy(float))
    features = _features(x, y, np.log(e), np.log(g), g_mode)
    log_loss = np.log(table["final_loss"].to_numpy(float))
    index = np.array([PARAMS.index(p) for p in active])
    fun = _objective(features, log_loss, index)
    coarse, _ = minimise_from_starts(fun, _coarse_starts(active), polish=2)
    best, objective = minimise_from_starts(fun, _starts_around(active, coarse))

    def full(theta_active: np.ndarray) -> np.ndarray:
        theta = np.zeros(len(PARAMS))
        theta[index] = theta_active
        return theta

    samples, intervals, note = None, {}, "no bootstrap asked for"
    if bootstrap > 0:
        group, centres = group_budgets(table["budget_flops"].to_numpy(float))
        members = [np.flatnonzero(group == k) for k in range(len(centres))]
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(bootstrap):
            pick = draw_runs(members, rng)
            fun = _objective(features[:, pick], log_loss[pick], index)
            draws.append(full(minimise_from_starts(fun, best[None, :], polish=1)[0]))
        samples = np.array(draws)
        law = JointLaw(form, full(best), g_mode, objective, len(x), (0, 0), (0, 0))
        natural = np.array(
            [
                list(JointLaw(form, s, g_mode, 0, 0, (0, 0), (0, 0)).params().values())
                for s in samples
            ]
        )
        intervals = {k: percentile_interval(natural[:, i]) for i, k in enumerate(law.params())}
        note = f"{bootstrap} bootstrap refits: " + what_is_resampled(
            len(members), "runs within each budget (every variant) with replacement"
        )
    return JointLaw(
        form=form,
        theta=full(best),
        g_mode=g_mode,
        objective=float(objective),
        n_points=len(x),
        e_range=(float(e.min()), float(e.max())),
        g_range=(float(g.min()), float(g.max())),
        intervals=intervals,
        interval_note=note,
        samples=samples,
    )
