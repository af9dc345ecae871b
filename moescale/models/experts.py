"""Routed SwiGLU experts: tokens sorted by expert once, then one grouped matmul per weight.

`torch._grouped_mm` runs every expert's rows in one call where this torch has it for the
shape; elsewhere a loop of one matmul per expert writes into shared outputs, and the tests
compare the two. Nothing is padded to a capacity and no expert sees a token it was not assigned.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from moescale.models.layers import swiglu_activation
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
        # torch.compile's shape propagation (its meta kernel) takes bf16 only, though the CPU
        # kernel runs fp32 too: compiled fp32 runs take the loop
        fp32_ok = not torch.compiler.is_compiling()
        return x.dtype == torch.bfloat16 or (x.dtype == torch.float32 and fp32_ok)
    if x.device.type == "cuda":
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device)[0] >= 9
    return False


class _ExpertLoop(torch.autograd.Function):
    """Rows of x sorted by expert times weight [E, K, N]: one matmul per expert, each written
    into its rows of one output, and in the backward into its rows of x's gradient and its
    slice of the weight's. Autograd through `weight[e]` would zero-fill a whole [E, K, N]
    gradient for every expert (64 experts: 12× slower than dense), and a concatenation would
    copy the output once more. On the CPU it runs within 3% of torch's grouped_mm."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, counts: list[int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.counts = counts
        out = x.new_empty(x.shape[0], weight.shape[-1])
        with torch.autocast(x.device.type, enabled=False):  # x and weight share a dtype
            for e, rows in _expert_rows(counts):
                torch.mm(x[rows], weight[e], out=out[rows])
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight = ctx.saved_tensors
        need_x, need_weight, _ = ctx.needs_input_grad
        grad_x = torch.empty_like(x) if need_x else None
        grad_weight = torch.zeros_like(weight) if need_weight else None
        with torch.autocast(x.device.type, enabled=False):
            for e, rows in _expert_rows(ctx.counts):
                if grad_x is not None:
                    torch.mm(grad[rows], weight[e].t(), out=grad_x[rows])
                if grad_weight is not None:
                    torch.mm(x[rows].t(), grad[rows], out=grad_weight[e])
        return grad_x, grad_weight, None


def _expert_rows(counts: list[int]):
    """(expert, its slice of the sorted rows) for every expert with at least one row."""
    start = 0
    for e, count in enumerate(counts):
        if count:
            yield e, slice(start, start + count)
        start += count


def _sum_rows(rows: Tensor, slots: Tensor) -> Tensor:
    """[T, d]: row t the sum of rows[slots[0, t]], rows[slots[1, t]], … added in that order."""
    total = rows.index_select(0, slots[0])
    for slot in slots[1:]:
        total += rows.index_select(0, slot)
    return total


class _Dispatch(torch.autograd.Function):
    """Tokens [T, d] → their assignments' rows in expert order (a gather), for routing that
    keeps all T·k assignments. The backward sums each token's k gradients by gathers in the
    order index_put's accumulation adds them (ascending sorted position), so the numbers are
    those of autograd's serial CPU scatter, without it (with `_Combine`, 2–5% of an MoE layer's
    time on the CPU); on GPUs, where the scatter adds atomically, they are also deterministic."""

    @staticmethod
    def forward(ctx, x: Tensor, token: Tensor, slots: Tensor) -> Tensor:
        ctx.save_for_backward(slots)
        return x.index_select(0, token)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (slots,) = ctx.saved_tensors
        return _sum_rows(grad, slots), None, None


class _Combine(torch.autograd.Function):
    """The mirror of `_Dispatch`: expert-ordered rows → each token's sum of its k rows (what
    zeros().index_add_ gives on the CPU, bit for bit), its backward a gather."""

    @staticmethod
    def forward(ctx, rows: Tensor, token: Tensor, slots: Tensor) -> Tensor:
        ctx.save_for_backward(token)
        return _sum_rows(rows, slots)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (token,) = ctx.saved_tensors
        return grad.index_select(0, token), None, None


def expert_matmul(x: Tensor, weight: Tensor, counts: Tensor, dispatch: Dispatch) -> Tensor:
    """Rows of `x` sorted by expert, `counts[e]` rows for expert e, times `weight[e]` [E, K, N].
    `auto` takes torch's grouped_mm where it serves the shape, else the loop."""
    weight = weight.to(x.dtype)  # autocast does not cover grouped_mm
    if dispatch == "grouped" or (dispatch == "auto" and grouped_mm_available(x, weight)):
        offsets = torch.cumsum(counts, 0).to(torch.int32)
        return _ContiguousGrad.apply(torch._grouped_mm(x, weight, offs=offsets))
    return _ExpertLoop.apply(x, weight, counts.tolist())


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
        if assignment.complete:
            # every token's k assignments kept (choice-major): each token's sorted positions,
            # ascending, say where its rows go and in which order they are summed
            position = torch.empty_like(order)
            position[order] = torch.arange(len(order), device=order.device)
            slots = position.view(-1, x.shape[0]).sort(dim=0).values
            rows = _Dispatch.apply(x, token, slots)
        else:
            slots = None
            rows = x[token]
        if torch.is_autocast_enabled(x.device.type):
            # autocast does not reach grouped_mm: the experts run at its precision (bf16 on
            # GPUs, where grouped_mm needs it) rather than at the fp32 of the norm before them
            rows = rows.to(torch.get_autocast_dtype(x.device.type))
        gate_up = expert_matmul(rows, self.w_gate_up, counts, self.dispatch)
        out = expert_matmul(swiglu_activation(gate_up), self.w_down, counts, self.dispatch)
        out = out * assignment.weight[order].unsqueeze(-1).to(out.dtype)
        if slots is not None:
            return _Combine.apply(out.to(x.dtype), token, slots)
        return torch.zeros_like(x).index_add_(0, token, out.to(x.dtype))
