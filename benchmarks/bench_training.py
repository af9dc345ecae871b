"""Training throughput: tokens/s and achieved FLOP/s (exact counted FLOPs over training-step
time) as a share of this machine's measured fp32 matmul peak, for three model sizes; and the
overhead of logging and evaluation, from the same runs with them and without them (A B A B);
and the cost of measuring the gradient noise scale (recipe.noise_scale: a step of one
micro-batch trained as two halves, and one more gradient norm), on against off, interleaved.
Then where a step's time goes: the step's own GEMMs and attention kernels replayed alone at
their shapes, the optimizer alone, and the rest (elementwise passes, norms, loss, routing) —
and the share of peak a step would reach if that rest cost nothing.

    python -m benchmarks.bench_training [--steps 40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import time
from dataclasses import dataclass
from functools import partial

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from moescale.models import AdamW, MoETransformer, count, family, param_groups
from moescale.training import RunSpec, train_run
from moescale.training.hardware import measure_matmul_peak

SIZES = (5e4, 5e5, 2e6)  # activated parameters
FAMILY = dict(n_experts=8, top_k=1, vocab_size=256, max_seq_len=256, cla_share=1)


def run(
    config, steps: int, batch_tokens: int, seq_len: int, logging: bool, noise: bool = True
) -> tuple[float, float]:
    """(training tokens/s, wall seconds) of one run."""
    cadence = (
        dict(log_every=5, eval_every=10, eval_tokens=8 * seq_len * 8)
        if logging
        else dict(log_every=10**9, eval_every=10**9, eval_tokens=seq_len)
    )
    recipe = dict(
        base="tiny-cpu",
        seq_len=seq_len,
        batch_tokens=batch_tokens,
        checkpoint_every=10**9,
        noise_scale=noise,
        **cadence,
    )
    spec = RunSpec(
        model=config.to_dict(),
        recipe=recipe,
        tokens=steps * batch_tokens,
        num_threads=torch.get_num_threads(),
    )
    with tempfile.TemporaryDirectory() as folder:
        result = train_run(spec, folder)
    return result.tokens / result.train_s, result.wall_s


def median_seconds(fn, repeats: int = 7) -> float:
    """Median wall seconds of `fn` over `repeats` calls, after two warm-up calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


aten = torch.ops.aten
# the kernels that do a step's counted FLOPs: matmuls (routed experts' grouped ones included)
# and the CPU's fused attention, forward and backward
GEMMS = {aten.mm.default, aten._grouped_mm.default}
ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu.default,
    aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
}


class KernelCalls(TorchDispatchMode):
    """Records each call of the GEMM and attention kernels by its signature — sizes, strides
    and dtypes of its tensors, the values of its integer ones (grouped_mm's offsets) — so
    that each can be replayed alone on fresh tensors of the same layout."""

    def __init__(self):
        super().__init__()
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in GEMMS or func in ATTENTION:
            self.calls[func, _signature(args), _signature(tuple(kwargs.items()))] += 1
        return func(*args, **kwargs)


