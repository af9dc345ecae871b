"""Planning an isoFLOP sweep: for each budget C and size, the family's config, its exact
FLOPs per token, D = C / flops_per_token in whole batches, and the runs dropped (with the
reason) for too few steps or tokens per parameter out of the window. Bracketing adds the
next size beyond an edge when a budget's lowest loss lands there."""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from moescale.errors import UserError
from moescale.models import count, family
from moescale.models.variants import Variant, apply_variant
from moescale.results import read_json
from moescale.sweeps.spec import SweepSpec
from moescale.training.spec import RunSpec

Setting = tuple[tuple[str, float], ...]  # tuned hyperparameters of a run: ((axis, value), ...)


@dataclass(frozen=True)
class Dropped:
    """A run the plan could not make, and why (a size the family cannot build, too few
    steps, a bracket or tuning grid that reached its limit): shown, never trained."""

    reason: str


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    budget_flops: float
    budget_index: int
    n_active: int
    n_total: int
    flops_per_token: float
    tokens: int
    steps: int
    extension: int = (
        0  # 0: a planned size; -k / +k: the k-th size added below / above by bracketing
    )
    validation: bool = False  # trained by `moescale validate` past the sweep; never fitted
    asked: float = math.nan  # the size asked for, before the family rounded it to a shape
    trunk_id: str = ""  # a branch of this WSD trunk ('' for a run trained on its own)
    branch_step: int = 0  # where the branch leaves its trunk: steps − its cooldown
    flops_trained: float = math.nan  # FLOPs this row adds to the sweep's real cost
    variant: str = ""  # the MoE design variant ('' when the sweep has none)
    variant_index: int = 0  # its place in the spec's list (0: the reference)
    granularity: int = 1
    tune: Setting = ()  # the tuned axes' values of this run (recipe units)
    untuned: bool = True  # every tuned axis at the recipe's own value

    @property
    def point(self) -> tuple:
        """The (budget, size, variant, seed) point this run belongs to, whatever its tuning."""
        return (self.budget_index, self.n_active, self.variant, self.spec.seed)

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def trunk_flops(self) -> float:
        """A branch's FLOPs before its branch point: its trunk's, not its own (0 alone)."""
        return self.branch_step * self.spec.recipe.batch_tokens * self.flops_per_token

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.n_active

    def row(self) -> dict:
        config = self.spec.model
        return {
            "run_id": self.run_id,
            "budget_flops": self.budget_flops,
            "budget_index": self.budget_index,
            "n_active": self.n_active,
            "n_total": self.n_total,
            "flops_per_token": self.flops_per_token,
            "tokens": self.tokens,
            "steps": self.steps,
            "tokens_per_param": self.tokens_per_param,
            "batch_tokens": self.spec.recipe.batch_tokens,
            "seed": self.spec.seed,
            "extension": self.extension,
            "validation": self.validation,
            "asked": self.asked,
            "trunk_id": self.trunk_id,
            "branch_step": self.branch_step,
            "flops_trained": self.flops_trained,
            "d_model": config.d_model,
            "n_layers": config.n_layers,
            "n_experts": config.n_experts,
            "top_k": config.top_k,
            "variant": self.variant,
            **dict(self.tune),
        }


@dataclass
class Plan:
    runs: list[PlannedRun] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # one line per dropped run, with the reason

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([run.row() for run in self.runs])

    def by_id(self) -> dict[str, PlannedRun]:
        return {run.run_id: run for run in self.runs}

    def trunks(self) -> dict[str, Trunk]:
        """The WSD trunks the plan's branches leave from, each to its last branch point."""
        groups: dict[str, list[PlannedRun]] = {}
        for run in self.runs:
            if run.trunk_id:
                groups.setdefault(run.trunk_id, []).append(run)
        trunks = {}
        for trunk_id, branches in groups.items():
            branches.sort(key=lambda r: r.branch_step)
            longest = branches[-1]
            batch = longest.spec.recipe.batch_tokens
            spec = longest.spec.model_copy(update={"tokens": longest.branch_step * batch})
            trunks[trunk_id] = Trunk(trunk_id, spec, tuple(branches))
        return trunks


@dataclass(frozen=True)
class Trunk:
    """One WSD trunk: its spec (to its last branch point) and its branches, shortest first."""

    trunk_id: str
    spec: RunSpec
    branches: tuple[PlannedRun, ...]

    @property
    def steps(self) -> int:
        return self.branches[-1].branch_step

    @property
    def flops(self) -> float:
        return self.spec.tokens * self.branches[-1].flops_per_token


