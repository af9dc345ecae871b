"""`family`: the shape rule that turns a target activated size into a config of one family.

A sweep fixes the family (expert count, top-k, shared experts, GQA ratio, CLA, vocabulary)
and asks for sizes; `family` searches widths and depths near the family's aspect ratio and
returns the shape whose exact `n_active` is closest to the target.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from moescale.errors import UserError
from moescale.models.accounting import count
from moescale.models.config import MoEConfig, Routing

TOLERANCE = 0.10  # |n_active / target - 1| the chosen shape must reach
HIDDEN_SCALES = (0.8, 0.9, 1.0, 1.12, 1.25)  # expert widths tried around the family ratio


@dataclass(frozen=True)
class ShapeRules:
    """How a family grows. Defaults follow Hunyuan-Large's proportions (Table 1 of the report):
    d_model/n_layers = 100, head_dim 80→64 here, 10 query heads per K/V head, CLA 2, expert
    hidden 2.86 × d_model, 1 shared + 16 routed experts, top-1."""

    aspect: float = 64.0  # target d_model / n_layers
    n_layers: int | None = None  # fix the depth instead of following `aspect`
    min_layers: int = 2
    head_dim: int = 64  # target; tiny widths use one head of width d_model
    width_multiple: int | None = None  # d_model on multiples of this (e.g. 64 for GPU kernels)
    gqa_ratio: int = 10  # query heads per K/V head (at least 1 K/V head)
    cla_share: int = 2
    expert_hidden_ratio: float = 18304 / 6400
    n_experts: int = 16
    top_k: int = 1
    n_shared_experts: int = 1
    routing: Routing = "dropless"
    capacity_factor: float | None = None
    qk_norm: bool = True
    vocab_size: int = 256
    max_seq_len: int = 2048
    tie_embeddings: bool = True
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 1e-3

    def __post_init__(self) -> None:
        if self.n_layers is not None and self.n_layers % self.cla_share:
            raise UserError(
                f"family: n_layers ({self.n_layers}) must be a multiple of cla_share ({self.cla_share})"
            )
        if self.cla_share < 1 or self.n_experts < 0 or self.head_dim < 2:
            raise UserError("family: cla_share must be >= 1, n_experts >= 0 and head_dim >= 2")


def _width_step(d_model: int) -> int:
    """Width granularity: fine for tiny models, multiples of 64 for large ones."""
    if d_model < 64:
        return 2
    return 4 if d_model < 256 else 8 if d_model < 512 else 32 if d_model < 2048 else 64


def _largest_divisor_at_most(n: int, limit: float) -> int:
    """The largest divisor of n that is at most `limit` (1 where `limit` < 1): counted down
    from the limit, which is small (a head count), not up from 1 to n."""
    for k in range(min(n, max(1, math.floor(limit))), 1, -1):
        if n % k == 0:
            return k
    return 1


@functools.lru_cache(maxsize=2**16)  # a sweep's plan asks for the same shapes once per run
def shape(d_model: int, n_layers: int, rules: ShapeRules, hidden_scale: float = 1.0) -> MoEConfig:
    """The family's config at one width and depth (expert hidden scaled by `hidden_scale`)."""
    n_heads = _largest_divisor_at_most(d_model, d_model / rules.head_dim)
    head_dim = d_model // n_heads
    if head_dim % 2:  # RoPE needs an even head width
        n_heads = _largest_divisor_at_most(d_model // 2, d_model / rules.head_dim)
        head_dim = d_model // n_heads
    n_kv_heads = _largest_divisor_at_most(n_heads, n_heads / rules.gqa_ratio)
    multiple = 8 if d_model >= 64 else 2
    expert_hidden = max(
        multiple, multiple * round(hidden_scale * rules.expert_hidden_ratio * d_model / multiple)
    )
    return MoEConfig(
        vocab_size=rules.vocab_size,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        cla_share=rules.cla_share,
        qk_norm=rules.qk_norm,
        max_seq_len=rules.max_seq_len,
        n_shared_experts=rules.n_shared_experts,
        n_experts=rules.n_experts,
        top_k=rules.top_k,
        expert_hidden=expert_hidden,
        routing=rules.routing,
        capacity_factor=rules.capacity_factor,
        aux_loss_coef=rules.aux_loss_coef,
        z_loss_coef=rules.z_loss_coef,
        tie_embeddings=rules.tie_embeddings,
    )


@functools.lru_cache(maxsize=2**16)
def _n_active(config: MoEConfig) -> int:
    return count(config, 1).n_active


def _depths(d_model: int, rules: ShapeRules) -> list[int]:
    if rules.n_layers is not None:
        return [rules.n_layers]
    step = rules.cla_share
    ideal = d_model / rules.aspect
    low = max(rules.min_layers, step * math.floor(ideal / 2 / step))
    high = max(low, step * math.ceil(2 * ideal / step))
    return [n for n in range(low, high + 1, step) if n >= rules.min_layers]


def family(
    n_active_target: float,
    rules: ShapeRules | None = None,
    *,
    variant: Callable[[MoEConfig], MoEConfig] | None = None,
    **shape_rules,
) -> MoEConfig:
    """The family config whose `n_active` is nearest `n_active_target`, within ±10%.
    With `variant` (e.g. an MoE design change, models/variants.py), every candidate shape is
    rewritten by it before it is counted, so the variant's own N_active is the one on target.

    Among widths (on a grid that coarsens with size), depths within a factor 2 of the
    aspect ratio and expert widths within 20% of the family's ratio, it minimises
    |log(n_active/target)| + 0.05·(|log(aspect/target aspect)| + |log(hidden scale)|),
    so the size is hit first and the proportions kept where the size allows.
    """
    rules = rules or ShapeRules(**shape_rules)
    if n_active_target <= 0:
        raise UserError(f"family: n_active target must be > 0, got {n_active_target}")
    best: tuple[float, MoEConfig, int] | None = None
    refused = ""  # why the variant refused a shape, said when it refused every one
    d_model = rules.width_multiple or 2
    while True:
        depths = _depths(d_model, rules)
        largest = _n_active(shape(d_model, depths[-1], rules, HIDDEN_SCALES[-1]))
        smallest = _n_active(shape(d_model, depths[0], rules, HIDDEN_SCALES[0]))
        if smallest > 1.5 * n_active_target:
            break
        if largest < n_active_target / 1.5:  # every shape at this width is far too small
            d_model += rules.width_multiple or _width_step(d_model)
            continue
        for n_layers, hidden_scale in itertools.product(depths, HIDDEN_SCALES):
            config = shape(d_model, n_layers, rules, hidden_scale)
            if variant is not None:
                try:
                    config = variant(config)
                except UserError as err:
                    refused = str(err)
                    continue  # e.g. an expert too narrow to cut G-fine at this width
            n_active = _n_active(config)
            miss = abs(math.log(n_active / n_active_target))
            skew = abs(math.log(d_model / n_layers / rules.aspect)) if rules.n_layers is None else 0
            score = miss + 0.05 * (skew + abs(math.log(hidden_scale)))
            if best is None or score < best[0]:
                best = (score, config, n_active)
        d_model += rules.width_multiple or _width_step(d_model)
    if best is None:
        raise UserError(
            f"family: no shape of this family has n_active near {n_active_target:.3g}"
            + (f" ({refused})" if refused else "")
        )
    _, config, n_active = best
    if abs(n_active / n_active_target - 1) > TOLERANCE:
        raise UserError(
            f"family: no shape reaches n_active {n_active_target:.3g} within "
            f"{TOLERANCE:.0%} (nearest {n_active:.3g}); change the shape rules"
        )
    return config
