"""Scoring a prediction against what really happened at a budget past the sweep: the realised
optimum at C (the same per-budget fit as the sweep's, with its own interval), and the regret
of following the prediction — the loss the predicted N_opt really reached above the best, in
nats and as the extra compute that size would need to make it up."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq

from moescale.errors import UserError
from moescale.fitting.laws.compute_law import ComputeLaw
from moescale.fitting.laws.isoflop import (
    _budget_optimum,
    budget_curve,
    single_budget_method,
)
from moescale.fitting.laws.parametric import ParametricFit
from moescale.fitting.laws.powerlaw import percentile_interval
from moescale.fitting.options import DEFAULT_ISOFLOP_METHOD
from moescale.fitting.prediction import Prediction

# A validation run this far above the parabola through the others (log loss; 5% where the
# runs' noise is 0.5–1%, up to 5% at a grid's edge across machines) did not train as its
# neighbours did — a loss spike it never recovered from — and would drag the realised
# optimum off: it is set aside, at most one, with five or more runs, and the score says so.
OUTLIER_LOG_LOSS = 0.05


@dataclass(frozen=True)
class ValidationScore:
    """One prediction scored against one validation budget."""

    method: str  # whose prediction: parametric, isoflop, naive, ...
    budget: float
    n_opt_predicted: float
    n_opt_interval: tuple[float, float] | None
    n_opt_realised: float
    n_opt_realised_interval: tuple[float, float] | None
    n_opt_inside: bool | None  # realised N_opt inside the predicted interval
    loss_predicted: float | None
    loss_interval: tuple[float, float] | None
    loss_realised: float  # the realised curve's minimum
    loss_inside: bool | None
    loss_at_prediction: float  # the realised curve at the predicted N_opt
    regret: float  # loss_at_prediction − loss_realised (nats/token, ≥ 0)
    regret_compute_factor: float  # compute the predicted size needs to make up the regret ÷ C
    regret_how: str
    realised_at_edge: str  # '' when the realised optimum is inside the validation sizes
    set_aside: tuple[float, ...] = ()  # n_active of runs left out of the realised optimum

    def words(self) -> str:
        """The score in a sentence, as the report shows it."""

        def span(interval) -> str:
            return "" if not interval else f" ({interval[0]:.3g}–{interval[1]:.3g})"

        inside = {
            True: "inside",
            False: "OUTSIDE",
            None: "no verdict (the realised optimum is not inside the validation's sizes)"
            if self.realised_at_edge
            else "no interval to judge by",
        }
        text = (
            f"{self.method}: N_opt predicted {self.n_opt_predicted:.3g}{span(self.n_opt_interval)}, "
            f"realised {self.n_opt_realised:.3g}{span(self.n_opt_realised_interval)}: "
            f"{inside[self.n_opt_inside]}"
        )
        if self.loss_predicted is not None:
            text += (
                f"; loss predicted {self.loss_predicted:.4f}{span(self.loss_interval)}, realised "
                f"{self.loss_realised:.4f}: {inside[self.loss_inside]}"
            )
        text += (
            f"; following the prediction costs {self.regret:.4f} nats/token, "
            f"{self.regret_compute_factor:.3g}× the compute to make up"
        )
        if self.realised_at_edge:
            text += f" (realised optimum at an edge: {self.realised_at_edge})"
        if self.set_aside:
            sizes = ", ".join(f"{n:.3g}" for n in self.set_aside)
            text += (
                f"; the run at N = {sizes} set aside, {OUTLIER_LOG_LOSS:.0%}+ above the curve "
                "through the others"
            )
        return text

    def to_dict(self) -> dict:
        return asdict(self) | {"words": self.words()}

    @classmethod
    def from_dict(cls, data: dict) -> ValidationScore:
        fields = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in fields}
        for key in ("n_opt_interval", "n_opt_realised_interval", "loss_interval"):
            values[key] = None if values.get(key) is None else tuple(values[key])
        values["set_aside"] = tuple(values.get("set_aside", ()))
        return cls(**values)


def _inside(value: float, interval) -> bool | None:
    return None if not interval else bool(interval[0] <= value <= interval[1])


def runs_to_keep(log_n: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """A mask of the runs to keep: all but the one (if any) whose log loss lies more than
    OUTLIER_LOG_LOSS above the parabola in log N through the others. Only upward: an
    instability makes a run worse, never better. Needs five runs (four left to judge by)."""
    keep = np.ones(len(log_n), dtype=bool)
    if len(log_n) < 5:
        return keep
    # the candidate: the run without which the others lie closest to one parabola (a single
    # bad run pulls every leave-one-out curve, so its own miss alone does not single it out)
    misfit, excess = np.empty(len(log_n)), np.empty(len(log_n))
    for i in range(len(log_n)):
        others = np.arange(len(log_n)) != i
        curve = np.polyfit(log_n[others], loss[others], 2)
        misfit[i] = np.sum((loss[others] - np.polyval(curve, log_n[others])) ** 2)
        excess[i] = np.log(loss[i] / np.polyval(curve, log_n[i]))
    candidate = int(np.argmin(misfit))
    if excess[candidate] > OUTLIER_LOG_LOSS:
        keep[candidate] = False
    return keep


def realised_optimum(
    n_active: np.ndarray,
    loss: np.ndarray,
    method: str = DEFAULT_ISOFLOP_METHOD,
    bootstrap: int = 200,
    seed: int = 0,
) -> tuple[
    float, float, tuple[float, float] | None, str, tuple[np.ndarray, np.ndarray], tuple[float, ...]
]:
    """(N_opt, loss_opt, N_opt interval, edge reason, fitted curve, sizes set aside) of one
    budget's runs: the sweep's per-budget method as one budget reads it
    (`single_budget_method`) on the runs `runs_to_keep` keeps, and a bootstrap that redraws the
    losses about that fit with the residuals of a smooth (cubic or quadratic) curve."""
    method = single_budget_method(method)
    order = np.argsort(n_active)
    n, y = np.asarray(n_active, float)[order], np.asarray(loss, float)[order]
    x = np.log(n)
    if len(x) < 3:
        raise UserError(f"validation: {len(x)} completed run(s) at this budget; needs 3")
    keep = runs_to_keep(x, y)
    aside = tuple(float(v) for v in n[~keep])  # as recorded, so they match the runs table
    x, y = x[keep], y[keep]
    log_n, loss_opt, reason = _budget_optimum(x, y, method)
    interval = None
    if len(x) >= 4:
        degree = 3 if len(x) >= 5 else 2
        residual = (y - np.polyval(np.polyfit(x, y, degree), x)) * np.sqrt(
            len(x) / (len(x) - degree - 1)
        )
        centre = y if method == "akima" else np.polyval(np.polyfit(x, y, 2), x)
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(bootstrap):
            found, _, why = _budget_optimum(x, centre + rng.choice(residual, len(x)), method)
            draws.append(np.nan if why else np.exp(found))
        interval = percentile_interval(np.array(draws))
    curve = budget_curve(x, y, method)
    return float(np.exp(log_n)), float(loss_opt), interval, reason, curve, aside


def _loss_on_curve(curve: tuple[np.ndarray, np.ndarray], n: float) -> float:
    """The realised curve at N (extended flat beyond its ends: no extrapolation)."""
    x, y = curve
    return float(np.interp(np.log(n), x, y))


def regret_compute_factor(
    regret: float,
    n_opt: float,
    budget: float,
    compute_law: ComputeLaw,
    parametric: ParametricFit | None,
) -> tuple[float, str]:
    """How much more compute N_opt-predicted needs, by the fitted parametric law, to lower its
    loss by `regret` (more tokens at the same size): C'/C. Without a parametric law, nan."""
    if regret <= 0:
        return 1.0, "no regret"
    if parametric is None:
        return float("nan"), "no parametric law to convert the regret into compute"
    d = float(compute_law.tokens(budget, n_opt))
    target = float(parametric.loss(n_opt, d)) - regret
    if target <= parametric.E + parametric.A / n_opt**parametric.alpha:
        return float("inf"), "more than any amount of data can give this size, by the law"
    d_more = brentq(lambda t: float(parametric.loss(n_opt, t)) - target, d, d * 1e12)
    return d_more / d, "extra tokens at the predicted size, by the fitted parametric law"