def branched(runs: list[PlannedRun], all_runs: list[PlannedRun] | None = None) -> list[PlannedRun]:
    """`runs` as branches of WSD trunks: each gets its trunk, its branch step and the FLOPs it
    adds — its cooldown plus the stretch of trunk no shorter branch of the trunk needed (so
    the sum over a sweep is what it really trains). `all_runs` (default `runs`) are the
    trunks' other branches, for that attribution."""
    every = {r.run_id: r for r in (all_runs or runs)} | {r.run_id: r for r in runs}
    steps = {}
    for run in every.values():
        recipe = run.spec.recipe
        steps[run.run_id] = (run.spec.trunk_id, run.steps - recipe.cooldown_steps_of(run.steps))
    out = []
    for run in runs:
        trunk_id, branch_step = steps[run.run_id]
        before = [
            s for r, (t, s) in steps.items() if t == trunk_id and (s, r) < (branch_step, run.run_id)
        ]
        start = max(before, default=0)
        batch = run.spec.recipe.batch_tokens
        added = ((branch_step - start) + (run.steps - branch_step)) * batch * run.flops_per_token
        out.append(replace(run, trunk_id=trunk_id, branch_step=branch_step, flops_trained=added))
    return out


def size_grid(spec: SweepSpec, budget_index: int) -> list[float]:
    """The target activated sizes of one budget, smallest first."""
    sizes = spec.sizes
    if sizes.n_active is not None:
        return sorted(sizes.n_active)
    if sizes.per_budget is not None:
        return sorted(sizes.per_budget[budget_index])
    guess = sizes.guess_coef * spec.budgets[budget_index] ** sizes.guess_exponent
    half = math.log(sizes.spread) / 2
    return list(guess * np.exp(np.linspace(-half, half, sizes.count)))


def grid_centre(spec: SweepSpec, budget: float) -> float:
    """Where the sweep's grid would centre its sizes at any budget: the guess rule's N_guess,
    else the trend of each budget's centre (geometric mean of its grid) against the budget, a
    line in log-log (a fixed list: its own centre). What the sweep continued would train."""
    if spec.sizes.guess_coef is not None:
        return float(spec.sizes.guess_coef * budget**spec.sizes.guess_exponent)
    log_budget = np.log(spec.budgets)
    log_centre = [np.mean(np.log(size_grid(spec, i))) for i in range(len(spec.budgets))]
    if len(spec.budgets) < 2:
        return float(np.exp(log_centre[0]))
    slope, intercept = np.polyfit(log_budget, log_centre, 1)
    return float(np.exp(intercept + slope * np.log(budget)))


def planned_sizes(spec: SweepSpec, budget_index: int) -> list[float]:
    """Every size one budget trains: its grid, then the sizes added after it."""
    added = spec.sizes.added[budget_index] if spec.sizes.added is not None else []
    return size_grid(spec, budget_index) + sorted(added)


def size_step(grid: list[float]) -> float:
    """The grid's geometric step, for sizes added beyond its edges."""
    if len(grid) < 2:
        return 2.0
    return float(np.exp(np.mean(np.diff(np.log(grid)))))


def lr_from_law(path: str, budget: float) -> float:
    """The peak LR η_opt(C) of a fit.json's LR law at `budget` FLOPs (`recipe.lr_rule: law`)."""
    law = ((read_json(path).get("tuning") or {}).get("laws") or {}).get("lr")
    if not law or "coef" not in law or "exponent" not in law:
        raise UserError(f"recipe.lr_law: {path} has no LR law (fit a sweep with tune: lr first)")
    return float(law["coef"] * budget ** law["exponent"])


def batch_from_law(path: str, n_active: int, tokens: float, seq_len: int) -> int:
    """The batch in tokens of a run of `n_active` and `tokens` (`recipe.batch_rule: critical`):
    B_crit(L) = b_star·L^(−1/alpha_b) of a fit.json's critical batch at the run's expected loss
    L = E + A/N^α + B/D^β (its parametric law, nats/token), as a power-of-two number of
    sequences (at least one). Read from the JSON, as `lr_from_law` reads the LR law."""
    fit = read_json(path)
    critical, law = fit.get("critical_batch"), fit.get("parametric")
    if not critical or not law:
        missing = "critical batch" if not critical else "parametric law"
        raise UserError(
            f"recipe.batch_law: {path} has no {missing} (fit a sweep whose runs logged "
            "the gradient noise scale)"
        )
    loss = law["E"] + law["A"] / n_active ** law["alpha"] + law["B"] / tokens ** law["beta"]
    return power_of_two_batch(critical["b_star"] * loss ** (-1.0 / critical["alpha_b"]), seq_len)