@dataclass(frozen=True)
class Layout:
    """A floating-point argument as a replay needs it: sizes, strides and dtype, not values."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class Values:
    """An integer argument (grouped_mm's offsets), kept by value: it decides the work."""

    values: tuple[int, ...]
    dtype: torch.dtype


def _signature(value):
    """A hashable stand-in for a kernel's argument (tensors by layout or by value)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            return Layout(tuple(value.shape), value.stride(), value.dtype)
        return Values(tuple(value.tolist()), value.dtype)
    if isinstance(value, (tuple, list)):
        return tuple(_signature(v) for v in value)
    return value


def _fresh(signature):
    """Arguments like those a signature recorded: new random tensors of the same layout."""
    if isinstance(signature, Layout):
        shape, stride, dtype = signature.shape, signature.stride, signature.dtype
        return torch.empty_strided(shape, stride, dtype=dtype).normal_()
    if isinstance(signature, Values):
        return torch.tensor(signature.values, dtype=signature.dtype)
    if isinstance(signature, tuple):
        return tuple(_fresh(s) for s in signature)
    return signature


def step_breakdown(config, batch_tokens: int, seq_len: int) -> dict[str, float]:
    """Seconds of one training step (one micro-batch forward + backward, then AdamW as the
    trainer runs it) and of its parts replayed alone: its GEMMs and its attention kernels,
    each at its recorded layout, and the optimizer step."""
    torch.manual_seed(0)
    model = MoETransformer(config)
    tokens = torch.randint(0, config.vocab_size, (batch_tokens // seq_len, seq_len))
    optimizer = AdamW(param_groups(model, 1e-3), foreach=True)

    def forward_backward() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(tokens, tokens).loss.backward()

    def step() -> None:
        forward_backward()
        optimizer.step()

    seconds = {"step": median_seconds(step), "optimizer": median_seconds(optimizer.step)}
    recorder = KernelCalls()
    with recorder:
        forward_backward()
    seconds["matmuls"] = seconds["attention"] = 0.0
    for (func, args, kwargs), calls in recorder.calls.items():
        replay = partial(func, *_fresh(args), **dict(_fresh(kwargs)))
        seconds["matmuls" if func in GEMMS else "attention"] += calls * median_seconds(replay)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-tokens", type=int, default=8192)
    args = parser.parse_args()
    # measured now, not read from the cache: a peak cached while the machine was busy (118
    # GFLOP/s here, against 160 measured idle) would overstate every share below
    peak = measure_matmul_peak("cpu", torch.float32)
    print(
        f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, {torch.get_num_threads()} threads; seq_len {args.seq_len}, {args.batch_tokens} tokens/step"
    )
    print(
        f"{'n_active':>9} {'d_model':>7} {'layers':>6} {'tokens/s':>9} {'GFLOP/s':>8} {'% peak':>7} {'log+eval overhead':>18} {'noise-scale cost':>17}"
    )
    for target in SIZES:
        config = family(target, **FAMILY)
        flops_per_token = count(config, args.seq_len).flops_per_token
        plain_tps, plain_wall, logged_wall, quiet_tps = [], [], [], []
        shape = (config, args.steps, args.batch_tokens, args.seq_len)
        for _ in range(args.repeats):
            tps, wall = run(*shape, logging=False)
            plain_tps.append(tps)
            plain_wall.append(wall)
            logged_wall.append(run(*shape, logging=True)[1])
            quiet_tps.append(run(*shape, logging=False, noise=False)[0])
        tps = statistics.median(plain_tps)
        overhead = (
            statistics.median(w / p for w, p in zip(logged_wall, plain_wall, strict=True)) - 1
        )
        noise_cost = statistics.median(q / p for q, p in zip(quiet_tps, plain_tps, strict=True)) - 1
        achieved = tps * flops_per_token
        n_active = count(config, args.seq_len).n_active
        print(
            f"{n_active:>9,} {config.d_model:>7} {config.n_layers:>6} {tps:>9,.0f} {achieved / 1e9:>8.1f} {achieved / peak:>7.1%} {overhead:>17.1%} {noise_cost:>16.1%}"
        )
    print(
        "\nwhere a step goes (one micro-batch of the whole batch + AdamW; parts replayed alone at"
        " the step's shapes): ms"
    )
    print(
        f"{'n_active':>9} {'step':>7} {'GEMMs':>7} {'attention':>9} {'optimizer':>9} {'the rest':>8}"
        f" {'% peak':>7} {'% peak if the rest were free':>29}"
    )
    for target in SIZES:
        config = family(target, **FAMILY)
        counted = count(config, args.seq_len)
        parts = step_breakdown(config, args.batch_tokens, args.seq_len)
        rest = parts["step"] - parts["matmuls"] - parts["attention"] - parts["optimizer"]
        flops = counted.flops_per_token * args.batch_tokens
        kernels = parts["matmuls"] + parts["attention"]
        print(
            f"{counted.n_active:>9,} {parts['step'] * 1e3:>7.1f} {parts['matmuls'] * 1e3:>7.1f}"
            f" {parts['attention'] * 1e3:>9.1f} {parts['optimizer'] * 1e3:>9.1f} {rest * 1e3:>8.1f}"
            f" {flops / parts['step'] / peak:>7.1%} {flops / kernels / peak:>29.1%}"
        )


if __name__ == "__main__":
    main()
