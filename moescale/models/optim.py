"""The optimizer: AdamW in parameter groups with Hunyuan-Large's expert-specific learning
rate, and its batch-size rule for the optimal Adam learning rate."""

from __future__ import annotations

import math

import torch
from torch import nn

from moescale.models.experts import RoutedExperts

# Hunyuan-Large scales the routed experts' learning rate by about 0.31 for 1-of-16 routing
# (arXiv 2411.02265, section 2.3.2): each routed expert sees ~1/16 of the tokens per step.
HUNYUAN_ROUTED_LR_SCALE = 0.31


def param_groups(
    model: nn.Module, lr: float, routed_lr_scale: float = 1.0, weight_decay: float = 0.1
) -> list[dict]:
    """AdamW groups: routed-expert weights at lr × routed_lr_scale, other matrices at lr,
    and vectors (norm gains) at lr without weight decay. Every parameter lands in exactly one."""
    routed = {
        id(p) for m in model.modules() if isinstance(m, RoutedExperts) for p in m.parameters()
    }
    groups = {
        "routed_experts": {"params": [], "lr": lr * routed_lr_scale, "weight_decay": weight_decay},
        "matrices": {"params": [], "lr": lr, "weight_decay": weight_decay},
        "no_decay": {"params": [], "lr": lr, "weight_decay": 0.0},
    }
    for param in model.parameters():
        if not param.requires_grad:
            continue
        name = (
            "routed_experts"
            if id(param) in routed
            else "matrices"
            if param.dim() >= 2
            else "no_decay"
        )
        groups[name]["params"].append(param)
    return [{"name": name, **group} for name, group in groups.items() if group["params"]]


def _undecorated(method):
    """The function torch's decorator wrapped (itself where this torch does not wrap it)."""
    return getattr(method, "__wrapped__", method)


class AdamW(torch.optim.AdamW):
    """torch's AdamW, minus its import of torch._dynamo (1.9 s wall, in every training process
    here): torch wraps `step` to place a graph break for torch.compile, and add_param_group,
    zero_grad and (load_)state_dict to keep compile from tracing them, each wrapper importing
    torch._dynamo on its first call. Nothing compiles the optimizer (a recipe's `compile`
    compiles the model's forward only), so these are torch's own methods unwrapped: the same
    update and the same state dict (tests/test_training.py compares it bit for bit)."""

    add_param_group = _undecorated(torch.optim.Optimizer.add_param_group)
    zero_grad = _undecorated(torch.optim.Optimizer.zero_grad)
    state_dict = _undecorated(torch.optim.Optimizer.state_dict)
    load_state_dict = _undecorated(torch.optim.Optimizer.load_state_dict)
    # the wrapper also ran the update without autograd, as torch does for an optimizer that is
    # not `differentiable` (moescale never makes one that is)
    step = torch.no_grad()(_undecorated(torch.optim.AdamW.step))


def optimal_lr_at_batch(batch: float, batch_noise: float, lr_max: float) -> float:
    """Optimal Adam learning rate at batch size B (Hunyuan-Large report, eq. after Table 3,
    after McCandlish et al. 2018): eps_opt(B) = 2·eps_max / (sqrt(B_noise/B) + sqrt(B/B_noise)).
    It peaks at eps_max when B = B_noise; the ratio of two batch sizes' optima is the rule."""
    return 2.0 * lr_max / (math.sqrt(batch_noise / batch) + math.sqrt(batch / batch_noise))