def power_of_two_batch(batch_tokens: float, seq_len: int) -> int:
    """A batch as the nearest power-of-two number of sequences (in log), at least one."""
    return seq_len * 2 ** max(0, round(math.log2(batch_tokens / seq_len)))


def tune_grid(spec: SweepSpec) -> list[Setting]:
    """Every combination of the spec's tuned values (one empty setting without `tune`)."""
    if spec.tune is None:
        return [()]
    axes = spec.tune.axes()
    grids = [[(name, v) for v in axes[name].grid(getattr(spec.recipe, name))] for name in axes]
    return [tuple(combo) for combo in itertools.product(*grids)]


def _recipe_at(spec: SweepSpec, budget: float, batch_tokens: int, tune: Setting):
    """The sweep's recipe for one run: its budget's batch (or the tuned one), the LR from the
    LR law at this budget where the recipe follows one, the tuned fields, and the recipe's
    micro-batch where it divides the batch (else whole batches)."""
    settings = dict(tune)
    batch_tokens = int(settings.get("batch_tokens", batch_tokens))
    update: dict = {"batch_tokens": batch_tokens}
    if spec.recipe.lr_rule == "law":
        update |= {
            "lr": lr_from_law(spec.recipe.lr_law, budget),
            "lr_rule": "fixed",
            "lr_law": None,
        }
    if "lr" in settings:
        update["lr"] = settings["lr"]
    if "routed_lr_scale" in settings:
        update["routed_lr_scale"] = settings["routed_lr_scale"]
    micro = spec.recipe.micro_batch_tokens
    update["micro_batch_tokens"] = (
        micro if micro and batch_tokens % micro == 0 and micro < batch_tokens else None
    )
    return spec.recipe.model_copy(update=update)


def plan_run(
    spec: SweepSpec,
    budget_index: int,
    target: float,
    seed: int,
    extension: int = 0,
    *,
    variant: Variant | None = None,
    tune: Setting = (),
    validation_budget: float | None = None,
) -> PlannedRun | Dropped:
    """One run, or why it cannot be planned. A validation run (`validation_budget`)
    trains at that budget with the largest budget's batch; its budget_index is -1. `variant`
    rewrites the family's feed-forward; `tune` sets tuned recipe fields (lr, batch_tokens,
    routed_lr_scale)."""
    if validation_budget is not None:
        budget, budget_index = validation_budget, -1
        batch_tokens = spec.batch_tokens(len(spec.budgets) - 1)
    else:
        budget = spec.budgets[budget_index]
        batch_tokens = spec.batch_tokens(budget_index)
    rewrite = None if variant is None else functools.partial(apply_variant, variant=variant)
    try:
        config = family(target, spec.shape_rules, variant=rewrite)
    except UserError as err:
        return Dropped(f"budget {budget:.3g}, size {target:.3g}: {err}")
    recipe = _recipe_at(spec, budget, batch_tokens, tune)
    accounting = count(config, recipe.seq_len)
    if recipe.batch_rule == "critical":  # the tokens do not depend on the batch: C / (C/D)
        batch = batch_from_law(
            recipe.batch_law, accounting.n_active, budget / accounting.flops_per_token,
            recipe.seq_len,
        )  # fmt: skip
        recipe = _recipe_at(spec, budget, batch, tune).model_copy(
            update={"batch_rule": "fixed", "batch_law": None}
        )
    batch_tokens = recipe.batch_tokens
    steps = round(budget / accounting.flops_per_token / batch_tokens)
    tokens = steps * batch_tokens
    where = f"budget {budget:.3g}, n_active {accounting.n_active:,}"
    if variant is not None:
        where += f", variant {variant.name}"
    if steps < spec.min_steps:
        return Dropped(f"{where}: {steps} steps < min_steps {spec.min_steps}")
    low, high = spec.tokens_per_param
    ratio = tokens / accounting.n_active
    if not low <= ratio <= high:
        return Dropped(f"{where}: {ratio:.3g} tokens per parameter outside [{low:g}, {high:g}]")
    run_spec = RunSpec(
        model=config,
        recipe=recipe,
        data=spec.data,
        tokens=tokens,
        seed=seed,
        device=spec.device,
        num_threads=max(1, int(spec.resources.cpus)),
        world_size=spec.resources.workers,
    )
    own = {name: getattr(spec.recipe, name) for name, _ in tune}
    return PlannedRun(
        spec=run_spec,
        budget_flops=budget,
        budget_index=budget_index,
        n_active=accounting.n_active,
        n_total=accounting.n_total,
        flops_per_token=accounting.flops_per_token,
        tokens=tokens,
        steps=steps,
        extension=extension,
        validation=validation_budget is not None,
        asked=float(target),
        flops_trained=tokens * accounting.flops_per_token,
        variant=variant.name if variant is not None else "",
        variant_index=spec.variants.index(variant) if variant is not None else 0,
        granularity=variant.granularity if variant is not None else 1,
        tune=tuple(tune),
        untuned=all(math.isclose(value, own[name]) for name, value in tune),
    )


