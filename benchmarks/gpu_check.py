"""One short run on a machine with a GPU that says whether moescale's GPU path holds: counted
training FLOPs against torch's FLOP counter on the real kernels; one MoE layer against a dense
FFN of equal activated FLOPs in bf16; training MFU at about 20M and 100M activated parameters;
and a 2-budget micro sweep end to end (Ray, training, fit). A few minutes on one GPU.

    python -m benchmarks.gpu_check                  # on the GPU machine
    python -m benchmarks.gpu_check --device cpu --quick   # the same checks, tiny, anywhere
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from moescale.models import MoEConfig, MoETransformer, count, family
from moescale.models.family import ShapeRules
from moescale.models.flop_counter import FLOP_FORMULAS
from moescale.models.layers import SwiGLU
from moescale.models.transformer import MoEFeedForward
from moescale.training import RunSpec, train_run
from moescale.training.hardware import HARDWARE, matmul_peak

# the Hunyuan-Large family's shape (configs/hunyuan-isoflop.yaml), a 32k vocabulary
SHAPE = dict(
    aspect=64, head_dim=64, width_multiple=64, gqa_ratio=8, cla_share=2, n_experts=16,
    top_k=1, n_shared_experts=1, expert_hidden_ratio=2.86, qk_norm=True, vocab_size=32768,
    max_seq_len=2048,
)  # fmt: skip
# the same family shrunk for --quick (a check of this script on any machine)
QUICK_SHAPE = {**SHAPE, "aspect": 16, "head_dim": 16, "width_multiple": 8, "gqa_ratio": 2,
               "vocab_size": 256}  # fmt: skip


def shape(quick: bool, seq_len: int) -> ShapeRules:
    return ShapeRules(**{**(QUICK_SHAPE if quick else SHAPE), "max_seq_len": seq_len})


def row(name: str, value: str, note: str = "") -> None:
    print(f"  {name:<44} {value:>16}  {note}")


def flops_against_counter(device: str, quick: bool) -> None:
    print("counted training FLOPs per token against torch's FlopCounterMode")
    seq_len = 128 if quick else 1024
    targets = (2e5, 1e6) if quick else (2e7, 1e8)
    for target in targets:
        config = family(target, shape(quick, seq_len))
        model = MoETransformer(config).to(device)
        tokens = torch.randint(0, config.vocab_size, (2, seq_len), device=device)
        counter = FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS)
        autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
        with counter, autocast:
            model(tokens, tokens).loss.backward()
        measured = counter.get_total_flops() / tokens.numel()
        counted = count(config, seq_len).flops_per_token
        row(f"N_active {count(config, seq_len).n_active:,}", f"{counted / measured:.4f}",
            f"counted / counter ({counted:.4g} / {measured:.4g})")  # fmt: skip


def moe_against_dense(device: str, quick: bool) -> None:
    print("one MoE FFN layer against a dense SwiGLU of equal activated FLOPs (forward + backward)")
    d_model, tokens = (128, 4096) if quick else (2048, 65536)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = MoEConfig.from_dict(
        dict(d_model=d_model, n_heads=d_model // 64 or 1, n_experts=16, top_k=1,
             expert_hidden=2 * d_model, n_shared_experts=1, shared_hidden=2 * d_model)
    )  # fmt: skip
    moe = MoEFeedForward(config, "auto").to(device)
    dense = SwiGLU(d_model, 4 * d_model).to(device)  # shared + one routed expert's width
    x = torch.randn(tokens, d_model, device=device, requires_grad=True)
    timings = {}
    for name, layer in (("moe", moe), ("dense", dense)):
        best = float("inf")
        for _ in range(5):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast(device, dtype=dtype, enabled=dtype == torch.bfloat16):
                out = layer(x)
            getattr(out, "out", out).float().square().mean().backward()
            if device == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        timings[name] = best
    row(f"d_model {d_model}, 16 experts top-1, {tokens:,} tokens", f"{timings['moe'] / timings['dense']:.2f}×",
        f"MoE / dense step time ({timings['moe'] * 1e3:.1f} / {timings['dense'] * 1e3:.1f} ms)")  # fmt: skip


def training_mfu(device: str, quick: bool) -> None:
    precision = "bf16" if device == "cuda" else "fp32"
    peak = matmul_peak(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    listed = next((h for h in HARDWARE.values() if h.name in name.lower().replace(" ", "")), None)
    print(f"training MFU on {name} ({precision}; measured matmul peak {peak / 1e12:.1f} TFLOP/s"
          + (f", datasheet {listed.peak(precision) / 1e12:.0f})" if listed else ")"))  # fmt: skip
    seq_len, batch = (128, 8192) if quick else (2048, 131072)
    for target in (2e5, 1e6) if quick else (2e7, 1e8):
        config = family(target, shape(quick, seq_len))
        recipe = dict(base="hunyuan", seq_len=seq_len, batch_tokens=batch, precision=precision,
                      micro_batch_tokens=batch // 4, eval_every=10**9, eval_tokens=seq_len,
                      log_every=10**9, checkpoint_every=10**9)  # fmt: skip
        spec = RunSpec(model=config.to_dict(), recipe=recipe, tokens=12 * batch, device=device)
        with tempfile.TemporaryDirectory() as folder:
            result = train_run(spec, folder)
        achieved = result.flops / result.train_s
        row(f"N_active {result.n_active:,}", f"{achieved / peak:.1%}",
            f"{achieved / 1e12:.2f} TFLOP/s over 12 steps of {batch:,} tokens")  # fmt: skip


def micro_sweep(device: str, quick: bool) -> None:
    from moescale.fitting.pipeline import fit_all
    from moescale.results import load_curves, load_runs
    from moescale.sweeps.runner import run_sweep
    from moescale.sweeps.spec import SweepSpec

    print("a 2-budget micro sweep end to end (Ray Tune, training, fit)")
    budgets = [2e10, 6e10] if quick else [3e14, 1e15]
    sizes = [1.2e4, 2.4e4, 4.8e4] if quick else [2e6, 5e6, 1.2e7]
    spec = SweepSpec.model_validate(
        dict(name="gpu-check", budgets=budgets, sizes={"n_active": sizes},
             family={"n_layers": 2, "n_experts": 8, "cla_share": 1, "gqa_ratio": 1},
             recipe=dict(base="tiny-cpu", seq_len=64 if quick else 512,
                         batch_tokens=1024 if quick else 65536, eval_every=10**6,
                         precision="bf16" if device == "cuda" else "fp32"),
             min_steps=20, device=device, bracket={"enabled": False},
             resources={"cpus": 1, "gpus": 1 if device == "cuda" else 0})
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        outcome = run_sweep(spec, root, show_progress=False)
        runs = load_runs(Path(root) / spec.name)
        fit = fit_all(runs, load_curves(Path(root) / spec.name), "gpu-check", strict=False)
        done = int((runs["status"] == "completed").sum())
        row("runs completed", f"{done}/{len(runs)}", f"{time.perf_counter() - start:.0f} s")
        row("isoFLOP optima", json.dumps(
            [] if fit.isoflop is None else [f"{n:.3g}" for n in fit.isoflop.budgets["n_opt"]]),
            f"notes: {len(outcome.notes)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the script's own check")
    parser.add_argument("--skip", nargs="*", default=[], choices=["flops", "moe", "mfu", "sweep"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, device {args.device}")
    for name, check in (("flops", flops_against_counter), ("moe", moe_against_dense),
                        ("mfu", training_mfu), ("sweep", micro_sweep)):  # fmt: skip
        if name not in args.skip:
            check(args.device, args.quick)


if __name__ == "__main__":
    main()
