"""`train_run`: one run, end to end, as a plain function (Ray, or a person debugging, calls it).

A run stops at exactly its token budget: `tokens // batch_tokens` full steps, then one last
step of the whole sequences that remain (fewer than `seq_len` tokens of the budget are left
unused), so `tokens` in the results is what was really consumed, within one sequence of D.
Checkpoints hold the model, optimizer, RNG, step and curve; the data position is the step
itself (batches are a pure function of seed and step), so a resumed run is bit-identical on
the CPU to one that ran straight through.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from moescale.errors import UserError
from moescale.models import MoETransformer, count, param_groups
from moescale.results import CURVES_SCHEMA, atomic_write_json, atomic_write_parquet, read_json
from moescale.training.data import eval_batches, load_tokens, train_batch
from moescale.training.hardware import matmul_peak, pick_device
from moescale.training.schedules import lr_multiplier
from moescale.training.spec import RunSpec

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: str  # completed, diverged or failed
    tokens: int  # tokens really consumed
    flops: float  # flops_per_token × tokens
    steps: int
    final_loss: float  # held-out loss at the end (nan if the run did not finish)
    final_train_loss: float
    n_active: int
    n_total: int
    n_embedding: int
    flops_per_token: float
    wall_s: float
    train_s: float  # training steps only: no eval, logging or checkpoints
    peak_flops: float  # the device's measured matmul peak, FLOP/s
    error: str = ""
    unique_tokens: int = 0  # tokens of the training split: what one pass over the data reads
    epochs: float = (
        math.nan
    )  # tokens ÷ unique_tokens: passes over the data (windows drawn at random)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StepPlan:
    full_steps: int
    tail_sequences: int

    @property
    def total_steps(self) -> int:
        return self.full_steps + (self.tail_sequences > 0)


def plan_steps(tokens: int, batch_tokens: int, seq_len: int) -> StepPlan:
    """Full steps of `batch_tokens`, then one step of the whole sequences left of the budget."""
    full = tokens // batch_tokens
    return StepPlan(full, (tokens - full * batch_tokens) // seq_len)


def _routing_stats(routing, n_experts: int) -> tuple[float, float, float]:
    if not routing:
        return math.nan, 0.0, 0.0
    load = max(float(layer.expert_fraction.max()) * n_experts for layer in routing)
    dropped = float(np.mean([layer.dropped_frac for layer in routing]))
    recycled = float(np.mean([layer.recycled_frac for layer in routing]))
    return load, dropped, recycled


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, device: torch.device, autocast) -> float:
    """Mean cross-entropy (nats per token) on the fixed held-out batches, without touching
    the training RNG stream (recycle routing draws random numbers)."""
    model.eval()
    total, count_tokens = 0.0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for inputs, targets in batches:
            with autocast():
                out = model(inputs.to(device), targets.to(device))
            total += float(out.ce_loss) * targets.numel()
            count_tokens += targets.numel()
    model.train()
    return total / count_tokens


def train_run(
    spec: RunSpec, out_dir: str | Path, progress: Callable[[dict], None] | None = None
) -> RunResult:
    """Train `spec` into `out_dir` (run.json, curve.parquet, checkpoint.pt) and return its result.

    A folder whose run.json says completed or diverged returns that result without training;
    a folder holding a checkpoint resumes from it. Divergence and crashes end as a recorded
    status, never an exception; bad input (a missing data path, say) raises UserError.
    """
    out_dir = Path(out_dir)
    finished = _finished_result(out_dir, spec)
    if finished is not None:
        return finished
    wall_start = time.perf_counter()
    try:
        return _train(spec, out_dir, progress, wall_start)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as err:  # a crash is recorded as a failed run, with its reason
        accounting = count(spec.model, spec.recipe.seq_len)
        result = RunResult(
            run_id=spec.run_id, status="failed", tokens=0, flops=0.0, steps=0,
            final_loss=math.nan, final_train_loss=math.nan, n_active=accounting.n_active,
            n_total=accounting.n_total, n_embedding=accounting.n_embedding,
            flops_per_token=accounting.flops_per_token, wall_s=time.perf_counter() - wall_start,
            train_s=0.0, peak_flops=math.nan,
            error=f"{type(err).__name__}: {err}".splitlines()[0],
        )  # fmt: skip
        _write_run_json(out_dir, spec, result, traceback.format_exc())
        return result


def _finished_result(out_dir: Path, spec: RunSpec) -> RunResult | None:
    path = out_dir / "run.json"
    if not path.exists():
        return None
    record = read_json(path)
    if (
        record.get("result", {}).get("status") in ("completed", "diverged")
        and record.get("run_id") == spec.run_id
    ):
        return RunResult(**record["result"])
    return None


def _write_run_json(out_dir: Path, spec: RunSpec, result: RunResult, trace: str = "") -> None:
    payload = {
        "run_id": spec.run_id,
        "result": result.to_dict(),
        "spec": spec.model_dump(mode="json"),
        "accounting": asdict(count(spec.model, spec.recipe.seq_len)),
    }
    if trace:
        payload["traceback"] = trace
    atomic_write_json(out_dir / "run.json", payload)


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _train(spec: RunSpec, out_dir: Path, progress, wall_start: float) -> RunResult:
    recipe, config = spec.recipe, spec.model
    if spec.num_threads:
        torch.set_num_threads(spec.num_threads)
    device = pick_device(spec.device)
    data = load_tokens(spec.data)
    if data.vocab_size != config.vocab_size:
        raise UserError(
            f"model.vocab_size {config.vocab_size} differs from the data's vocab_size {data.vocab_size}"
        )
    if recipe.seq_len > config.max_seq_len:
        raise UserError(
            f"recipe.seq_len {recipe.seq_len} exceeds model.max_seq_len {config.max_seq_len}"
        )
    plan = plan_steps(spec.tokens, recipe.batch_tokens, recipe.seq_len)
    if plan.total_steps == 0:
        raise UserError(f"tokens {spec.tokens} is less than one sequence of {recipe.seq_len}")
    accounting = count(config, recipe.seq_len)
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the input has checked out
    dtype = torch.bfloat16 if recipe.precision == "bf16" else torch.float32
    peak = matmul_peak(device, dtype)

    torch.manual_seed(spec.seed)
    model = MoETransformer(config).to(device)
    groups = param_groups(
        model, recipe.peak_lr(config.d_model), recipe.routed_lr_scale, recipe.weight_decay
    )
    for group in groups:
        group["initial_lr"] = group["lr"]
    optimizer = torch.optim.AdamW(groups, betas=(recipe.beta1, recipe.beta2), eps=recipe.eps)
    forward = torch.compile(model) if recipe.compile else model

    def autocast():
        if recipe.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    held_out = eval_batches(data.val, recipe.eval_tokens, recipe.seq_len, recipe.micro_batch_size)
    warmup = round(recipe.warmup_frac * plan.total_steps)
    step, tokens_done, train_s, first_loss = 0, 0, 0.0, math.nan
    rows: list[dict] = []
    routing_rows: list[tuple[int, int, int, float]] = []  # (step, layer, expert, share of tokens)
    checkpoint_path = out_dir / CHECKPOINT
    state = (
        torch.load(checkpoint_path, map_location=device, weights_only=True)
        if checkpoint_path.exists()
        else {}
    )
    if "optimizer" in state:  # a mid-run checkpoint (a final one holds only the weights)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step, tokens_done, train_s, first_loss = (
            state["step"],
            state["tokens"],
            state["train_s"],
            state["first_loss"],
        )
        rows = [dict(zip(state["curve_columns"], row, strict=True)) for row in state["curve"]]
        routing_rows = [tuple(row) for row in state["routing"]]

    status, error = "completed", ""
    last_checkpoint = time.monotonic()
    interval_tokens, interval_time = 0, 0.0
    final_train_loss = rows[-1]["train_loss"] if rows else math.nan
    while step < plan.total_steps:
        multiplier = lr_multiplier(
            recipe.schedule, step, plan.total_steps, warmup, recipe.min_lr_ratio, recipe.decay_frac
        )
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * multiplier
        n_seq = recipe.batch_size if step < plan.full_steps else plan.tail_sequences
        inputs, targets = train_batch(data.train, n_seq, recipe.seq_len, spec.seed, step)

        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        ce_total, routing = 0.0, []
        for chunk in range(0, n_seq, recipe.micro_batch_size):
            x = inputs[chunk : chunk + recipe.micro_batch_size].to(device)
            y = targets[chunk : chunk + recipe.micro_batch_size].to(device)
            with autocast():
                out = forward(x, y)
            (out.loss * (len(x) / n_seq)).backward()
            ce_total += float(out.ce_loss.detach()) * len(x) / n_seq
            routing = out.routing
        clip = recipe.grad_clip if recipe.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - started
        train_s += elapsed
        interval_time += elapsed
        step += 1
        tokens_done += n_seq * recipe.seq_len
        interval_tokens += n_seq * recipe.seq_len
        final_train_loss = ce_total
        if step == 1 and math.isnan(first_loss):
            first_loss = ce_total

        diverged = not math.isfinite(ce_total) or ce_total > recipe.diverge_factor * first_loss
        last = step == plan.total_steps or diverged
        if step % recipe.log_every == 0 or step == 1 or last:
            eval_loss = math.nan
            if (step % recipe.eval_every == 0 or last) and not diverged:
                eval_loss = evaluate(model, held_out, device, autocast)
            load, dropped, recycled = _routing_stats(routing, config.n_experts)
            for layer, stats in enumerate(routing):
                for expert, fraction in enumerate(stats.expert_fraction.tolist()):
                    routing_rows.append((step, layer, expert, fraction))
            rows.append(
                {
                    "step": step,
                    "tokens": tokens_done,
                    "flops": tokens_done * accounting.flops_per_token,
                    "train_loss": ce_total,
                    "eval_loss": eval_loss,
                    "lr": optimizer.param_groups[0]["lr"],
                    "grad_norm": grad_norm,
                    "tokens_per_s": interval_tokens / interval_time
                    if interval_time > 0
                    else math.nan,
                    "max_expert_load": load,
                    "dropped_frac": dropped,
                    "recycled_frac": recycled,
                }
            )
            interval_tokens, interval_time = 0, 0.0
            if progress is not None:
                progress({"step": step, "total_steps": plan.total_steps, **rows[-1]})
        if diverged:
            status = "diverged"
            error = f"train loss {ce_total:.4g} at step {step} (first {first_loss:.4g}, limit × {recipe.diverge_factor})"
            break
        due = (
            step % recipe.checkpoint_every == 0
            or time.monotonic() - last_checkpoint > 60 * recipe.checkpoint_minutes
        )
        if due and step < plan.total_steps:
            _save_checkpoint(
                checkpoint_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(),
                    "step": step,
                    "tokens": tokens_done,
                    "train_s": train_s,
                    "first_loss": first_loss,
                    "curve_columns": list(CURVES_SCHEMA)[1:],
                    "curve": [[row[c] for c in list(CURVES_SCHEMA)[1:]] for row in rows],
                    "routing": [list(row) for row in routing_rows],
                },
            )
            _write_curve(out_dir, spec.run_id, rows, routing_rows)
            last_checkpoint = time.monotonic()

    _write_curve(out_dir, spec.run_id, rows, routing_rows)
    final_loss = rows[-1]["eval_loss"] if status == "completed" else math.nan
    result = RunResult(
        run_id=spec.run_id,
        status=status,
        tokens=tokens_done,
        flops=tokens_done * accounting.flops_per_token,
        steps=step,
        final_loss=final_loss,
        final_train_loss=final_train_loss,
        n_active=accounting.n_active,
        n_total=accounting.n_total,
        n_embedding=accounting.n_embedding,
        flops_per_token=accounting.flops_per_token,
        wall_s=time.perf_counter() - wall_start,
        train_s=train_s,
        peak_flops=peak,
        error=error,
        unique_tokens=len(data.train),
        epochs=tokens_done / len(data.train),
    )
    _write_run_json(out_dir, spec, result)
    # the final weights, for whoever wants the model; run.json above already marks it finished
    _save_checkpoint(checkpoint_path, {"model": model.state_dict(), "step": step, "final": True})
    return result


def _write_curve(out_dir: Path, run_id: str, rows: list[dict], routing_rows: list[tuple]) -> None:
    """curve.parquet (the DESIGN's columns) and routing.parquet (step, layer, expert, fraction:
    each routed expert's share of the layer's assignments at each logged step)."""
    table = pd.DataFrame(rows, columns=list(CURVES_SCHEMA)[1:])
    table.insert(0, "run_id", run_id)
    atomic_write_parquet(
        out_dir / "curve.parquet", table.astype({"step": "int64", "tokens": "int64"})
    )
    routing = pd.DataFrame(routing_rows, columns=["step", "layer", "expert", "fraction"])
    atomic_write_parquet(out_dir / "routing.parquet", routing)
