"""Formulas for torch's FlopCounterMode where it has none of its own (grouped matmuls, the
CPU's fused attention), so that the exact accounting can be checked against a counter that
watches the real kernels — in the tests on the CPU, and by benchmarks/gpu_check.py on CUDA."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import sdpa_flop_count


def _grouped_mm_flops(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    # rows × inner × columns for both forms: 2D×3D (forward, grad of input) and 2D×2D (grad of
    # the stacked weights); offsets only split the rows, so they change nothing.
    return 2 * a_shape[0] * a_shape[1] * b_shape[-1]


def _flash_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _flash_cpu_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    # Model FLOPs of the backward: dV, dP, dQ, dK = 2 × forward. The kernel's recomputation
    # of the scores is an implementation choice (like activation checkpointing), not counted.
    return 2 * sdpa_flop_count(query, key, value)


FLOP_FORMULAS = {
    torch.ops.aten._grouped_mm: _grouped_mm_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _flash_cpu_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _flash_cpu_backward_flops,
}
