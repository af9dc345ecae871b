"""Training throughput: tokens/s and achieved FLOP/s (exact counted FLOPs over training-step
time) as a share of this machine's measured fp32 matmul peak, for three model sizes; and the
overhead of logging and evaluation, from the same runs with them and without them (A B A B);
and the cost of measuring the gradient noise scale (recipe.noise_scale: a step of one
micro-batch trained as two halves, and one more gradient norm), on against off, interleaved.

    python -m benchmarks.bench_training [--steps 40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from moescale.models import count, family
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


if __name__ == "__main__":
    main()
