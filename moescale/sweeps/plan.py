"""Planning an isoFLOP sweep: for each budget C and size, the family's config, its exact
FLOPs per token, D = C / flops_per_token in whole batches, and the runs dropped (with the
reason) for too few steps or tokens per parameter out of the window. Bracketing adds the
next size beyond an edge when a budget's lowest loss lands there."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from moescale.errors import UserError
from moescale.models import count, family
from moescale.sweeps.spec import SweepSpec
from moescale.training.spec import RunSpec


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


def size_step(grid: list[float]) -> float:
    """The grid's geometric step, for sizes added beyond its edges."""
    if len(grid) < 2:
        return 2.0
    return float(np.exp(np.mean(np.diff(np.log(grid)))))


def plan_run(
    spec: SweepSpec,
    budget_index: int,
    target: float,
    seed: int,
    extension: int = 0,
    *,
    validation_budget: float | None = None,
) -> PlannedRun | str:
    """One run, or the reason it cannot be planned. A validation run (`validation_budget`)
    trains at that budget with the largest budget's batch; its budget_index is -1."""
    if validation_budget is not None:
        budget, budget_index = validation_budget, -1
        batch_tokens = spec.batch_tokens(len(spec.budgets) - 1)
    else:
        budget = spec.budgets[budget_index]
        batch_tokens = spec.batch_tokens(budget_index)
    try:
        config = family(target, spec.shape_rules)
    except UserError as err:
        return f"budget {budget:.3g}, size {target:.3g}: {err}"
    # the recipe's micro-batch where it divides this budget's batch (else whole batches)
    micro = spec.recipe.micro_batch_tokens
    micro = micro if micro and batch_tokens % micro == 0 and micro < batch_tokens else None
    recipe = spec.recipe.model_copy(
        update={"batch_tokens": batch_tokens, "micro_batch_tokens": micro}
    )
    accounting = count(config, recipe.seq_len)
    steps = round(budget / accounting.flops_per_token / batch_tokens)
    tokens = steps * batch_tokens
    where = f"budget {budget:.3g}, n_active {accounting.n_active:,}"
    if steps < spec.min_steps:
        return f"{where}: {steps} steps < min_steps {spec.min_steps}"
    low, high = spec.tokens_per_param
    ratio = tokens / accounting.n_active
    if not low <= ratio <= high:
        return f"{where}: {ratio:.3g} tokens per parameter outside [{low:g}, {high:g}]"
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
    )


def plan_sweep(spec: SweepSpec) -> Plan:
    """Every planned run of the sweep (before any bracketing), deduplicated by run id."""
    plan, seen = Plan(), set()
    for index, budget in enumerate(spec.budgets):
        planned = 0
        for target in size_grid(spec, index):
            for seed in spec.seeds:
                run = plan_run(spec, index, target, seed)
                if isinstance(run, str):
                    plan.dropped.append(run)
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
) -> list[PlannedRun | str]:
    """Runs to add where a budget's lowest finished loss sits at its smallest or largest
    size: the next size beyond that edge, up to `bracket.max_extensions` per budget.
    `finished` holds run_id and final_loss of completed runs."""
    if not spec.bracket.enabled:
        return []
    losses = dict(zip(finished["run_id"], finished["final_loss"], strict=True))
    added: list[PlannedRun | str] = []
    known = plan.by_id()
    for index in range(len(spec.budgets)):
        runs = [r for r in plan.runs if r.budget_index == index]
        if any(r.run_id not in losses for r in runs):
            continue  # not finished yet
        by_size = pd.DataFrame(
            {
                "n": [r.n_active for r in runs],
                "loss": [losses[r.run_id] for r in runs],
                "ext": [r.extension for r in runs],
            }
        )
        by_size = by_size.groupby("n").agg(loss=("loss", "mean"), ext=("ext", "first")).sort_index()
        if len(by_size) < 2:
            continue
        lowest = int(np.argmin(by_size["loss"].to_numpy()))
        if 0 < lowest < len(by_size) - 1:
            continue
        side = -1 if lowest == 0 else 1
        done = max(0, max(side * e for e in by_size["ext"]))
        if done >= spec.bracket.max_extensions:
            added.append(
                f"budget {spec.budgets[index]:.3g}: optimum still at the {'smallest' if side < 0 else 'largest'} size after {done} extension(s)"
            )
            continue
        step = size_step(size_grid(spec, index))
        edge = by_size.index[0] if side < 0 else by_size.index[-1]
        target = float(edge) * step**side
        for seed in spec.seeds:
            run = plan_run(spec, index, target, seed, extension=side * (done + 1))
            if isinstance(run, PlannedRun) and run.run_id in known:
                continue
            added.append(run)
    if spec.branching:
        new = [r for r in added if isinstance(r, PlannedRun)]
        mapped = iter(branched(new, plan.runs + new))
        added = [next(mapped) if isinstance(r, PlannedRun) else r for r in added]
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
