"""Top-k routing with capacity: dropless, 'drop', and Hunyuan-Large's 'recycle' routing;
softmax or sigmoid scores; an optional selection bias (auxiliary-loss-free balancing).

Pure tensor functions on router logits, so the rules can be tested on hand-made inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Assignment:
    """The (token, expert, gate weight) triples that will be computed, plus routing health."""

    token: Tensor  # [A] int64: index of the token in the flattened batch
    expert: Tensor  # [A] int64: routed expert that processes it
    weight: Tensor  # [A] fp32: gate weight applied to that expert's output
    expert_fraction: Tensor  # [E]: share of the T·k assignments each expert processed
    dropped_frac: Tensor  # scalar: share of assignments dropped over capacity
    recycled_frac: Tensor  # scalar: share of assignments moved to another expert
    aux_loss: Tensor  # load-balance loss (Switch Transformer form), differentiable
    z_loss: Tensor  # router z-loss (ST-MoE), differentiable
    selected: Tensor  # [E]: the T·k top-k choices each expert got, before any capacity
    seq_aux_loss: Tensor | None  # sequence-wise balance loss (DeepSeek-V3 eq. 17-20), with seq_len
    complete: bool = False  # all T·k assignments, choice-major: token[j·T + t] = t (dropless)


def expert_capacity(n_tokens: int, top_k: int, n_experts: int, capacity_factor: float) -> int:
    """Slots per expert: capacity_factor × the balanced share of the n_tokens·top_k assignments."""
    return max(1, math.ceil(capacity_factor * n_tokens * top_k / n_experts))


def rank_within_expert(expert: Tensor, n_experts: int) -> Tensor:
    """For each assignment, how many earlier assignments (in the given order) went to its expert."""
    order = torch.argsort(expert, stable=True)
    counts = torch.bincount(expert, minlength=n_experts)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(expert)
    rank[order] = torch.arange(expert.numel(), device=expert.device) - starts[expert[order]]
    return rank


def _within_capacity(
    token: Tensor,
    expert: Tensor,
    weight: Tensor,
    probs: Tensor,
    top_k: int,
    routing: str,
    capacity_factor: float | None,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The assignments (choice-major) that fit each expert's capacity under 'drop' or
    'recycle' (see `route`), with the dropped and recycled shares of all assignments."""
    n_tokens, n_experts = probs.shape
    n_assign = n_tokens * top_k
    zero = probs.new_zeros((), dtype=torch.float32)
    recycled = zero
    if capacity_factor is None:
        raise ValueError(f"routing '{routing}' needs a capacity_factor")
    capacity = expert_capacity(n_tokens, top_k, n_experts, capacity_factor)
    keep = rank_within_expert(expert, n_experts) < capacity
    if routing == "recycle":
        room = capacity - torch.bincount(expert[keep], minlength=n_experts)
        overflow = torch.nonzero(~keep).flatten()
        free_slots = torch.repeat_interleave(torch.arange(n_experts, device=room.device), room)
        n_moved = min(overflow.numel(), free_slots.numel())
        if n_moved:
            pick = torch.randperm(free_slots.numel(), generator=generator)[:n_moved]
            moved = overflow[:n_moved]
            new_expert = free_slots[pick.to(free_slots.device)]
            expert = expert.clone()
            expert[moved] = new_expert
            weight = weight.clone()
            weight[moved] = probs[token[moved], new_expert]
            keep = keep.clone()
            keep[moved] = True
        recycled = zero + n_moved / n_assign
    elif routing != "drop":
        raise ValueError(f"unknown routing '{routing}'")
    dropped = zero + (n_assign - int(keep.sum())) / n_assign
    return token[keep], expert[keep], weight[keep], dropped, recycled


