"""The next runs that most narrow the headline's interval: an adaptive design of experiments on
the fit's own uncertainty (`moescale suggest`).

The parametric law's bootstrap draws stand for what the truth may be. A set of runs is judged
in two stages:
1. Screening (cheap, every candidate). Each draw in turn is taken as the truth, the runs'
   losses are simulated from it with the runs' own noise, and the ensemble is updated by
   weighting every draw by its likelihood of that outcome (importance weighting: the draws'
   posterior given the new runs). The 95% interval of N_opt at the target under those weights
   is the interval the runs would leave; its expected width scores the set. A greedy search
   on that score proposes a few designs.
2. Deciding (the real thing, a few designs). Each proposed design, the sweep's own grid
   continued to its next budget and that budget's runs centred on the fitted optimum are
   scored by refitting the whole pipeline on simulated outcomes (the same simulated truths and
   noise for every design) and taking the headline's own interval: the screen sees only the
   parametric law, while the headline may be Approach 2 or the two combined, and a run far
   from the optimum can cost the headline its lead method. The sweep's grid continued is the
   default (what its researcher would run without us); another design replaces it only when
   it is narrower beyond the simulation's own noise (`_choose`). The refits' outcomes at
   budgets past the sweep carry the law's own error there, as the fit's hold-out check
   measured it (`Misfit`): taken as exact, the law promised ×1.97–×2.65 on the example where
   the real runs left ×9.6.

Candidates. At a budget already in the sweep: one run within a grid step of the ensemble's
optimum there. At a new budget past the largest: three sizes a grid step apart, centred on
its optimum, at once — a budget enters the isoFLOP fit (Approach 2) and the hold-out check
only with three sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np

from moescale.errors import UserError
from moescale.fitting.laws.compute_law import ComputeLaw
from moescale.fitting.laws.parametric import ParametricFit, optima_of
from moescale.fitting.laws.powerlaw import INTERVAL
from moescale.fitting.studies.extrapolation import ExtrapolationCheck

NEW_BUDGET_RUNS = 3  # a new budget's runs: what a per-budget (isoFLOP) fit needs
NEW_BUDGET_STEP = math.sqrt(2.0)  # new budgets at C_max·√2^j: finer than a factor-2 grid
# candidate sizes: the optimum × grid step^offset, no further. A run far from the optimum
# pins the law's exponents hardest on paper, and the screen and the refits both favour it;
# but its residual is shrunk by its own leverage, so the bootstrap reads it as surer than it
# is, and a mistuned run there (worse than its law, as real runs are) bends the fit: on the
# simulated designs (benchmarks/next_runs_study.py) sizes two steps off the optima narrowed
# the interval and missed the truth in 2 of 3 seeds, where the grid continued covered it.
SIZE_OFFSETS = (-1, 0, 1)
MIN_NOISE_LOG_SD = 0.002  # a floor on the likelihood's scale (a fit that happens to be exact)
SCREEN_TRUTHS = 200  # simulated truths per screened set
GRID = "the sweep's grid continued"  # the design every suggestion is held against
CENTRED = "next budget centred on the fit"
MIN_DRAWS = 20


@dataclass(frozen=True)
class Point:
    """One run as the planner would train it: its budget, activated size (the laws' N), tokens
    and the FLOPs it costs (its budget, spent on whole batches)."""

    budget_flops: float
    n_active: float
    tokens: float
    flops: float


# (budget, wanted n_active) -> the run the planner would make there, or None where it cannot
PointAt = Callable[[float, float], "Point | None"]
# (runs to add, their losses [P]) -> the refitted headline's 95% N_opt interval, or None
Refit = Callable[[tuple[Point, ...], np.ndarray], "tuple[float, float] | None"]


@dataclass(frozen=True)
class Design:
    """One proposed set of next runs, as screened and as decided by real refits."""

    name: str
    points: tuple[Point, ...]
    screened_width: float  # expected hi/lo of the parametric draws' reweighted interval
    width: float  # expected hi/lo of the refitted headline (geometric mean over outcomes)
    interval: tuple[float, float]  # the median over outcomes of each end
    refits: int  # outcomes the pipeline could refit (of `simulations`)
    log_widths: tuple[float, ...] = ()  # per simulated outcome (NaN: the refit failed)

    @property
    def flops(self) -> float:
        return float(sum(p.flops for p in self.points))

    @property
    def width_range(self) -> tuple[float, float]:
        """The narrowest and widest hi/lo over the refitted outcomes: what one real set of
        runs may give (each outcome is one possible truth and one draw of the runs' noise)."""
        widths = np.exp(np.array(self.log_widths, float))
        widths = widths[np.isfinite(widths)]
        return (float(widths.min()), float(widths.max())) if len(widths) else (math.nan, math.nan)

    @classmethod
    def from_dict(cls, data: dict) -> Design:
        points = tuple(Point(**p) for p in data["points"])
        interval, log_widths = tuple(data["interval"]), tuple(data.get("log_widths", ()))
        return cls(**data | {"points": points, "interval": interval, "log_widths": log_widths})


@dataclass(frozen=True)
class NextRuns:
    """The chosen design, every design decided between, and the headline interval now (N_opt
    at the target, 95%)."""

    chosen: Design
    chosen_because: str
    designs: tuple[Design, ...]
    target_flops: float
    cap_flops: float
    interval_now: tuple[float, float]
    simulations: int
    draws: int  # the parametric bootstrap draws the truths were taken from

    runs_hash: str = ""  # of the runs the fit was made from (pipeline.runs_hash)
    misfit: Misfit | None = None  # the law's own error the refitted outcomes carried

    @property
    def width_now(self) -> float:
        return self.interval_now[1] / self.interval_now[0]

    @property
    def law_error(self) -> str:
        """What the refitted outcomes assumed of the law past the sweep, in words."""
        m = self.misfit
        if m is None:
            return (
                "the refitted outcomes take the law as exact past the sweep (the fit has no "
                "hold-out check to size its error: refit with it for outcomes that carry it)"
            )
        return (
            f"the refitted outcomes at new budgets carry the law's own error past the sweep, "
            f"as its hold-out check measured it on {m.rows} predictions: optimum N "
            f"×{math.exp(m.n_opt_log_sd):.2f}, optimal loss ±{100 * m.loss_log_sd:.1f}% (1 sd)"
        )

    def to_dict(self) -> dict:
        """next_runs.json's form: the chosen design by its index among `designs`."""
        data = asdict(self)
        data["chosen"] = self.designs.index(self.chosen)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> NextRuns:
        designs = tuple(Design.from_dict(d) for d in data["designs"])
        chosen, now = designs[data["chosen"]], tuple(data["interval_now"])
        misfit = Misfit(**data["misfit"]) if data.get("misfit") else None
        return cls(
            **data | {"designs": designs, "chosen": chosen, "interval_now": now, "misfit": misfit}
        )


@dataclass(frozen=True)
class TargetRun:
    """The run `moescale recommend` makes at the target budget, in numbers (for the report,
    which draws it without the model family): N is n_active, the loss the parametric law's."""

    budget_flops: float
    n_active: int
    n_total: int
    tokens: int
    flops: float
    loss: float
    lr: float
    lr_source: str
    batch_tokens: int
    batch_source: str
    n_opt_interval: tuple[float, float] | None
    regret_low: float  # the loss given up by the interval's low end if the truth is high
    regret_high: float


def runs_text(points: tuple[Point, ...]) -> str:
    """Runs as people read them: 'budget: size, size; budget: size'."""
    by_budget: dict[float, list[float]] = {}
    for p in points:
        by_budget.setdefault(p.budget_flops, []).append(p.n_active)
    return "; ".join(
        f"{b:.3g}: " + ", ".join(f"{n:,.0f}" for n in sorted(sizes))
        for b, sizes in sorted(by_budget.items())
    )


def _weighted_interval(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `weights` [S, B]: the 2.5% and 97.5% weighted quantiles of `values` [B] (the
    first value whose cumulative weight reaches each level)."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[:, order], axis=1)
    cumulative /= cumulative[:, -1:]
    ends = [np.argmax(cumulative >= level / 100, axis=1) for level in INTERVAL]
    return values[order][ends[0]], values[order][ends[1]]


@dataclass(frozen=True)
class Misfit:
    """How far the parametric law has missed past the runs it was fitted on, as the sweep's own
    hold-out check measured it (the largest budgets left out, refitted, predicted): the RMS log
    error of the held-out budgets' optimum N and of their optimal loss. The law's bootstrap
    knows only the runs' scatter about it; real runs past the sweep also differ from the law
    itself (on the example, 4 runs at the next budget turned a ×2.96 interval into ×9.6, where
    outcomes without this term ranged ×1.97–×2.65). Each held-out optimum is also a noisy
    per-budget fit, so the term errs wide."""

    n_opt_log_sd: float
    loss_log_sd: float
    rows: int  # held-out predictions it was measured on

    @classmethod
    def of(cls, check: ExtrapolationCheck | None) -> Misfit | None:
        """From the hold-out check's Approach 3 rows (None where it made none)."""
        rows = [r for r in check.rows if r.method == "parametric"] if check is not None else []
        if not rows:
            return None
        n_err = np.log([r.n_opt_fitted / r.n_opt_predicted for r in rows])
        loss_err = np.log([r.loss_fitted / r.loss_predicted for r in rows])
        return cls(_rms(n_err), _rms(loss_err), len(rows))


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def _log_loss(samples: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """Log loss of each row of `samples` [S, 5] (log A, log B, log E, alpha, beta) at sizes and
    tokens [S or 1, P] (inf where a draw overflows)."""
    log_a, log_b, log_e, alpha, beta = (samples[:, i : i + 1] for i in range(5))
    with np.errstate(over="ignore"):
        value = np.exp(log_e) + np.exp(log_a - alpha * log_n) + np.exp(log_b - beta * log_d)
    return np.log(value)


@dataclass(frozen=True)
class Ensemble:
    """The parametric law's bootstrap draws as possible truths: each draw's log N_opt at the
    target and its log loss at any run; `noise` the runs' log-loss scatter about the law;
    `misfit` the law's own error past `largest_budget` (None: the law taken as exact there)."""

    samples: np.ndarray  # [B, 5] (log A, log B, log E, alpha, beta)
    log_n_opt: np.ndarray  # [B]
    noise: float
    compute_law: ComputeLaw
    misfit: Misfit | None = None
    largest_budget: float = math.inf
    _optima: dict = field(default_factory=dict, repr=False, compare=False)  # budget -> median

    @classmethod
    def of(
        cls,
        parametric: ParametricFit,
        law: ComputeLaw,
        target_flops: float,
        misfit: Misfit | None = None,
        largest_budget: float = math.inf,
    ) -> Ensemble:
        if parametric.samples is None or len(parametric.samples) < MIN_DRAWS:
            raise UserError(
                f"suggest needs the parametric law's bootstrap draws (a fit with --bootstrap "
                f"≥ {MIN_DRAWS})"
            )
        log_n_opt = np.log(optima_of(parametric.samples, target_flops, law)["n_opt"])
        keep = np.isfinite(log_n_opt)
        noise = max(parametric.noise_log_sd, MIN_NOISE_LOG_SD)
        return cls(parametric.samples[keep], log_n_opt[keep], noise, law, misfit, largest_budget)

    def log_loss(self, points: tuple[Point, ...]) -> np.ndarray:
        """[B, P]: each draw's log loss at each point (inf where a draw overflows)."""
        log_n = np.log([p.n_active for p in points])[None, :]
        log_d = np.log([p.tokens for p in points])[None, :]
        return _log_loss(self.samples, log_n, log_d)

    def optimum(self, budget: float) -> float:
        """The ensemble's median N_opt at `budget`."""
        if budget not in self._optima:
            optima = optima_of(self.samples, budget, self.compute_law)["n_opt"]
            self._optima[budget] = float(np.median(optima))
        return self._optima[budget]

    def outcomes(
        self, points: tuple[Point, ...], count: int, seed: int, misfit: bool = True
    ) -> np.ndarray:
        """[count, P] simulated log losses: truths drawn from the ensemble (the same ones for
        every set of points of one seed), each run's noise added, and with `misfit` the law's
        own error at budgets past the sweep (`_misfit`)."""
        rng = np.random.default_rng(seed)
        truths = rng.choice(len(self.samples), size=min(count, len(self.samples)), replace=False)
        noise = rng.standard_normal((len(truths), len(points)))
        if misfit and self.misfit is not None:
            clean = self._misfit(points, truths, seed)
        else:
            clean = self.log_loss(points)[truths]
        return clean + self.noise * noise

    def _misfit(self, points: tuple[Point, ...], truths: np.ndarray, seed: int) -> np.ndarray:
        """[S, P]: each truth's log loss where, at every budget past the sweep, the truth's
        isoFLOP curve is moved in log N by ε ~ N(0, n_opt_log_sd²) (its optimum with it) and in
        level by N(0, loss_log_sd²): one draw per budget and truth, from a generator seeded by
        the seed and the budget, so that two designs at one budget meet the same errors."""
        misfit, law = self.misfit, self.compute_law
        log_n = np.log([p.n_active for p in points])[None, :].repeat(len(truths), 0)
        log_d = np.log([p.tokens for p in points])[None, :].repeat(len(truths), 0)
        level = np.zeros_like(log_n)
        for budget in {p.budget_flops for p in points if p.budget_flops > self.largest_budget}:
            rng = np.random.default_rng([seed, int(round(math.log(budget) * 1000))])
            shift, offset = rng.standard_normal((2, len(truths), 1))
            column = np.array([p.budget_flops == budget for p in points])
            n = np.exp(log_n[:, column])
            moved = n * np.exp(-misfit.n_opt_log_sd * shift)
            # the moved size's tokens at the same budget, relative to the run's own (exact) ones
            log_d[:, column] += np.log(law.flops_per_token(n) / law.flops_per_token(moved))
            log_n[:, column] = np.log(moved)
            level[:, column] = misfit.loss_log_sd * offset
        return _log_loss(self.samples[truths], log_n, log_d) + level

    def screened_width(self, points: tuple[Point, ...], seed: int = 0) -> float:
        """The expected 95% width (hi/lo, geometric mean over simulated truths) of N_opt at the
        target once `points` are added, by reweighting the draws (module docstring, 1)."""
        predicted = self.log_loss(points)
        # the screen proposes designs under the law as fitted; the refits meet its misfit
        outcome = self.outcomes(points, SCREEN_TRUTHS, seed, misfit=False)
        misfit = ((outcome[:, None, :] - predicted[None, :, :]) ** 2).sum(axis=2)
        log_weight = np.where(np.isfinite(misfit), -misfit / (2 * self.noise**2), -np.inf)
        weights = np.exp(log_weight - log_weight.max(axis=1, keepdims=True))
        low, high = _weighted_interval(self.log_n_opt, weights)
        return float(np.exp(np.mean(high - low)))


def round_budget(flops: float) -> float:
    """A new budget as a person would write it: three significant figures."""
    return float(f"{flops:.3g}")


@dataclass(frozen=True)
class _Space:
    """What the greedy search may choose from: the sweep's budgets, the planner, the grid's
    size step, the cap and the number of runs."""

    budgets: tuple[float, ...]
    point_at: PointAt
    size_step: float
    cap: float
    k: int

    @property
    def cheapest(self) -> float:
        return min(self.budgets)

    def new_budgets(self, room: float) -> list[float]:
        """Budgets past the largest whose block of runs fits in `room` FLOPs."""
        largest, out, j = max(self.budgets), [], 1
        while NEW_BUDGET_RUNS * (budget := round_budget(largest * NEW_BUDGET_STEP**j)) <= room:
            out.append(budget)
            j += 1
        return out

    def moves(self, ensemble: Ensemble, chosen: tuple[Point, ...]) -> list[tuple]:
        """Every next move: one run at a budget of the sweep (or one already chosen), or a
        block of runs at a new budget, each affordable with the runs still to choose."""
        spent, left = sum(p.flops for p in chosen), self.k - len(chosen)
        taken = {(p.budget_flops, p.n_active) for p in chosen}
        budgets = sorted(set(self.budgets) | {p.budget_flops for p in chosen})
        moves: list[tuple[Point, ...]] = []
        for budget in budgets:
            centre = ensemble.optimum(budget)
            for offset in SIZE_OFFSETS:
                point = self.point_at(budget, centre * self.size_step**offset)
                if point is not None and (point.budget_flops, point.n_active) not in taken:
                    moves.append((point,))
        if left >= NEW_BUDGET_RUNS:
            room = self.cap - spent - (left - NEW_BUDGET_RUNS) * self.cheapest
            moves += [b for b in map(partial(self.block, ensemble), self.new_budgets(room)) if b]
        return [
            m
            for m in moves
            if spent + sum(p.flops for p in m) + (left - len(m)) * self.cheapest <= self.cap
        ]

    def block(self, ensemble: Ensemble, budget: float) -> tuple[Point, ...] | None:
        """NEW_BUDGET_RUNS sizes a step apart at a new budget, centred on its optimum (None
        where the planner cannot make all of them). Centred, never shifted: a block a step off
        holds the optimum at its edge, where Approach 2 drops the budget and the sweep's
        bracketing adds runs past the cap — on the quickstart the screen chose one a step above
        the optimum, and the real runs left the interval at ×2.55 where the grid's
        next budget narrowed it to ×2.15."""
        sizes = sizes_around(ensemble.optimum(budget), NEW_BUDGET_RUNS, self.size_step)
        block = tuple(self.point_at(budget, n) for n in sizes)
        if any(p is None for p in block) or len({p.n_active for p in block}) < NEW_BUDGET_RUNS:
            return None
        return block

    def greedy(self, ensemble: Ensemble, first: tuple = (), seed: int = 0) -> tuple:
        """Runs added one move at a time, each the move whose set screens narrowest."""
        chosen = tuple(first)
        while len(chosen) < self.k:
            scored = [
                (ensemble.screened_width(chosen + m, seed), m) for m in self.moves(ensemble, chosen)
            ]
            if not scored:
                break
            chosen += min(scored, key=lambda pair: pair[0])[1]
        return chosen


def next_budget(budgets: list[float]) -> float:
    """The sweep's next budget: the largest × the grid's geometric budget ratio."""
    ordered = sorted(budgets)
    ratio = float(np.exp(np.mean(np.diff(np.log(ordered))))) if len(ordered) > 1 else 2.0
    return round_budget(ordered[-1] * ratio)


def sizes_around(centre: float, k: int, size_step: float) -> list[float]:
    """`k` sizes a grid step apart, centred (geometrically) on `centre`."""
    return [centre * size_step ** (i - (k - 1) / 2) for i in range(k)]


def centred_next_budget(
    parametric: ParametricFit,
    law: ComputeLaw,
    budgets: list[float],
    k: int,
    point_at: PointAt,
    size_step: float = 2.0,
) -> tuple[Point, ...]:
    """`k` sizes a grid step apart at the sweep's next budget, centred on the fitted optimum
    there (not on the sweep's own guess)."""
    budget = next_budget(budgets)
    centre = float(parametric.optimal(budget, law)["n_opt"])
    points = [point_at(budget, n) for n in sizes_around(centre, k, size_step)]
    return tuple(p for p in points if p is not None)


def _decide(
    name: str,
    points: tuple[Point, ...],
    ensemble: Ensemble,
    refit: Refit,
    simulations: int,
    seed: int,
) -> Design:
    """One design scored by refitting the pipeline on `simulations` simulated outcomes."""
    intervals, log_widths = [], []
    for outcome in ensemble.outcomes(points, simulations, seed):
        interval = refit(points, np.exp(outcome))
        ok = interval is not None and interval[0] > 0
        if ok:
            intervals.append(interval)
        log_widths.append(math.log(interval[1] / interval[0]) if ok else math.nan)
    if intervals:
        ends = np.log(np.array(intervals))
        width = float(np.exp(np.mean(ends[:, 1] - ends[:, 0])))
        middle = tuple(float(v) for v in np.exp(np.median(ends, axis=0)))
    else:
        width, middle = math.inf, (math.nan, math.nan)
    return Design(
        name=name,
        points=points,
        screened_width=ensemble.screened_width(points, seed),
        width=width,
        interval=middle,
        refits=len(intervals),
        log_widths=tuple(log_widths),
    )


def _choose(designs: list[Design], simulations: int) -> tuple[Design, str]:
    """The default (the sweep's grid continued, else the next budget centred on the fit)
    unless another design is narrower beyond the noise of the simulation: its mean log width,
    paired outcome by outcome (the same truths and noise for both), below the default's by
    more than two standard errors. The outcomes assume the law holds past the sweep, which
    real runs need not grant (on the quickstart the ranking of two designs reversed), so the
    conventional design keeps the benefit of doubt. A design the pipeline could not refit on
    every outcome ranks after those it could."""
    complete = [d for d in designs if d.refits == simulations] or designs
    best = min(complete, key=lambda d: d.width)
    default = next((d for name in (GRID, CENTRED) for d in complete if d.name == name), None)
    if default is None:
        return best, "the narrowest expected interval (no next budget of the grid is a candidate)"
    if best is default:
        return best, "the narrowest expected interval"
    gain = np.array(best.log_widths) - np.array(default.log_widths)
    error = float(np.std(gain, ddof=1) / math.sqrt(len(gain)))
    if gain.mean() < -2 * error:
        return best, (
            f"narrower than '{default.name}' by {-gain.mean():.3f} in log width, more than "
            f"twice the paired standard error ({error:.3f})"
        )
    return default, (
        f"'{best.name}' was narrower by {-gain.mean():.3f} in log width, within twice the "
        f"paired standard error ({error:.3f}): not enough to leave '{default.name}'"
    )


def suggest_next_runs(
    parametric: ParametricFit,
    law: ComputeLaw,
    target_flops: float,
    interval_now: tuple[float, float],
    budgets: list[float],
    k: int,
    point_at: PointAt,
    refit: Refit,
    *,
    cap_flops: float | None = None,
    size_step: float = 2.0,
    simulations: int = 8,
    seed: int = 0,
    grid: tuple[Point, ...] = (),
    misfit: Misfit | None = None,
) -> NextRuns:
    """The `k` runs, together within `cap_flops` (default: what the next budget's runs would
    cost), that leave the narrowest expected headline interval at `target_flops`: a few
    designs proposed by the screen, decided by refits against `grid`, the sweep's own grid
    continued to its next budget (module docstring). With `misfit`, the refits' outcomes at
    budgets past the sweep carry the law's own error (`Misfit`), not the runs' noise alone."""
    if k < 1:
        raise UserError(f"--runs must be at least 1, got {k}")
    ensemble = Ensemble.of(parametric, law, target_flops, misfit, max(budgets))
    centred = centred_next_budget(parametric, law, budgets, k, point_at, size_step)
    if cap_flops is None:
        default = grid if len(grid) == k else centred
        if len(default) < k:
            raise UserError("the planner cannot make the sweep's next budget: give --budget-cap")
        cap_flops = float(sum(p.flops for p in default))
    if k * min(budgets) > cap_flops:
        raise UserError(
            f"--budget-cap {cap_flops:.3g} FLOPs cannot pay for {k} runs (the sweep's smallest "
            f"budget is {min(budgets):.3g})"
        )
    space = _Space(tuple(budgets), point_at, size_step, cap_flops, k)
    proposals = {}  # the defaults first: a proposal with the same runs is that design
    for name, points in ((GRID, grid), (CENTRED, centred)):
        if len(points) == k and sum(p.flops for p in points) <= cap_flops * (1 + 1e-9):
            proposals[name] = points
    proposals["screened"] = space.greedy(ensemble, seed=seed)
    # the furthest new budget whose block leaves room for the other runs, then the greedy rest
    room = cap_flops - (k - NEW_BUDGET_RUNS) * space.cheapest
    furthest = space.new_budgets(room)[-1:] if k >= NEW_BUDGET_RUNS else []
    largest_block = space.block(ensemble, furthest[0]) if furthest else None
    if largest_block:
        proposals["furthest budget"] = space.greedy(ensemble, largest_block, seed)
    designs, seen = [], set()
    for name, points in proposals.items():
        key = frozenset((p.budget_flops, p.n_active) for p in points)
        if len(points) == k and key not in seen:
            seen.add(key)
            designs.append(_decide(name, points, ensemble, refit, simulations, seed))
    if not designs:
        raise UserError(f"no {k} runs fit within --budget-cap {cap_flops:.3g} FLOPs")
    chosen, because = _choose(designs, simulations)
    return NextRuns(
        chosen=chosen,
        chosen_because=because,
        designs=tuple(designs),
        target_flops=float(target_flops),
        cap_flops=float(cap_flops),
        interval_now=interval_now,
        simulations=simulations,
        draws=len(ensemble.samples),
        misfit=misfit,
    )
