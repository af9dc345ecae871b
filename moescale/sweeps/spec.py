"""`SweepSpec`: an isoFLOP sweep as YAML — budgets, the model family, sizes, recipe, data,
resources — validated so that an unknown key, a wrong type or an impossible plan is a
one-line error naming the key."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from moescale.models.family import ShapeRules
from moescale.models.variants import Variant
from moescale.published.constants import MUENNIGHOFF_FREE_EPOCHS
from moescale.training.data import DataSpec
from moescale.training.recipe import Recipe, resolve_recipe
from moescale.yamlio import load_yaml, validate

_SHAPE_FIELDS = {f.name for f in dataclasses.fields(ShapeRules)}
# Bounds past any real run, so that a typo fails here in one line rather than as an
# overflow, a hang in the size search (1e30 parameters) or a file name the OS refuses:
MAX_BUDGET_FLOPS = 1e30  # ~1e5 × the largest published training runs (~1e25)
MAX_N_ACTIVE = 1e14  # 100T activated parameters
MAX_NAME_CHARS = 100  # the sweep's folder name; run folders and files sit under it


def _in_range(values: list[float], what: str, top: float) -> None:
    for v in values:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{what} must be finite and > 0, got {v}")
        if v > top:
            raise ValueError(f"{what} must be at most {top:.0e}, got {v:.3g}")


class Sizes(BaseModel):
    """Which activated sizes each budget trains: an explicit list (the same for every budget),
    a list per budget, or a rule — `count` sizes log-spaced over a factor `spread` (largest /
    smallest) around a guessed optimum N_guess = guess_coef · C^guess_exponent. `added`: sizes
    added to a budget after its grid (`moescale suggest` writes them), one list per budget;
    planned like the grid's, but not part of it, so the grid's step (bracketing's) holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_active: list[float] | None = None
    per_budget: list[list[float]] | None = None
    count: int = Field(5, ge=3)
    spread: float = Field(8.0, gt=1)
    guess_coef: float | None = Field(None, gt=0)
    guess_exponent: float = Field(0.5, gt=0, lt=1)
    added: list[list[float]] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Sizes:
        given = [
            self.n_active is not None,
            self.per_budget is not None,
            self.guess_coef is not None,
        ]
        if sum(given) != 1:
            raise ValueError("give exactly one of n_active, per_budget or guess_coef")
        for sizes in [self.n_active or []] + list(self.per_budget or []) + list(self.added or []):
            _in_range(sizes, "sizes (n_active)", MAX_N_ACTIVE)
        if self.guess_coef is not None and not math.isfinite(self.guess_coef):
            raise ValueError(f"guess_coef must be finite, got {self.guess_coef}")
        return self


class Resources(BaseModel):
    """What one trial reserves: `workers` processes (the run sharded over them with FSDP2 when
    more than one), each with `cpus` CPUs (its torch threads) and `gpus` GPUs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: float = Field(1, gt=0)  # per worker; also its torch threads (at least 1)
    gpus: float = Field(0, ge=0)  # per worker
    workers: int = Field(1, ge=1)  # processes per trial: the run's world size


class Bracket(BaseModel):
    """Extend a budget past its edge when its lowest loss lands on its smallest or largest size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    max_extensions: int = Field(2, ge=0)  # per budget


TUNE_AXES = ("lr", "batch_tokens", "routed_lr_scale")  # recipe fields a sweep can tune


class TuneAxis(BaseModel):
    """One tuned hyperparameter's grid: multipliers of the recipe's own value (a bare list
    means multipliers) or absolute values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    multipliers: list[float] | None = None
    values: list[float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, value: Any) -> Any:
        return {"multipliers": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _one_grid(self) -> TuneAxis:
        if (self.multipliers is None) == (self.values is None):
            raise ValueError("give multipliers or values")
        grid = self.multipliers if self.multipliers is not None else self.values
        if not grid:
            raise ValueError("empty grid")
        if any(not v > 0 for v in grid):
            raise ValueError(f"grid values must be > 0, got {min(grid):g}")
        if len(set(grid)) != len(grid):
            raise ValueError("grid has a repeated value")
        return self

    def grid(self, own: float) -> list[float]:
        """The axis's values, smallest first, given the recipe's own value."""
        if self.values is not None:
            return sorted(float(v) for v in self.values)
        return sorted(float(own * m) for m in self.multipliers)


class Tune(BaseModel):
    """Hyperparameters tried at every (budget, size, variant) point; the tuned loss is the
    lowest over them. A grid whose best value is at its edge is extended by one step of the
    grid beyond it, up to `max_extensions` per side (as sizes are)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: TuneAxis | None = None
    batch_tokens: TuneAxis | None = None
    routed_lr_scale: TuneAxis | None = None
    max_extensions: int = Field(2, ge=0)

    def axes(self) -> dict[str, TuneAxis]:
        return {name: getattr(self, name) for name in TUNE_AXES if getattr(self, name)}


class Tracking(BaseModel):
    """Where a sweep's curves go besides its own files, through Ray Tune's logger callbacks:
    each trial named by its run id, with its N, D, C and trunk as config. TensorBoard event
    files land in each trial's folder under results/<sweep>/ray/ (`tensorboard --logdir`);
    W&B and MLflow are imported only when asked for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tensorboard: bool = True
    wandb: dict[str, Any] | None = None  # WandbLoggerCallback's arguments, e.g. {project: x}
    mlflow: dict[str, Any] | None = None  # MLflowLoggerCallback's, e.g. {experiment_name: x}


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME_CHARS)
    budgets: list[float] = Field(min_length=1)
    family: dict[str, Any] = Field(default_factory=dict)  # models.family shape rules
    sizes: Sizes
    recipe: Recipe = Field(default_factory=lambda: resolve_recipe("tiny-cpu"))
    batch_tokens_per_budget: list[int] | None = None  # a batch-size rule: one per budget
    seeds: list[int] = Field(default_factory=lambda: [0])
    data: DataSpec = Field(default_factory=DataSpec)
    resources: Resources = Field(default_factory=Resources)
    max_failures: int = Field(2, ge=0)
    min_steps: int = Field(100, ge=1)
    tokens_per_param: tuple[float, float] = (1.0, 10_000.0)  # the window a run must fall in
    # warn about runs that read their training data more often than this (passes)
    max_epochs: float = Field(MUENNIGHOFF_FREE_EPOCHS, gt=0)
    bracket: Bracket = Field(default_factory=Bracket)
    # one WSD trunk per (size, seed, batch) and a cooldown branch per budget (sweeps/plan.py)
    branching: bool = False
    tracking: Tracking = Field(default_factory=Tracking)
    # MoE design variants swept over the same plan (models/variants.py); the first is the
    # reference whose fit is the headline
    variants: list[Variant] = Field(default_factory=list)
    tune: Tune | None = None
    device: str = "auto"

    @field_validator("recipe", mode="before")
    @classmethod
    def _recipe(cls, value: Any) -> Recipe:
        return resolve_recipe(value)

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, value: list[float]) -> list[float]:
        _in_range(value, "budgets (FLOPs)", MAX_BUDGET_FLOPS)
        return sorted(value)

    @field_validator("family")
    @classmethod
    def _family(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - _SHAPE_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown shape rule '{unknown[0]}' (known: {', '.join(sorted(_SHAPE_FIELDS))})"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        if self.sizes.per_budget is not None and len(self.sizes.per_budget) != len(self.budgets):
            raise ValueError(
                f"sizes.per_budget has {len(self.sizes.per_budget)} lists for {len(self.budgets)} budgets"
            )
        if self.sizes.added is not None and len(self.sizes.added) != len(self.budgets):
            raise ValueError(
                f"sizes.added has {len(self.sizes.added)} lists for {len(self.budgets)} budgets"
            )
        if self.batch_tokens_per_budget is not None:
            if len(self.batch_tokens_per_budget) != len(self.budgets):
                raise ValueError("batch_tokens_per_budget needs one value per budget")
            for tokens in self.batch_tokens_per_budget:
                if tokens % self.recipe.seq_len:
                    raise ValueError(
                        f"batch_tokens_per_budget: {tokens} is not a multiple of seq_len {self.recipe.seq_len}"
                    )
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variants: two variants share a name")
        if self.tune is not None:
            if not self.tune.axes():
                raise ValueError("tune: give at least one of " + ", ".join(TUNE_AXES))
            if self.tune.batch_tokens is not None:
                if self.batch_tokens_per_budget is not None:
                    raise ValueError(
                        "tune.batch_tokens and batch_tokens_per_budget both set the batch"
                    )
                for tokens in self.tune.batch_tokens.grid(self.recipe.batch_tokens):
                    if tokens != int(tokens) or int(tokens) % self.recipe.seq_len:
                        raise ValueError(
                            f"tune.batch_tokens: {tokens:g} is not a multiple of seq_len {self.recipe.seq_len}"
                        )
        if self.branching and self.recipe.branchable():
            raise ValueError(self.recipe.branchable())
        low, high = self.tokens_per_param
        if not 0 < low < high:
            raise ValueError("tokens_per_param must be [low, high] with 0 < low < high")
        return self

    @property
    def shape_rules(self) -> ShapeRules:
        rules = {
            "max_seq_len": max(self.recipe.seq_len, 8),
            "vocab_size": self.data.vocab_size,
            **self.family,
        }
        return ShapeRules(**rules)

    def batch_tokens(self, budget_index: int) -> int:
        if self.batch_tokens_per_budget is None:
            return self.recipe.batch_tokens
        return self.batch_tokens_per_budget[budget_index]


def load_sweep_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML; problems are one-line UserErrors naming the key."""
    return validate(SweepSpec, load_yaml(path), source=str(path))
