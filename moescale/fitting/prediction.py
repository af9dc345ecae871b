"""The headline: one N_opt, D_opt and loss at the target budget, with 95% intervals, the method
behind it, how far the other methods agree, and how far past the sweep it reaches.

Why Approach 3 leads. When the per-token overhead b·D is a sizeable share of C (a quarter of
the smallest budgets in the Hunyuan-Large design), N_opt is not a power law of C over the
sweep: the optimum shifts as b·D's share falls with C, and a power law fitted at small budgets
bends the extrapolation low (by 20–40% at 100–10,000× past the sweep in our simulations).
The parametric law L(N, D) = E + A/N^α + B/D^β, minimised under the fitted compute law
C = (a·N + b)·D at the target, carries that shift by construction and spends exactly C.
Approach 2 (N_opt power law, D_opt from the compute law) stays beside it with its own
interval; where the two disagree beyond their intervals, `agreement` says so in words.

Approach 3 leads when the data pin it down: the 95% bootstrap interval of its allocation
exponent β/(α+β) — what sets how N_opt grows with C — no wider than IDENTIFIED_WIDTH. With
few runs its five parameters are not identified (a 14-run sweep can leave α anywhere from
0.5 to 15), and then Approach 2 leads. Between IDENTIFIED_WIDTH and NOT_IDENTIFIED_WIDTH the
two are combined, Approach 3's share falling linearly with the width (and times its
lack-of-fit weight): a cliff at one width made the same sweep on two machines lead with a
3× interval on one and a 69× interval on the other (the quickstart, 0.20 and 0.24 wide).
The hold-out check is reported beside, not used to choose: each held-out budget's own optimum carries ±15–25% of noise on a factor-2 grid, too
much to rank two methods by in our simulations.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from moescale.fitting.laws.compute_law import ComputeLaw
from moescale.fitting.laws.powerlaw import percentile_interval
from moescale.fitting.studies.lack_of_fit import LackOfFit

LABELS = {
    "parametric": "Approach 3: L = E + A/N^α + B/D^β, minimised under the fitted compute law",
    "isoflop": "Approach 2: per-budget optima, N_opt power law in C, D_opt = C/(a·N_opt + b)",
    "combined": "Approaches 3 and 2 weighted by how well the runs pin Approach 3 down and fit it",
}
COMPARED = ("parametric", "isoflop")  # the methods `agreement` compares
# β/(α+β) is 0.46–0.73 across published laws (Chinchilla to Kaplan): an interval wider than
# 0.2 spans much of that disagreement, so it does not say how N_opt grows
IDENTIFIED_WIDTH = 0.2
# from here Approach 3 keeps no share: its interval spans most of the published disagreement
NOT_IDENTIFIED_WIDTH = 0.4
FAR_BEYOND = 10.0  # reach more than this × the furthest factor the hold-out check covered

Interval = tuple[float, float]


def _interval(value) -> Interval | None:
    return None if value is None else (float(value[0]), float(value[1]))


@dataclass(frozen=True)
class Agreement:
    """Whether the methods' N_opt agree (`agreement`): the verdict and the words behind it."""

    verdict: str  # agree | overlap | disagree | unknown | single
    text: str

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "text": self.text}


@dataclass(frozen=True)
class Reach:
    """How far past the largest budget a prediction reaches, and how far the hold-out check
    covered (None where it could not be run)."""

    factor: float
    largest_budget: float
    checked_factor: float | None

    def to_dict(self) -> dict:
        return {
            "factor": self.factor,
            "largest_budget": self.largest_budget,
            "checked_factor": self.checked_factor,
        }


