"""Recipes: named, frozen sets of training defaults, so a sweep states its recipe once."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from moescale.training.schedules import CooldownShape, ScheduleKind, lr_multiplier

# Fields added after run ids were first defined: hashed only when set away from their
# default, so that every run planned before they existed keeps its id (and is not retrained).
LATER_FIELDS = (
    "warmup_steps",
    "warmup_tokens",
    "cooldown_tokens",
    "cooldown_shape",
    "lr_law",
    "noise_scale",
    "batch_rule",
    "batch_law",
)


class Recipe(BaseModel):
    """How a run trains: optimiser, learning-rate rule and schedule, batch, logging cadence."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    lr: float = Field(3e-3, gt=0)  # the peak learning rate (at `lr_base_width` for the width rule)
    # law: the peak LR of each run from a fitted η_opt(C) (`lr_law`: a fit.json), at the run's
    # budget; a sweep resolves it to a fixed LR per run when it plans
    lr_rule: Literal["fixed", "width", "law"] = "fixed"
    lr_law: str | None = None
    lr_base_width: int = Field(128, ge=1)  # width rule: lr × lr_base_width / d_model (μP-style)
    routed_lr_scale: float = Field(1.0, gt=0)  # Hunyuan-Large: ~0.31 for 1-of-16 routing
    schedule: ScheduleKind = "cosine"
    warmup_frac: float = Field(0.05, ge=0, lt=1)  # of each run's steps
    # absolute warmup, the same for runs of every length (what WSD branches of a trunk need)
    warmup_steps: int | None = Field(None, ge=0)
    warmup_tokens: int | None = Field(None, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    # wsd: the last share of a run's steps (`decay_frac` in sweep.yaml files before 0.2)
    cooldown_frac: float = Field(
        0.2, gt=0, le=1, validation_alias=AliasChoices("cooldown_frac", "decay_frac")
    )
    cooldown_tokens: int | None = Field(None, gt=0)  # wsd: or a fixed cooldown length
    cooldown_shape: CooldownShape = "linear"
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, ge=0)  # 0 = no clipping
    seq_len: int = Field(256, ge=2)
    batch_tokens: int = Field(4096, ge=2)  # tokens per optimizer step
    micro_batch_tokens: int | None = None  # gradient accumulation: tokens per forward/backward
    # critical: each run's batch B_crit(L) at its expected loss, from a fit.json (`batch_law`)
    # with a critical-batch and a parametric law; a sweep resolves it to a fixed batch per run
    batch_rule: Literal["fixed", "critical"] = "fixed"
    batch_law: str | None = None
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    eval_every: int = Field(100, ge=1)  # steps
    eval_tokens: int = Field(32768, ge=2)
    log_every: int = Field(10, ge=1)  # steps
    checkpoint_every: int = Field(500, ge=1)  # steps (also every `checkpoint_minutes`)
    checkpoint_minutes: float = Field(10.0, gt=0)
    diverge_factor: float = Field(1.5, gt=1)  # a train loss above factor × its first value diverges
    # measure the gradient noise scale (training/noise_scale.py): each rank's sequences are
    # taken even-indexed first, and a step of one micro-batch becomes two half-size ones
    noise_scale: bool = True

    @model_validator(mode="after")
    def _whole_sequences(self) -> Recipe:
        if self.batch_tokens % self.seq_len:
            raise ValueError(
                f"batch_tokens ({self.batch_tokens}) must be a multiple of seq_len ({self.seq_len})"
            )
        if self.warmup_steps is not None and self.warmup_tokens is not None:
            raise ValueError("give warmup_steps or warmup_tokens, not both")
        if (self.lr_rule == "law") != (self.lr_law is not None):
            raise ValueError("lr_rule: law and lr_law (a fit.json with an LR law) go together")
        if (self.batch_rule == "critical") != (self.batch_law is not None):
            raise ValueError(
                "batch_rule: critical and batch_law (a fit.json with a critical batch) go together"
            )
        micro = self.micro_batch_tokens or self.batch_tokens
        if micro % self.seq_len or self.batch_tokens % micro:
            raise ValueError(
                "micro_batch_tokens must be a multiple of seq_len and divide batch_tokens"
            )
        return self

    @property
    def batch_size(self) -> int:
        """Sequences per optimizer step."""
        return self.batch_tokens // self.seq_len

    @property
    def micro_batch_size(self) -> int:
        return (self.micro_batch_tokens or self.batch_tokens) // self.seq_len

    def warmup_steps_of(self, total_steps: int | None) -> int:
        """Warmup steps of a run of `total_steps` (None: a WSD trunk, whose warmup must be
        absolute)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        if self.warmup_tokens is not None:
            return round(self.warmup_tokens / self.batch_tokens)
        if total_steps is None:
            return 0 if self.warmup_frac == 0 else -1  # refused by `branchable`
        return round(self.warmup_frac * total_steps)

    def cooldown_steps_of(self, total_steps: int) -> int:
        """WSD: the steps of a run of `total_steps` spent cooling down (at least one)."""
        if self.cooldown_tokens is not None:
            steps = round(self.cooldown_tokens / self.batch_tokens)
        else:
            steps = round(self.cooldown_frac * total_steps)
        return min(total_steps, max(1, steps))

    def lr_multiplier(self, step: int, total_steps: int | None) -> float:
        """The multiplier of the peak LR at `step` of a run of `total_steps` (None: a trunk)."""
        return lr_multiplier(
            self.schedule,
            step,
            total_steps,
            self.warmup_steps_of(total_steps),
            self.min_lr_ratio,
            cooldown_steps=0 if total_steps is None else self.cooldown_steps_of(total_steps),
            cooldown_shape=self.cooldown_shape,
        )

    def branchable(self) -> str:
        """Why runs of this recipe cannot be branches of a shared trunk ('' when they can)."""
        if self.schedule != "wsd":
            return f"branching needs recipe.schedule: wsd (not {self.schedule})"
        if self.warmup_steps is None and self.warmup_tokens is None and self.warmup_frac > 0:
            return (
                "branching needs a warmup that all branches share: set recipe.warmup_steps or "
                "recipe.warmup_tokens (warmup_frac is a share of each run)"
            )
        return ""

    def identity(self) -> dict:
        """What a run id hashes of the recipe (see LATER_FIELDS)."""
        data = self.model_dump(mode="json")
        defaults = type(self)()
        for name in LATER_FIELDS:
            if data[name] == getattr(defaults, name):
                del data[name]
        data["decay_frac"] = data.pop("cooldown_frac")  # its name when run ids were defined
        return data

    def peak_lr(self, d_model: int) -> float:
        if self.lr_rule == "law":
            raise ValueError("lr_rule: law is resolved to a fixed LR per run when a sweep plans")
        if self.lr_rule == "width":
            return self.lr * self.lr_base_width / d_model
        return self.lr


RECIPES: dict[str, Recipe] = {
    # Small CPU models on bytes: short sequences, a high constant-then-cosine rate.
    "tiny-cpu": Recipe(
        name="tiny-cpu",
        lr=1e-2,
        seq_len=64,
        batch_tokens=2048,
        schedule="cosine",
        warmup_frac=0.05,
        eval_every=100,
        eval_tokens=16384,
        log_every=10,
    ),
    # Hunyuan-Large's shape of training: three-phase schedule, expert-specific learning rate.
    "hunyuan": Recipe(
        name="hunyuan",
        lr=3e-4,
        routed_lr_scale=0.31,
        schedule="hunyuan",
        seq_len=2048,
        batch_tokens=2048 * 256,
        precision="bf16",
        eval_every=500,
        eval_tokens=2**20,
    ),
}


def resolve_recipe(value: str | dict | Recipe) -> Recipe:
    """A recipe by name, by mapping (optionally `base: NAME` plus overrides), or as given."""
    if isinstance(value, Recipe):
        return value
    if isinstance(value, str):
        if value not in RECIPES:
            raise ValueError(f"unknown recipe '{value}' (known: {', '.join(RECIPES)})")
        return RECIPES[value]
    if isinstance(value, dict) and "base" in value:
        base = value["base"]
        if base not in RECIPES:
            raise ValueError(f"unknown recipe '{base}' (known: {', '.join(RECIPES)})")
        overrides = {k: v for k, v in value.items() if k != "base"}
        return Recipe.model_validate({**RECIPES[base].model_dump(), "name": base, **overrides})
    return Recipe.model_validate(value)