def variants_of(spec: SweepSpec) -> list[Variant | None]:
    """The variants every point is planned for ([None]: the family as it is)."""
    return list(spec.variants) or [None]


def plan_sweep(spec: SweepSpec) -> Plan:
    """Every planned run of the sweep (before any bracketing), deduplicated by run id."""
    plan, seen = Plan(), set()
    for index, budget in enumerate(spec.budgets):
        planned = 0
        for target, variant, tune, seed in itertools.product(
            planned_sizes(spec, index), variants_of(spec), tune_grid(spec), spec.seeds
        ):
            run = plan_run(spec, index, target, seed, variant=variant, tune=tune)
            if isinstance(run, Dropped):
                plan.dropped.append(run.reason)
                continue
            if run.run_id in seen:
                continue
            seen.add(run.run_id)
            plan.runs.append(run)
            planned += 1
        if planned == 0:
            raise UserError(
                f"budgets: no size fits budget {budget:.3g} ({plan.dropped[-1] if plan.dropped else 'no sizes'})"
            )
    if spec.branching:
        plan.runs = branched(plan.runs)
    return plan


def bracket_extensions(
    spec: SweepSpec, plan: Plan, finished: pd.DataFrame
) -> list[PlannedRun | Dropped]:
    """Runs to add where a budget's lowest finished loss sits at its smallest or largest
    size (per variant): the next size beyond that edge, up to `bracket.max_extensions` per
    budget; and where a point's best tuned value sits at the edge of its grid: the next value
    beyond, up to `tune.max_extensions` per side. `finished` holds run_id and final_loss of
    completed runs. A run already in the plan is never added again."""
    losses = dict(zip(finished["run_id"], finished["final_loss"], strict=True))
    known = plan.by_id()
    added: list[PlannedRun | Dropped] = []
    if spec.bracket.enabled:
        for index in range(len(spec.budgets)):
            for variant in variants_of(spec):
                added += _size_extensions(spec, plan, losses, index, variant)
    if spec.tune is not None:
        added += _tune_extensions(spec, plan, losses)
    out, seen = [], set(known)
    for run in added:  # two groups may ask for the same run
        if isinstance(run, PlannedRun):
            if run.run_id in seen:
                continue
            seen.add(run.run_id)
        out.append(run)
    if spec.branching:
        new = [r for r in out if isinstance(r, PlannedRun)]
        mapped = iter(branched(new, plan.runs + new))
        out = [next(mapped) if isinstance(r, PlannedRun) else r for r in out]
    return out


def _size_extensions(
    spec: SweepSpec, plan: Plan, losses: dict, index: int, variant: Variant | None
) -> list[PlannedRun | Dropped]:
    """One budget and variant: the next size beyond its edge if its optimum sits there (the
    loss of a size: its lowest over the tuned values, averaged over seeds)."""
    name = variant.name if variant is not None else ""
    runs = [r for r in plan.runs if r.budget_index == index and r.variant == name]
    if not runs or any(r.run_id not in losses for r in runs):
        return []  # not finished yet
    by_run = pd.DataFrame(
        {
            "n": [r.n_active for r in runs],
            "seed": [r.spec.seed for r in runs],
            "loss": [losses[r.run_id] for r in runs],
            "ext": [r.extension for r in runs],
        }
    )
    tuned = by_run.groupby(["n", "seed"]).agg(loss=("loss", "min"), ext=("ext", "first"))
    by_size = tuned.groupby("n").agg(loss=("loss", "mean"), ext=("ext", "first")).sort_index()
    if len(by_size) < 2:
        return []
    lowest = int(np.argmin(by_size["loss"].to_numpy()))
    if 0 < lowest < len(by_size) - 1:
        return []
    side = -1 if lowest == 0 else 1
    done = max(0, max(side * e for e in by_size["ext"]))
    where = f"budget {spec.budgets[index]:.3g}" + (f", variant {name}" if name else "")
    if done >= spec.bracket.max_extensions:
        return [
            Dropped(
                f"{where}: optimum still at the {'smallest' if side < 0 else 'largest'} size after {done} extension(s)"
            )
        ]
    step = size_step(size_grid(spec, index))
    edge = by_size.index[0] if side < 0 else by_size.index[-1]
    target = float(edge) * step**side
    tunes = sorted({r.tune for r in runs if r.extension == by_size["ext"].iloc[lowest]})
    return [
        plan_run(spec, index, target, seed, extension=side * (done + 1), variant=variant, tune=t)
        for seed in spec.seeds
        for t in tunes
    ]


