"""MoE design variants of one base shape at equal activated compute: how many experts, how
fine-grained, or none (dense). A variant rewrites only the feed-forward of a config the
family chose, so every variant of a size keeps its attention, depth and width, and its
activated parameters and FLOPs per token stay those of the base (to the rounding of an
expert's width).

- `experts: E` — E routed experts, top-k and expert width unchanged (N_total grows with E).
- `granularity: G` — Krajewski et al. 2024: each expert's width ÷ G (rounded), top-k × G and the
  number of experts × G, so the activated FLOPs and the total parameters stay put while the
  router picks among G× more, finer experts.
- `dense: true` — no routed experts; the shared FFN widens by top-k × expert width, the
  FLOPs the routed experts spent on each token.

Or the recipe, at the same shape: `score_func`, `route_norm`, `balance` (sigmoid routing with
auxiliary-loss-free balancing, DeepSeek-V3 §2.1.2) and `n_dense_layers` (dense first layers,
DeepSeekMoE). A variant changes the shape or the recipe, never both, so each compute
multiplier says what one change buys: a recipe variant is measured against the earlier
variant of its shape (fitting/studies/moe_design.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from moescale.errors import UserError
from moescale.models.config import Balance, MoEConfig, ScoreFunc

RECIPE_FIELDS = ("score_func", "route_norm", "balance", "n_dense_layers")


class Variant(BaseModel):
    """One named design change, applied to every size of a sweep."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dense: bool = False
    experts: int | None = Field(None, ge=1)
    top_k: int | None = Field(None, ge=1)
    granularity: int = Field(1, ge=1)
    # the recipe (None: the family's own)
    score_func: ScoreFunc | None = None
    route_norm: bool | None = None
    balance: Balance | None = None
    n_dense_layers: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_meaning(self) -> Variant:
        if self.dense and (self.experts or self.top_k or self.granularity > 1):
            raise ValueError(f"variant '{self.name}': dense takes no experts, top_k or granularity")
        recipe = ", ".join(self.recipe)
        if recipe and self.dense:
            raise ValueError(f"variant '{self.name}': a dense variant has no router for {recipe}")
        if recipe and (self.experts or self.top_k or self.granularity > 1):
            raise ValueError(
                f"variant '{self.name}': changes the shape and the recipe ({recipe}) at once; "
                "make them two variants, so each multiplier says what one change buys"
            )
        return self

    @property
    def recipe(self) -> dict[str, Any]:
        """The recipe fields this variant sets ({}: the family's recipe)."""
        return {k: getattr(self, k) for k in RECIPE_FIELDS if getattr(self, k) is not None}


def apply_variant(config: MoEConfig, variant: Variant) -> MoEConfig:
    """`config` with its feed-forward rewritten as `variant` says."""
    if not config.is_moe:
        raise UserError(f"variant '{variant.name}': the base shape has no routed experts to vary")
    if variant.recipe:  # MoEConfig checks the recipe as it checks any config's
        return config.replace(**variant.recipe)
    if variant.dense:
        shared = config.n_shared_experts * config.shared_hidden
        return config.replace(
            n_experts=0,
            top_k=1,
            n_shared_experts=1,
            shared_hidden=shared + config.top_k * config.expert_hidden,
        )
    experts = variant.experts or config.n_experts
    top_k = variant.top_k or config.top_k
    g = variant.granularity
    width = round(config.expert_hidden / g)  # rounded: activated FLOPs stay within a unit
    if width < 2:
        raise UserError(
            f"variant '{variant.name}': expert width {config.expert_hidden} does not split into "
            f"{g} experts"
        )
    if top_k * g > experts * g:
        raise UserError(f"variant '{variant.name}': top_k {top_k} exceeds its {experts} experts")
    # the shared experts keep their own width (the config stores it apart from the routed)
    return config.replace(
        n_experts=experts * g,
        top_k=top_k * g,
        expert_hidden=width,
        shared_hidden=config.shared_hidden,
    )
