"""Routed SwiGLU experts: tokens sorted by expert once, then one grouped matmul per weight.

`torch._grouped_mm` runs every expert's rows in one call where this torch has it; the
plain loop over experts is kept as the reference the tests compare it with. Nothing is
padded to a capacity and no expert sees a token it was not assigned.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moescale.models.routing import Assignment

Dispatch = Literal["auto", "grouped", "loop"]


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous (grouped_mm needs it)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous()


def grouped_mm_available(x: Tensor, weight: Tensor | None = None) -> bool:
    """True where `torch._grouped_mm` exists and supports this device, dtype and shape (its
    row strides must be multiples of 16 bytes: widths of multiples of 4 in fp32, 8 in bf16)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    widths = [x.shape[-1]] + ([] if weight is None else [weight.shape[-1]])
    if any(w * x.element_size() % 16 for w in widths):
        return False
    if x.device.type == "cpu":
        return x.dtype in (torch.float32, torch.bfloat16)
    if x.device.type == "cuda":
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device)[0] >= 9
    return False


def expert_matmul(x: Tensor, weight: Tensor, counts: Tensor, dispatch: Dispatch) -> Tensor:
    """Rows of `x` sorted by expert, `counts[e]` rows for expert e, times `weight[e]` [E, K, N]."""
    weight = weight.to(x.dtype)  # autocast does not cover grouped_mm
    if dispatch == "grouped" or (dispatch == "auto" and grouped_mm_available(x, weight)):
        offsets = torch.cumsum(counts, 0).to(torch.int32)
        return _ContiguousGrad.apply(torch._grouped_mm(x, weight, offs=offsets))
    pieces = torch.split(x, counts.tolist())
    return torch.cat([rows @ weight[e] for e, rows in enumerate(pieces)])


class RoutedExperts(nn.Module):
    """`n_experts` SwiGLU experts stored as stacked weights [E, d, 2h] and [E, h, d]."""

    def __init__(self, n_experts: int, d_model: int, hidden: int, dispatch: Dispatch = "auto"):
        super().__init__()
        self.n_experts = n_experts
        self.dispatch: Dispatch = dispatch
        self.w_gate_up = nn.Parameter(torch.empty(n_experts, d_model, 2 * hidden))
        self.w_down = nn.Parameter(torch.empty(n_experts, hidden, d_model))

    def forward(self, x: Tensor, assignment: Assignment) -> Tensor:
        """x [T, d] → [T, d]: Σ over each token's assignments of gate × expert(x)."""
        order = torch.argsort(assignment.expert, stable=True)
        token = assignment.token[order]
        counts = torch.bincount(assignment.expert, minlength=self.n_experts)
        rows = x[token]
        if torch.is_autocast_enabled(x.device.type):
            # autocast does not reach grouped_mm: the experts run at its precision (bf16 on
            # GPUs, where grouped_mm needs it) rather than at the fp32 of the norm before them
            rows = rows.to(torch.get_autocast_dtype(x.device.type))
        gate, up = expert_matmul(rows, self.w_gate_up, counts, self.dispatch).chunk(2, dim=-1)
        out = expert_matmul(F.silu(gate) * up, self.w_down, counts, self.dispatch)
        out = out * assignment.weight[order].unsqueeze(-1).to(out.dtype)
        return torch.zeros_like(x).index_add_(0, token, out.to(x.dtype))