def route(
    logits: Tensor,
    top_k: int,
    routing: str = "dropless",
    capacity_factor: float | None = None,
    generator: torch.Generator | None = None,
    *,
    score_func: str = "softmax",
    route_norm: bool = False,
    bias: Tensor | None = None,
    seq_len: int | None = None,
) -> Assignment:
    """Assign each of T tokens to its top-k experts from fp32 router `logits` [T, E].

    Scores are the softmax or the sigmoid of the logits; a token's top-k experts are those of
    the highest scores plus `bias` [E] (auxiliary-loss-free balancing: the bias steers the
    choice only), and each is gated by its score — renormalised over the k to sum to 1 with
    `route_norm` (DeepSeek-V3 §2.1.2). With `seq_len` (the T tokens are sequences of that
    length, one after another) it also gives DeepSeek-V3's complementary sequence-wise
    balance loss (`sequence_balance_loss`).

    Priority for capacity is choice-major: every token's first choice before any second
    choice, and within a choice, earlier tokens first (GShard's order). 'drop' discards
    assignments over capacity (the token keeps its residual and shared-expert path).
    'recycle' instead moves each of them, in priority order, to a uniformly random free
    slot among the routed experts that still have room, so nothing is dropped while any
    capacity remains; the moved assignment is gated by the router's probability for its
    new expert, so the router still learns from it.
    """
    n_tokens, n_experts = logits.shape
    n_assign = n_tokens * top_k
    probs = (
        torch.softmax(logits.float(), dim=-1)
        if score_func == "softmax"
        else torch.sigmoid(logits.float())
    )
    if bias is None:
        top_w, top_e = torch.topk(probs, top_k, dim=-1)
    else:
        top_e = torch.topk(probs + bias.detach(), top_k, dim=-1).indices
        top_w = probs.gather(-1, top_e)
    if route_norm:
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
    expert = top_e.t().reshape(-1)  # choice-major priority order
    token = torch.arange(n_tokens, device=logits.device).repeat(top_k)
    weight = top_w.t().reshape(-1)

    # Switch Transformer load balance: E · Σ_e f_e · P_e, f from the router's own choices
    # (sigmoid scores normalised per token to a distribution for P, as DeepSeek-V3 does)
    selected = torch.bincount(expert, minlength=n_experts)
    chosen = selected.float() / n_assign
    shares = probs if score_func == "softmax" else probs / probs.sum(dim=-1, keepdim=True)
    aux_loss = n_experts * torch.sum(chosen * shares.mean(dim=0))
    z_loss = torch.logsumexp(logits.float(), dim=-1).square().mean()
    seq_aux_loss = sequence_balance_loss(probs, top_e, seq_len) if seq_len else None

    zero = logits.new_zeros((), dtype=torch.float32)
    dropped = recycled = zero
    if routing != "dropless":
        token, expert, weight, dropped, recycled = _within_capacity(
            token, expert, weight, probs, top_k, routing, capacity_factor, generator
        )

    expert_fraction = torch.bincount(expert, minlength=n_experts).float() / n_assign
    return Assignment(
        token=token,
        expert=expert,
        weight=weight,
        expert_fraction=expert_fraction,
        dropped_frac=dropped,
        recycled_frac=recycled,
        aux_loss=aux_loss,
        z_loss=z_loss,
        selected=selected,
        seq_aux_loss=seq_aux_loss,
        complete=routing == "dropless",
    )


def sequence_balance_loss(scores: Tensor, chosen: Tensor, seq_len: int) -> Tensor:
    """DeepSeek-V3's sequence-wise balance loss (arXiv 2412.19437, eq. 17-20), the mean over
    sequences of Σ_i f_i·P_i: f_i = E/(K·S) × the sequence's choices of expert i, P_i the mean
    over its S tokens of expert i's score normalised over the experts. `scores` [T, E] (softmax
    or sigmoid), `chosen` [T, K] the experts each token was sent to (the bias's selection,
    where there is one: the load the loss is to even out)."""
    n_tokens, n_experts = scores.shape
    top_k = chosen.shape[1]
    n_seq = n_tokens // seq_len
    shares = (scores / scores.sum(dim=-1, keepdim=True)).view(n_seq, seq_len, n_experts)
    counts = scores.new_zeros(n_seq, n_experts).scatter_add_(
        1, chosen.reshape(n_seq, seq_len * top_k), scores.new_ones(n_seq, seq_len * top_k)
    )
    f = counts * (n_experts / (top_k * seq_len))
    return (f * shares.mean(dim=1)).sum(dim=1).mean()


def router_logits(x: Tensor, weight: Tensor) -> Tensor:
    """Router logits in fp32 whatever the autocast state: routing decisions are precision-sensitive."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.linear(x.float(), weight.float())
