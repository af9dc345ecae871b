"""The transformer's parts: RMSNorm, RoPE, attention with GQA and CLA, SwiGLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moescale.models.config import MoEConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # the weight at the input's precision: a bf16 input (q and k under autocast) with an
        # fp32 weight falls back to torch's unfused path
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


def rope_tables(head_dim: int, max_seq_len: int, base: float) -> tuple[Tensor, Tensor]:
    """cos and sin [max_seq_len, head_dim/2] for rotary position embeddings (Su et al. 2021)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """(x1·cos − x2·sin, x1·sin + x2·cos) of x's two halves, written into one new tensor (no
    torch.cat: on the CPU a concatenation is a whole extra pass over q and k)."""
    x1, x2 = x.chunk(2, dim=-1)
    out = torch.empty_like(x)
    o1, o2 = out.chunk(2, dim=-1)
    torch.sub(torch.mul(x1, cos), x2 * sin, out=o1)
    torch.add(torch.mul(x1, sin), x2 * cos, out=o2)
    return out


class _Rope(torch.autograd.Function):
    """RoPE whose backward is the rotation by the opposite angle, the same products and sums
    autograd forms from the formula, so a run's numbers are those of the plain formula."""

    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, -sin), None, None


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two halves of each head of x [B, H, S, hd] by the position's angles (in
    fp32 whatever x's precision)."""
    cos, sin = cos[: x.shape[-2]], sin[: x.shape[-2]]
    return _Rope.apply(x.float(), cos, sin).to(x.dtype)


class _SwiGLUActivation(torch.autograd.Function):
    """silu(gate) · up of gate_up = [gate | up], whose backward writes both halves of the
    gradient in place: autograd's version concatenates them, one more pass over [T, 2h]."""

    @staticmethod
    def forward(ctx, gate_up: Tensor) -> Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        activated = F.silu(gate)
        ctx.save_for_backward(gate_up, activated)
        return activated * up

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        gate_up, activated = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        grad_gate_up = torch.empty_like(gate_up)
        grad_gate, grad_up = grad_gate_up.chunk(2, dim=-1)
        torch.mul(grad, activated, out=grad_up)
        torch.ops.aten.silu_backward(grad * up, gate, grad_input=grad_gate)
        return grad_gate_up


def swiglu_activation(gate_up: Tensor) -> Tensor:
    """[T, 2h] gate and up projections → [T, h]: silu(gate) · up (Shazeer 2020)."""
    return _SwiGLUActivation.apply(gate_up)


class Attention(nn.Module):
    """Causal self-attention. With GQA, n_kv_heads K/V heads serve n_heads queries; with CLA,
    a layer that does not make its own K/V (`makes_kv=False`) uses the ones passed in."""

    def __init__(self, config: MoEConfig, makes_kv: bool):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = (
            config.n_heads,
            config.n_kv_heads,
            config.head_dim,
        )
        self.wq = nn.Linear(config.d_model, config.n_heads * config.head_dim, bias=False)
        self.wo = nn.Linear(config.n_heads * config.head_dim, config.d_model, bias=False)
        self.wkv = (
            nn.Linear(config.d_model, 2 * config.n_kv_heads * config.head_dim, bias=False)
            if makes_kv
            else None
        )
        self.q_norm = RMSNorm(config.head_dim) if config.qk_norm else None
        self.k_norm = RMSNorm(config.head_dim) if config.qk_norm and makes_kv else None

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, kv: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        batch, seq, _ = x.shape
        q = self.wq(x).view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q = self.q_norm(q)
        q = apply_rope(q, cos, sin)
        if self.wkv is not None:
            k, v = self.wkv(x).view(batch, seq, 2, self.n_kv_heads, self.head_dim).unbind(2)
            k, v = k.transpose(1, 2), v.transpose(1, 2)
            if self.k_norm is not None:
                k = self.k_norm(k)
            kv = (apply_rope(k, cos, sin), v)
        if kv is None:
            raise ValueError("a CLA layer that shares K/V needs the K/V of its group's first layer")
        k, v = kv
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=self.n_kv_heads != self.n_heads
        )
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1)), kv


class SwiGLU(nn.Module):
    """The gated FFN of one expert (Shazeer 2020): down(silu(gate(x)) · up(x))."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.w_gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.w_down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_down(swiglu_activation(self.w_gate_up(x)))
