"""One MoE FFN layer (router + shared + routed experts, forward + backward) against a dense
SwiGLU FFN of the same activated FLOPs, side by side: tokens/s, achieved GFLOP/s as a share
of the measured fp32 matmul peak, and the MoE/dense throughput per FLOP; beside it that of
the layer's GEMMs alone (`MatmulsOnly`: rows already in expert order, nothing routed, gathered
or combined) — the most any routing code can reach with these per-expert matmuls.

    python -m benchmarks.bench_moe_layer [--tokens 8192] [--repeats 7]
    python -m benchmarks.bench_moe_layer --models [--size 1e6]   # whole steps of quick-moe's variants
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from moescale.models import MoEConfig
from moescale.models.experts import expert_matmul
from moescale.models.layers import SwiGLU, swiglu_activation
from moescale.models.routing import route, router_logits
from moescale.models.transformer import MoEFeedForward
from moescale.training.hardware import keep_freed_memory, measure_matmul_peak

# steps before timing: the heap grows over the first few steps, while the allocator finds
# room for each step's mix of sizes (page faults at steps 2-6 measured at d 256, E 64), and
# holds still after; a training run spends all but its first steps there
WARMUP_STEPS = 8
SHAPES = [  # (d_model, n_experts, top_k)
    (128, 8, 1),
    (128, 16, 2),
    (256, 16, 1),
    (256, 64, 1),
    (512, 8, 2),
    (512, 32, 1),
]


class MatmulsOnly(torch.nn.Module):
    """An MoE layer's shared expert and routed experts on rows sorted by expert beforehand,
    `counts` rows per expert (its router's own choices on the benchmark's tokens): the same
    GEMMs and activations as the layer, with routing, dispatch and combine taken out."""

    def __init__(self, moe: MoEFeedForward, x: torch.Tensor):
        super().__init__()
        self.moe = moe
        with torch.no_grad():
            logits = router_logits(x, moe.router.weight)
            assignment = route(logits, moe.config.top_k)
        order = torch.argsort(assignment.expert, stable=True)
        self.counts = torch.bincount(assignment.expert, minlength=moe.config.n_experts)
        self.rows = x.detach()[assignment.token[order]].requires_grad_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        experts = self.moe.experts
        up = expert_matmul(self.rows, experts.w_gate_up, self.counts, experts.dispatch)
        out = expert_matmul(swiglu_activation(up), experts.w_down, self.counts, experts.dispatch)
        return self.moe.shared(x) + out.view(-1, *x.shape).sum(0)


def step_seconds(layer: torch.nn.Module, x: torch.Tensor) -> float:
    """Seconds of one forward + backward, gradients cleared first as a training step does
    (accumulating into last step's would add a pass over every expert's weight gradient)."""
    layer.zero_grad(set_to_none=True)
    x.grad = None
    start = time.perf_counter()
    out = layer(x)
    # a layer returns a record (out) or a tensor, a whole model its logits
    out = getattr(out, "out", getattr(out, "logits", out))
    out.float().square().mean().backward()
    return time.perf_counter() - start


def model_steps(size: float, tokens: int, repeats: int) -> None:
    """A whole training step (forward + backward) of each variant of configs/quick-moe.yaml
    at one activated size, each against the dense variant, A B A B."""
    from moescale.models import MoETransformer, count, family
    from moescale.models.family import ShapeRules
    from moescale.models.variants import apply_variant
    from moescale.sweeps.spec import load_sweep_spec

    spec = load_sweep_spec("configs/quick-moe.yaml")
    rules = ShapeRules(**{**spec.shape_rules.__dict__, "max_seq_len": 64})
    models = {}
    for variant in spec.variants:
        config = family(size, rules, variant=lambda c, v=variant: apply_variant(c, v))
        models[variant.name] = (MoETransformer(config), count(config, 64).flops_per_token)
    batch = torch.randint(0, 256, (tokens // 64, 64))
    dense_model, dense_flops = models.pop("dense")
    print(
        f"whole steps at N ≈ {size:.3g}, {tokens} tokens: variant / dense time (A B A B, median of pairs)"
    )
    for name, (model, flops) in models.items():
        for m in (model, dense_model):
            step_seconds(m, batch)  # warm-up
        pairs = [
            step_seconds(model, batch) / step_seconds(dense_model, batch) for _ in range(repeats)
        ]
        ratio = statistics.median(pairs)
        print(f"  {name:>10}: time × {ratio:.2f}, FLOPs × {flops / dense_flops:.3f}, "
              f"throughput per FLOP {flops / dense_flops / ratio:.2f} of dense's")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dispatch", default="auto", choices=["auto", "grouped", "loop"])
    parser.add_argument("--models", action="store_true", help="whole steps of quick-moe's variants")
    parser.add_argument("--size", type=float, default=1e6, help="activated size for --models")
    args = parser.parse_args()
    keep_freed_memory()  # as a training run does
    if args.models:
        model_steps(args.size, args.tokens, args.repeats)
        return
    torch.manual_seed(0)
    peak = measure_matmul_peak("cpu", torch.float32)
    print(f"fp32 matmul peak: {peak / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} threads")
    header = (
        f"{'d':>4} {'E':>3} {'k':>2} {'rows/E':>6} | {'MoE tok/s':>10} {'%peak':>6} |"
        f" {'dense tok/s':>11} {'%peak':>6} | {'MoE/dense':>9} {'GEMMs only':>10}"
    )
    print(header)
    print("-" * len(header))
    ratios, bounds = [], []
    for d_model, n_experts, top_k in SHAPES:
        hidden = 2 * d_model  # each expert; the shared expert has the same width
        config = MoEConfig(
            d_model=d_model, n_heads=1, n_experts=n_experts, top_k=top_k, expert_hidden=hidden
        )
        moe = MoEFeedForward(config, args.dispatch)
        dense = SwiGLU(d_model, (1 + top_k) * hidden)  # the same activated FFN FLOPs
        for p in moe.parameters():
            torch.nn.init.normal_(p, 0, 0.02)
        x = torch.randn(args.tokens, d_model, requires_grad=True)
        # FLOPs per token (forward + backward) of the matmuls each layer runs
        moe_flops = 3 * 2 * (d_model * n_experts + 3 * d_model * hidden * (1 + top_k))
        dense_flops = 3 * 2 * 3 * d_model * (1 + top_k) * hidden
        matmuls = MatmulsOnly(moe, x)
        moe_t, dense_t, matmuls_t = [], [], []
        for layer in (moe, dense, matmuls):
            for _ in range(WARMUP_STEPS):
                step_seconds(layer, x)
        for _ in range(args.repeats):  # A B C A B C: each triple sees the same machine state
            moe_t.append(step_seconds(moe, x))
            dense_t.append(step_seconds(dense, x))
            matmuls_t.append(step_seconds(matmuls, x))
        # per FLOP, as the goal reads: the router's matmul is FLOPs the layer counts
        pair_ratio = statistics.median(
            d * moe_flops / (m * dense_flops) for m, d in zip(moe_t, dense_t, strict=True)
        )
        bound = statistics.median(d / m for m, d in zip(matmuls_t, dense_t, strict=True))
        ratios.append(pair_ratio)
        bounds.append(bound)
        m_tps, d_tps = (
            args.tokens / statistics.median(moe_t),
            args.tokens / statistics.median(dense_t),
        )
        print(
            f"{d_model:>4} {n_experts:>3} {top_k:>2} {args.tokens * top_k // n_experts:>6} |"
            f" {m_tps:>10,.0f} {m_tps * moe_flops / peak:>6.1%} |"
            f" {d_tps:>11,.0f} {d_tps * dense_flops / peak:>6.1%} | {pair_ratio:>9.2f} {bound:>10.2f}"
        )
    print(
        f"median MoE/dense throughput per FLOP: {statistics.median(ratios):.2f}, GEMMs alone"
        f" {statistics.median(bounds):.2f} (goal at d_model >= 256: >= 0.95)"
    )


if __name__ == "__main__":
    main()