def _tune_extensions(spec: SweepSpec, plan: Plan, losses: dict) -> list[PlannedRun | Dropped]:
    """For every point and tuned axis (the other axes held): the next value beyond the edge of
    the axis's grid where the point's lowest loss sits on it."""
    variants = {v.name: v for v in spec.variants}
    added: list[PlannedRun | Dropped] = []
    for axis, grid_spec in spec.tune.axes().items():
        base = grid_spec.grid(getattr(spec.recipe, axis))
        step = size_step(base)
        groups: dict[tuple, list[PlannedRun]] = {}
        for run in plan.runs:
            if run.validation or not run.tune:
                continue
            others = tuple(kv for kv in run.tune if kv[0] != axis)
            groups.setdefault((run.point, others), []).append(run)
        for (point, _others), runs in groups.items():
            if any(r.run_id not in losses for r in runs):
                continue
            values = sorted({dict(r.tune)[axis] for r in runs})
            best = min(runs, key=lambda r: losses[r.run_id])
            value = dict(best.tune)[axis]
            if len(values) < 2 or values[0] < value < values[-1]:
                continue
            side = -1 if value == values[0] else 1
            beyond = sum(1 for v in values if (v < base[0] if side < 0 else v > base[-1]))
            index, n_active, name, seed = point
            where = (
                f"budget {spec.budgets[index]:.3g}, n_active {n_active:,}"
                + (f", variant {name}" if name else "")
                + f": best {axis} {value:.3g}"
            )
            if beyond >= spec.tune.max_extensions:
                added.append(
                    Dropped(f"{where} still at the grid's edge after {beyond} extension(s)")
                )
                continue
            new = value * step**side
            if axis == "batch_tokens":  # whole sequences
                seq = spec.recipe.seq_len
                new = float(max(seq, round(new / seq) * seq))
            tune = tuple((k, new if k == axis else v) for k, v in best.tune)
            added.append(
                plan_run(
                    spec,
                    index,
                    best.asked,
                    seed,
                    extension=best.extension,
                    variant=variants.get(name),
                    tune=tune,
                )
            )
    return added


@dataclass(frozen=True)
class Repetition:
    """How often the planned runs read a corpus of `unique_tokens` training tokens."""

    unique_tokens: int
    threshold: float
    epochs: dict[str, float]  # run id → passes over the data

    def over(self, plan: Plan) -> list[PlannedRun]:
        return [r for r in plan.runs if self.epochs[r.run_id] > self.threshold]

    def notes(self, plan: Plan) -> list[str]:
        """One line per planned run past the threshold, naming it."""
        return [
            f"run {r.run_id} (budget {r.budget_flops:.3g} FLOPs, n_active {r.n_active:,}) reads "
            f"its {self.unique_tokens:,} unique tokens {self.epochs[r.run_id]:.1f} times "
            f"(more than {self.threshold:g} passes: repeated data is worth less than fresh)"
            for r in self.over(plan)
        ]

    def largest_budget(self, plan: Plan) -> float:
        """The largest budget at which every planned size stays within the threshold:
        D ≤ threshold·U_D for the size with the fewest FLOPs per token."""
        return self.threshold * self.unique_tokens * min(r.flops_per_token for r in plan.runs)


def repetition(plan: Plan, unique_tokens: int, threshold: float) -> Repetition:
    return Repetition(
        unique_tokens=int(unique_tokens),
        threshold=threshold,
        epochs={r.run_id: r.tokens / unique_tokens for r in plan.runs},
    )