def score_prediction(
    method: str,
    prediction: Prediction,
    n_active: np.ndarray,
    loss: np.ndarray,
    *,
    compute_law: ComputeLaw,
    parametric: ParametricFit | None = None,
    per_budget_method: str = DEFAULT_ISOFLOP_METHOD,
    bootstrap: int = 200,
) -> ValidationScore:
    """Score one method's prediction at a budget against the validation runs there."""
    budget = prediction.flops
    n_real, loss_real, n_interval, reason, curve, aside = realised_optimum(
        n_active, loss, per_budget_method, bootstrap
    )
    at_prediction = _loss_on_curve(curve, prediction.n_opt)
    regret = max(0.0, at_prediction - loss_real)
    factor, how = regret_compute_factor(regret, prediction.n_opt, budget, compute_law, parametric)
    interval = prediction.n_opt_interval
    loss_interval = prediction.loss_opt_interval
    loss_predicted = prediction.loss_opt
    return ValidationScore(
        method=method,
        budget=budget,
        n_opt_predicted=prediction.n_opt,
        n_opt_interval=None if not interval else tuple(interval),
        n_opt_realised=n_real,
        n_opt_realised_interval=n_interval,
        # a realised optimum at an edge of the validation's sizes is not measured: no verdict
        n_opt_inside=None if reason else _inside(n_real, interval),
        loss_predicted=None if loss_predicted is None else float(loss_predicted),
        loss_interval=None if not loss_interval else tuple(loss_interval),
        loss_realised=loss_real,
        loss_inside=_inside(loss_real, loss_interval),
        loss_at_prediction=at_prediction,
        regret=regret,
        regret_compute_factor=factor,
        regret_how=how,
        realised_at_edge=reason,
        set_aside=aside,
    )