# the keys of fit.json's prediction that are not the tuned laws' `<name>_opt[_interval]`
_CORE = (
    "method", "label", "flops", "n_opt", "d_opt", "loss_opt", "n_opt_interval", "d_opt_interval",
    "loss_opt_interval", "interval_note", "flops_spent", "loss_note", "weights",
    "chosen_because", "agreement", "reach", "warnings",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """One method's optimum at a budget, with 95% intervals; the headline also carries why it
    was chosen, the methods' agreement, its reach and its warnings. N is activated parameters,
    D tokens, the loss nats per token, `flops` the budget under the fit's compute law."""

    method: str
    flops: float
    n_opt: float
    d_opt: float
    n_opt_interval: Interval | None = None
    d_opt_interval: Interval | None = None
    loss_opt: float | None = None
    loss_opt_interval: Interval | None = None
    label: str = ""
    interval_note: str = "no interval"  # what the interval resampled, or why there is none
    flops_spent: float | None = None  # (a·N_opt + b)·D_opt under the compute law
    loss_note: str | None = None  # a caution on the optimal loss (a law with no floor)
    weights: dict[str, float] | None = None  # "combined": each method's share
    tuned: dict = field(default_factory=dict)  # the tuned laws' lr_opt, batch_tokens_opt, …
    # the headline's own
    chosen_because: str | None = None
    agreement: Agreement | None = None
    reach: Reach | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """fit.json's form: optional parts present only when known, the tuned laws' values
        beside the rest."""
        out = {"method": self.method, "label": self.label, "flops": self.flops}
        out |= {"n_opt": self.n_opt, "d_opt": self.d_opt}
        if self.loss_opt is not None:
            out["loss_opt"] = self.loss_opt
        out |= {"n_opt_interval": self.n_opt_interval, "d_opt_interval": self.d_opt_interval}
        if self.loss_opt is not None:
            out["loss_opt_interval"] = self.loss_opt_interval
        out["interval_note"] = self.interval_note
        for key in ("flops_spent", "loss_note", "weights"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.chosen_because is not None:
            out["chosen_because"] = self.chosen_because
            out["agreement"] = None if self.agreement is None else self.agreement.to_dict()
            out["reach"] = None if self.reach is None else self.reach.to_dict()
            out["warnings"] = list(self.warnings)
        return out | self.tuned

    @classmethod
    def from_dict(cls, data: dict) -> Prediction:
        agreement, reach = data.get("agreement"), data.get("reach")
        return cls(
            method=data["method"],
            flops=float(data["flops"]),
            n_opt=float(data["n_opt"]),
            d_opt=float(data["d_opt"]),
            n_opt_interval=_interval(data.get("n_opt_interval")),
            d_opt_interval=_interval(data.get("d_opt_interval")),
            loss_opt=data.get("loss_opt"),
            loss_opt_interval=_interval(data.get("loss_opt_interval")),
            label=data.get("label", ""),
            interval_note=data.get("interval_note", "no interval"),
            flops_spent=data.get("flops_spent"),
            loss_note=data.get("loss_note"),
            weights=data.get("weights"),
            tuned={
                k: _interval(v) if k.endswith("_interval") else v
                for k, v in data.items()
                if k not in _CORE
            },
            chosen_because=data.get("chosen_because"),
            agreement=None if agreement is None else Agreement(**agreement),
            reach=None if reach is None else Reach(**reach),
            warnings=tuple(data.get("warnings", ())),
        )


def _interval_text(interval) -> str:
    return "no interval" if not interval else f"{interval[0]:.3g}–{interval[1]:.3g}"


def method_prediction(
    method: str, predicted: dict, interval_note: str, law: ComputeLaw | None
) -> Prediction:
    """One method's prediction from the values its fit's `predict` gives: with its label,
    what the interval resampled (or why there is none), and — under a compute law — the
    budget it spends."""
    return Prediction(
        method=method,
        label=LABELS.get(method, method),
        flops=float(predicted["flops"]),
        n_opt=float(predicted["n_opt"]),
        d_opt=float(predicted["d_opt"]),
        n_opt_interval=_interval(predicted.get("n_opt_interval")),
        d_opt_interval=_interval(predicted.get("d_opt_interval")),
        loss_opt=None if predicted.get("loss_opt") is None else float(predicted["loss_opt"]),
        loss_opt_interval=_interval(predicted.get("loss_opt_interval")),
        interval_note=interval_note or "no interval",
        flops_spent=None
        if law is None
        else float(law.flops_per_token(predicted["n_opt"]) * predicted["d_opt"]),
        weights=predicted.get("weights"),
    )


def agreement(predictions: dict[str, Prediction]) -> Agreement:
    """Do the methods' N_opt agree? 'agree' when every point lies inside every other
    method's interval, 'overlap' when the intervals overlap but a point falls outside,
    'disagree' when two intervals do not overlap, 'unknown' without intervals."""
    named = [(m, p) for m, p in predictions.items() if m in COMPARED]
    if len(named) < 2:
        only = named[0][0] if named else "none"
        return Agreement("single", f"only one method could be fitted ({only})")
    verdict, words = "agree", []
    for i, (m1, p1) in enumerate(named):
        for m2, p2 in named[i + 1 :]:
            i1, i2 = p1.n_opt_interval, p2.n_opt_interval
            ratio = p1.n_opt / p2.n_opt
            if not i1 or not i2:
                pair = "unknown"
            elif i1[1] < i2[0] or i2[1] < i1[0]:
                pair = "disagree"
            elif i2[0] <= p1.n_opt <= i2[1] and i1[0] <= p2.n_opt <= i1[1]:
                pair = "agree"
            else:
                pair = "overlap"
            order = ("agree", "unknown", "overlap", "disagree")
            verdict = max(verdict, pair, key=order.index)
            words.append(
                f"{m1} N_opt {p1.n_opt:.3g} ({_interval_text(i1)}) vs {m2} "
                f"{p2.n_opt:.3g} ({_interval_text(i2)}): ratio {ratio:.2f}, {pair}"
            )
    lead = {
        "agree": "the methods agree",
        "overlap": "the methods roughly agree (intervals overlap, but a point estimate falls outside another's interval)",
        "disagree": "the methods DISAGREE beyond their intervals: trust neither blindly",
        "unknown": "agreement cannot be judged: a method has no interval",
    }[verdict]
    return Agreement(verdict, f"{lead} — " + "; ".join(words))


def allocation_width(parametric_samples: np.ndarray | None) -> float | None:
    """Width of the 95% bootstrap interval of β/(α+β), from (log A, log B, log E, α, β) rows."""
    if parametric_samples is None or len(parametric_samples) < 2:
        return None
    alpha, beta = parametric_samples[:, 3], parametric_samples[:, 4]
    interval = percentile_interval(beta / (alpha + beta))
    return None if interval is None else interval[1] - interval[0]


def identification_weight(width: float | None) -> float:
    """Approach 3's share by how well the runs pin its allocation exponent down (the width of
    its 95% interval): all up to IDENTIFIED_WIDTH, none from NOT_IDENTIFIED_WIDTH, linear
    between (all where there is no bootstrap to tell)."""
    if width is None or width <= IDENTIFIED_WIDTH:
        return 1.0
    return max(0.0, (NOT_IDENTIFIED_WIDTH - width) / (NOT_IDENTIFIED_WIDTH - IDENTIFIED_WIDTH))


def parametric_share(width: float | None, lack_of_fit: LackOfFit | None) -> float:
    """Approach 3's share of the headline: its identification weight times its lack-of-fit
    weight (1 where the test passes or was not run); Approach 2 takes the rest."""
    return identification_weight(width) * (1.0 if lack_of_fit is None else lack_of_fit.weight)


def combined_prediction(parametric, isoflop, weight: float, flops: float, law: ComputeLaw) -> dict:
    """Approach 3 and Approach 2 at `flops`, weighted: the point a weighted mean in log N
    (and in loss), the interval from their bootstrap draws pooled in those shares — so it
    covers what either method's interval would where the data cannot tell them apart."""
    p3, p2 = parametric.predict(flops, law), isoflop.predict(flops, law)
    d3, d2 = parametric.draws(flops, law), isoflop.draws(flops)
    rng = np.random.default_rng(0)
    out = {"flops": float(flops), "weights": {"parametric": weight, "isoflop": 1.0 - weight}}
    n_opt = float(np.exp(weight * np.log(p3["n_opt"]) + (1 - weight) * np.log(p2["n_opt"])))
    out |= {"n_opt": n_opt, "d_opt": float(law.tokens(flops, n_opt))}
    for key in ("n_opt", "loss_opt"):
        if key == "loss_opt":
            if "loss_opt" not in p2:
                continue
            out["loss_opt"] = float(weight * p3["loss_opt"] + (1 - weight) * p2["loss_opt"])
        a, b = d3.get(key), d2.get(key)
        if a is None or b is None or not len(a) or not len(b):
            out[f"{key}_interval"] = None
            continue
        size = min(len(a), len(b))
        share = int(round(weight * size))
        pooled = np.concatenate(
            [rng.choice(a, share, replace=False), rng.choice(b, size - share, replace=False)]
        )
        out[f"{key}_interval"] = percentile_interval(pooled)
    low_high = out["n_opt_interval"]  # D falls as N grows: the ends swap
    out["d_opt_interval"] = (
        None if low_high is None else tuple(float(law.tokens(flops, n)) for n in low_high[::-1])
    )
    return out


def choose_method(
    predictions: dict[str, Prediction],
    allocation_interval_width: float | None,
    lack_of_fit: LackOfFit | None = None,
) -> str:
    """Approach 3 when fitted, fully identified and not refused by the lack-of-fit test (or
    when nothing else was fitted); the two combined where it keeps part of the headline (the
    combination is made only then: `parametric_share` between 0 and 1); else Approach 2."""
    if "combined" in predictions:
        return "combined"
    if "parametric" in predictions and (
        "isoflop" not in predictions
        or (
            (allocation_interval_width is None or allocation_interval_width <= IDENTIFIED_WIDTH)
            and (lack_of_fit is None or lack_of_fit.fits)
        )
    ):
        return "parametric"
    return "isoflop"


def _chosen_because(
    method: str, has_parametric: bool, width: float | None, lack_of_fit: LackOfFit | None
) -> str:
    fit_words = (
        "its lack-of-fit test was not run (no isoFLOP bootstrap)"
        if lack_of_fit is None
        else f"its lack-of-fit test against the isoFLOP curves: {lack_of_fit.words()}"
    )
    if method == "combined":
        reasons = []
        if width is not None and width > IDENTIFIED_WIDTH:
            reasons.append(
                f"the 95% interval of its allocation exponent is {width:.2f} wide (all of the "
                f"headline to {IDENTIFIED_WIDTH}, none from {NOT_IDENTIFIED_WIDTH}: "
                f"{identification_weight(width):.0%})"
            )
        if lack_of_fit is not None and not lack_of_fit.fits:
            reasons.append(
                f"its lack-of-fit test refuses it (p < {lack_of_fit.threshold:g} in a family: "
                f"{lack_of_fit.weight:.0%}, its smallest p over the threshold)"
            )
        return (
            f"Approach 3 keeps {parametric_share(width, lack_of_fit):.0%} of the headline and "
            "Approach 2 the rest, their bootstrap draws pooled in those shares, as "
            + " and ".join(reasons)
            + f"; {fit_words}"
        )
    if method == "parametric":
        return (
            "Approach 3 leads (it carries the b·D share of C that a power law of C cannot)"
            + ("" if width is None else f"; its allocation exponent's interval is {width:.2f} wide")
            + f"; {fit_words}"
        )
    if not has_parametric:
        return "Approach 3 could not be fitted"
    if width is not None and width > IDENTIFIED_WIDTH:
        return (
            f"Approach 3 is not identified by these runs: the 95% interval of its allocation "
            f"exponent β/(α+β) is {width:.2f} wide (no share from {NOT_IDENTIFIED_WIDTH})"
        )
    return (
        "Approach 3 does not describe these runs (identified, but refused by its lack-of-fit "
        f"test, p < {lack_of_fit.threshold:g} in a family): {lack_of_fit.words()}"
    )


def headline(
    predictions: dict[str, Prediction],
    *,
    largest_budget: float,
    checked_factor: dict[str, float | None],
    allocation_interval_width: float | None,
    lack_of_fit: LackOfFit | None = None,
) -> Prediction | None:
    """The prediction fit.json leads with (`choose_method`), its agreement with the others,
    and its reach past the largest budget against what the hold-out check covered."""
    if not predictions:
        return None
    method = choose_method(predictions, allocation_interval_width, lack_of_fit)
    lead = predictions[method]
    agreed = agreement(predictions)
    reach = lead.flops / largest_budget
    covered = checked_factor.get(method)
    warnings = []
    if covered is None:
        warnings.append(
            f"{reach:.3g}× past the largest budget, and no hold-out check of {method} could be run"
        )
    elif reach > FAR_BEYOND * covered:
        warnings.append(
            f"{reach:.3g}× past the largest budget, far beyond the {covered:.2g}× the hold-out "
            "check covered: the interval assumes the law's form holds all the way"
        )
    if agreed.verdict == "disagree":
        warnings.append(agreed.text.split(" — ")[0])
    return replace(
        lead,
        chosen_because=_chosen_because(
            method, "parametric" in predictions, allocation_interval_width, lack_of_fit
        ),
        agreement=agreed,
        reach=Reach(reach, largest_budget, covered),
        warnings=tuple(warnings),
    )


def headline_line(
    prediction: Prediction | None, loss_unit: str = "nats/token", budget: str = "C"
) -> str:
    """The headline in one line of words: the CLI's last line and the report's first;
    `budget` names what its FLOPs are (C, or the batch-adjusted C_min)."""
    if prediction is None:
        return "no prediction: neither the parametric nor the isoFLOP law could be fitted"
    p = prediction
    text = (
        f"N_opt ≈ {p.n_opt:.3g} activated parameters ({_interval_text(p.n_opt_interval)}, 95%), "
        f"D_opt ≈ {p.d_opt:.3g} tokens ({_interval_text(p.d_opt_interval)})"
    )
    if p.loss_opt is not None:
        text += f", loss ≈ {p.loss_opt:.4g} {loss_unit}" + (" (no floor)" if p.loss_note else "")
    for name, words in (("lr", "peak LR"), ("batch_tokens", "batch")):
        if f"{name}_opt" in p.tuned:  # from the tuned laws (fitting/studies/tuning.py)
            value, interval = p.tuned[f"{name}_opt"], p.tuned.get(f"{name}_opt_interval")
            text += f", {words} ≈ {value:.3g} ({_interval_text(interval)})"
    text += (
        f" at {budget} = {p.flops:.3g} FLOPs — {p.method} ({p.label}); "
        f"{p.reach.factor:.3g}× past the largest budget"
    )
    if p.reach.checked_factor:
        text += f" (hold-out check reached {p.reach.checked_factor:.2g}×)"
    return text + f"; agreement: {p.agreement.verdict}"
