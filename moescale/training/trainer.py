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
from moescale.models import AdamW, MoETransformer, count, param_groups
from moescale.results import (
    CURVE_COLUMNS,
    CURVE_FILE,
    FINISHED,
    RUN_RECORD,
    RunStatus,
    atomic_write_json,
    atomic_write_parquet,
    read_json,
    state_path,
)
from moescale.training.data import eval_batches, held_out_tokens_per_byte
from moescale.training.distributed import (
    SHARDED_CHECKPOINT,
    full_model_state,
    launch,
    load_sharded,
    mean_over_ranks,
    save_sharded,
    shard,
    world,
)
from moescale.training.hardware import keep_freed_memory, matmul_peak, pick_device
from moescale.training.mixture import mixture_held_out
from moescale.training.noise_scale import NoiseScale
from moescale.training.sources import load_tokens, train_batch
from moescale.training.spec import RunSpec

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: RunStatus  # completed, diverged or failed
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
    final_bpb: float = math.nan  # final_loss / ln 2 × held-out tokens per byte of their text
    # a mixture's sources: weight, the realised share of sequences, tokens read and passes
    mixture: dict | None = None
    epochs: float = (
        math.nan
    )  # tokens ÷ unique_tokens: passes over the data (windows drawn at random)
    grad_noise_scale: float = math.nan  # B_noise at the end, tokens (training/noise_scale.py)

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

    if spec.world_size > 1 and world()[1] == 1:  # start the processes; each runs this again
        finished = _finished_result(Path(out_dir), spec)
        if finished is not None:
            return finished
        launch(spec.world_size, spec.device, train_run, spec, str(out_dir))
        result = _recorded_result(Path(out_dir), spec)  # finished, or failed in a rank
        if result is None:
            raise RuntimeError(f"sharded run {spec.run_id} ended without a record")
        return result

    def train(trainer: Trainer) -> RunResult:
        trainer.resume(Path(out_dir) / CHECKPOINT)
        status, error = trainer.run(trainer.plan.total_steps, Path(out_dir), checkpoints=True)
        return trainer.finish(Path(out_dir), status, error)

    return _recorded(spec, Path(out_dir), progress, train)


def train_branch(
    spec: RunSpec,
    trunk_state: str | Path,
    out_dir: str | Path,
    progress: Callable[[dict], None] | None = None,
) -> RunResult:
    """Train `spec` (a WSD run) from its trunk's plateau state: load the state at the branch
    step, then continue with the run's own schedule, whose cooldown starts there. On the CPU in
    fp32 the result is bit-identical to `train_run(spec)`. A killed branch starts again from
    the branch point (it writes no checkpoint of its own); its curve is the cooldown only."""

    if spec.world_size > 1:
        raise UserError(
            "branching with world_size > 1 is not built yet: train branches on one device"
        )

    def train(trainer: Trainer) -> RunResult:
        trainer.resume(Path(trunk_state), keep_curve=False)
        status, error = trainer.run(trainer.plan.total_steps, Path(out_dir), checkpoints=False)
        return trainer.finish(Path(out_dir), status, error)

    return _recorded(spec, Path(out_dir), progress, train)


def train_trunk(
    spec: RunSpec,
    branch_steps: list[int],
    out_dir: str | Path,
    progress: Callable[[dict], None] | None = None,
) -> int:
    """Train a WSD trunk on its plateau (no cooldown) and save its full state at each of
    `branch_steps` as `state-<step>.pt` in `out_dir`; resumes from the latest checkpoint or
    state at or before the first step still needed. Returns the step reached."""
    out_dir = Path(out_dir)
    if spec.world_size > 1:
        raise UserError(
            "branching with world_size > 1 is not built yet: train trunks on one device"
        )
    needed = sorted(s for s in set(branch_steps) if not state_path(out_dir, s).exists())
    if not needed:
        return max(branch_steps, default=0)
    trainer = Trainer(spec, progress)
    trainer.name = spec.trunk_id
    out_dir.mkdir(parents=True, exist_ok=True)
    starts = [p for p in [out_dir / CHECKPOINT, *out_dir.glob("state-*.pt")] if p.exists()]
    usable = [p for p in starts if _saved_step(p) <= needed[0]]
    if usable:
        trainer.resume(max(usable, key=_saved_step))
    status, error = trainer.run(needed[-1], out_dir, checkpoints=True, states_at=needed)
    if status != RunStatus.COMPLETED:
        raise RuntimeError(f"trunk {out_dir.name} {status}: {error}")
    _save_checkpoint(out_dir / CHECKPOINT, trainer.state_dict())  # where an extension resumes
    return trainer.step


def _saved_step(path: Path) -> int:
    if path.name.startswith("state-"):
        return int(path.stem.removeprefix("state-"))
    return int(torch.load(path, map_location="cpu", weights_only=True).get("step", -1))


def _recorded(spec: RunSpec, out_dir: Path, progress, train) -> RunResult:
    """Run `train(trainer)` unless the folder already holds a finished result; a crash is
    recorded as a failed run with its reason."""
    finished = _finished_result(out_dir, spec)
    if finished is not None:
        return finished
    wall_start = time.perf_counter()
    try:
        trainer = Trainer(spec, progress, wall_start)
        out_dir.mkdir(parents=True, exist_ok=True)  # only once the input has checked out
        return train(trainer)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as err:  # a crash is recorded as a failed run, with its reason
        accounting = count(spec.model, spec.recipe.seq_len)
        result = RunResult(
            run_id=spec.run_id, status=RunStatus.FAILED, tokens=0, flops=0.0, steps=0,
            final_loss=math.nan, final_train_loss=math.nan, n_active=accounting.n_active,
            n_total=accounting.n_total, n_embedding=accounting.n_embedding,
            flops_per_token=accounting.flops_per_token, wall_s=time.perf_counter() - wall_start,
            train_s=0.0, peak_flops=math.nan,
            error=f"{type(err).__name__}: {err}".splitlines()[0],
        )  # fmt: skip
        if world()[0] == 0:
            _write_run_json(out_dir, spec, result, traceback.format_exc())
        return result


def _recorded_result(out_dir: Path, spec: RunSpec) -> RunResult | None:
    """The result run.json holds for this very run (any status), or None."""
    path = out_dir / RUN_RECORD
    if not path.exists():
        return None
    record = read_json(path)
    return RunResult(**record["result"]) if record.get("run_id") == spec.run_id else None


def _finished_result(out_dir: Path, spec: RunSpec) -> RunResult | None:
    """The recorded result when it is one that is never trained again."""
    result = _recorded_result(out_dir, spec)
    return result if result is not None and result.status in FINISHED else None


def _write_run_json(out_dir: Path, spec: RunSpec, result: RunResult, trace: str = "") -> None:
    payload = {
        "run_id": spec.run_id,
        "result": result.to_dict(),
        "spec": spec.model_dump(mode="json"),
        "accounting": asdict(count(spec.model, spec.recipe.seq_len)),
    }
    if trace:
        payload["traceback"] = trace
    atomic_write_json(out_dir / RUN_RECORD, payload)


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


@dataclass
class StepOutcome:
    """What one optimizer step produced."""

    train_loss: float  # mean cross-entropy over the batch (nats/token)
    grad_norm: float
    routing: list  # the last micro-batch's routing stats per layer
    seconds: float
    tokens: int


class Trainer:
    """One run's model, optimizer and data, and the named steps of training it: resume, set
    the learning rate, train a step, log, check for divergence, checkpoint, finish. A plain
    run, a WSD trunk and a branch are the same steps in a different order."""

    def __init__(self, spec: RunSpec, progress=None, wall_start: float | None = None):
        self.spec, self.progress = spec, progress
        self.name = spec.run_id  # what its curve rows are labelled (a trunk: its trunk id)
        self.wall_start = time.perf_counter() if wall_start is None else wall_start
        recipe, config = spec.recipe, spec.model
        if spec.num_threads:
            torch.set_num_threads(spec.num_threads)
        self.device = pick_device(spec.device)
        keep_freed_memory()
        self.data = load_tokens(spec.data)
        if self.data.vocab_size != config.vocab_size:
            raise UserError(
                f"model.vocab_size {config.vocab_size} differs from the data's vocab_size {self.data.vocab_size}"
            )
        if recipe.batch_rule != "fixed":
            raise UserError(
                "recipe.batch_rule: critical sets each run's batch when a sweep plans it; "
                "a single run takes a fixed batch_tokens"
            )
        if recipe.seq_len > config.max_seq_len:
            raise UserError(
                f"recipe.seq_len {recipe.seq_len} exceeds model.max_seq_len {config.max_seq_len}"
            )
        self.plan = plan_steps(spec.tokens, recipe.batch_tokens, recipe.seq_len)
        if self.plan.total_steps == 0:
            raise UserError(f"tokens {spec.tokens} is less than one sequence of {recipe.seq_len}")
        self.accounting = count(config, recipe.seq_len)
        dtype = torch.bfloat16 if recipe.precision == "bf16" else torch.float32
        self.peak = matmul_peak(self.device, dtype)

        self.rank, self.world = world()
        if self.world > 1 and (
            recipe.batch_size % self.world or self.plan.tail_sequences % self.world
        ):
            raise UserError(
                f"a batch of {recipe.batch_size} sequences does not split over {self.world} "
                "processes: make batch_tokens / seq_len a multiple of world_size"
            )
        torch.manual_seed(spec.seed)
        self.model = MoETransformer(config).to(self.device)
        if self.world > 1:
            shard(self.model)  # before the optimizer: FSDP2 turns the parameters into shards
        groups = param_groups(
            self.model, recipe.peak_lr(config.d_model), recipe.routed_lr_scale, recipe.weight_decay
        )
        for group in groups:
            group["initial_lr"] = group["lr"]
        # foreach: one call per group for each update op, not one per tensor (the same
        # numbers; 7% of a tiny model's step on the CPU, where torch's default loops)
        self.optimizer = AdamW(
            groups, betas=(recipe.beta1, recipe.beta2), eps=recipe.eps, foreach=True
        )
        self.forward = torch.compile(self.model) if recipe.compile else self.model
        if self.data.parts:  # a mixture: each source's share of the held-out set
            self.held_out, self.tokens_per_byte = mixture_held_out(
                self.data, recipe.eval_tokens, recipe.seq_len, recipe.micro_batch_size
            )
        else:
            self.held_out = eval_batches(
                self.data.val, recipe.eval_tokens, recipe.seq_len, recipe.micro_batch_size
            )
            self.tokens_per_byte = self.data.tokens_per_byte or held_out_tokens_per_byte(
                self.data.tokenizer, self.held_out
            )
        self.step, self.tokens, self.train_s, self.first_loss = 0, 0, 0.0, math.nan
        self.rows: list[dict] = []
        self.routing_rows: list[tuple[int, int, int, float]] = []  # (step, layer, expert, share)
        self.final_train_loss = math.nan
        self.noise = NoiseScale()
        self._interval_tokens, self._interval_time = 0, 0.0

    def autocast(self):
        if self.spec.recipe.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # -- state ---------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Weights, optimizer and progress: one process's checkpoint, or a trunk's state."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self._progress_state(),
        }

    def _progress_state(self) -> dict:
        columns = CURVE_COLUMNS
        return {
            "rng": torch.get_rng_state(),
            "step": self.step,
            "tokens": self.tokens,
            "train_s": self.train_s,
            "first_loss": self.first_loss,
            "curve_columns": columns,
            # rows resumed from a checkpoint older than a column hold no value for it
            "curve": [[row.get(c, math.nan) for c in columns] for row in self.rows],
            "routing": [list(row) for row in self.routing_rows],
            "noise_scale": self.noise.state(),
        }

    def checkpoint(self, out_dir: Path) -> None:
        """The mid-run checkpoint a killed run resumes from (sharded: one part per rank)."""
        if self.world > 1:
            save_sharded(
                out_dir / SHARDED_CHECKPOINT, self.model, self.optimizer, self._progress_state()
            )
        else:
            _save_checkpoint(out_dir / CHECKPOINT, self.state_dict())

    def resume(self, path: Path, keep_curve: bool = True) -> bool:
        """Continue from a mid-run checkpoint or a trunk's state (a final checkpoint holds only
        the weights and is not resumed from). `keep_curve` False starts a fresh curve there."""
        if self.world > 1:
            folder = path.parent / SHARDED_CHECKPOINT
            if not folder.exists():
                return False
            state = load_sharded(folder, self.model, self.optimizer)
        else:
            if not path.exists():
                return False
            state = torch.load(path, map_location=self.device, weights_only=True)
            if "optimizer" not in state:
                return False
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.step, self.tokens = state["step"], state["tokens"]
        self.train_s, self.first_loss = state["train_s"], state["first_loss"]
        self.noise = NoiseScale.from_state(state.get("noise_scale"))
        if keep_curve:
            self.rows = [dict(zip(state["curve_columns"], r, strict=True)) for r in state["curve"]]
            self.routing_rows = [tuple(row) for row in state["routing"]]
        self.final_train_loss = self.rows[-1]["train_loss"] if self.rows else math.nan
        return True

    # -- one step ------------------------------------------------------------------------

    def set_lr(self, total_steps: int | None) -> None:
        multiplier = self.spec.recipe.lr_multiplier(self.step, total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * multiplier

    def train_step(self) -> StepOutcome:
        """One optimizer step over the batch of this step (a pure function of seed and step),
        accumulated over micro-batches."""
        recipe = self.spec.recipe
        n_seq = recipe.batch_size if self.step < self.plan.full_steps else self.plan.tail_sequences
        inputs, targets = train_batch(
            self.data.train, n_seq, recipe.seq_len, self.spec.seed, self.step
        )
        local = n_seq // self.world  # this rank's contiguous slice of the batch
        inputs = inputs[self.rank * local : (self.rank + 1) * local]
        targets = targets[self.rank * local : (self.rank + 1) * local]
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        ce_total, routing, half_norm = 0.0, [], None
        # the even-indexed sequences first, then the odd ones (a batch of one micro-batch
        # becomes two): the gradient after the even ones is that of a known half of the
        # batch, the small batch of the noise scale (the same half on any number of ranks)
        halves = (slice(0, None, 2), slice(1, None, 2)) if recipe.noise_scale else (slice(None),)
        for half in halves:
            part_inputs, part_targets = inputs[half], targets[half]
            for chunk in range(0, len(part_inputs), recipe.micro_batch_size):
                x = part_inputs[chunk : chunk + recipe.micro_batch_size].to(self.device)
                y = part_targets[chunk : chunk + recipe.micro_batch_size].to(self.device)
                with self.autocast():
                    out = self.forward(x, y)
                (out.loss * (len(x) / local)).backward()  # FSDP averages over the ranks
                ce_total += float(out.ce_loss.detach()) * len(x) / local
                routing = out.routing
            if half_norm is None and len(halves) == 2:  # a tensor: no host sync here
                half_norm = _grad_norm(self.model)
        clip = recipe.grad_clip if recipe.grad_clip > 0 else math.inf
        grad_norm = _full(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if half_norm is not None:
            evens = self.world * ((local + 1) // 2)  # the small batch's sequences, all ranks'
            self.noise.update(
                (_full(half_norm) * n_seq / evens) ** 2,
                grad_norm**2,
                evens * recipe.seq_len,
                n_seq * recipe.seq_len,
            )
        if self.world > 1:
            ce_total = mean_over_ranks(ce_total)
        self.optimizer.step()
        self.model.update_balance()  # auxiliary-loss-free balancing: after the weights move
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        outcome = StepOutcome(
            ce_total, grad_norm, routing, time.perf_counter() - started, n_seq * recipe.seq_len
        )
        self.step += 1
        self.tokens += outcome.tokens
        self.train_s += outcome.seconds
        self._interval_tokens += outcome.tokens
        self._interval_time += outcome.seconds
        self.final_train_loss = ce_total
        if self.step == 1 and math.isnan(self.first_loss):
            self.first_loss = ce_total
        return outcome

    def divergence(self, outcome: StepOutcome) -> str:
        """Why this step counts as diverged ('' if it does not)."""
        limit = self.spec.recipe.diverge_factor
        if math.isfinite(outcome.train_loss) and outcome.train_loss <= limit * self.first_loss:
            return ""
        return f"train loss {outcome.train_loss:.4g} at step {self.step} (first {self.first_loss:.4g}, limit × {limit})"

    def log(self, outcome: StepOutcome, last: bool, diverged: bool) -> None:
        """A curve row at the logging cadence (with the held-out loss at the eval cadence and
        at the end), the routing shares, and the progress callback."""
        recipe = self.spec.recipe
        if not (self.step % recipe.log_every == 0 or self.step == 1 or last):
            return
        eval_loss = math.nan
        if (self.step % recipe.eval_every == 0 or last) and not diverged:
            eval_loss = evaluate(self.model, self.held_out, self.device, self.autocast)
        load, dropped, recycled = _routing_stats(outcome.routing, self.spec.model.n_experts)
        for layer, stats in enumerate(outcome.routing):
            for expert, fraction in enumerate(stats.expert_fraction.tolist()):
                self.routing_rows.append((self.step, layer, expert, fraction))
        self.rows.append(
            {
                "step": self.step,
                "tokens": self.tokens,
                "flops": self.tokens * self.accounting.flops_per_token,
                "train_loss": outcome.train_loss,
                "eval_loss": eval_loss,
                "lr": self.optimizer.param_groups[0]["lr"],
                "grad_norm": outcome.grad_norm,
                "tokens_per_s": self._interval_tokens / self._interval_time
                if self._interval_time > 0
                else math.nan,
                "max_expert_load": load,
                "dropped_frac": dropped,
                "recycled_frac": recycled,
                "bias_spread": self.model.bias_spread(),
                "eval_bpb": eval_loss / math.log(2) * self.tokens_per_byte,
                "grad_noise_scale": self.noise.value,
            }
        )
        self._interval_tokens, self._interval_time = 0, 0.0
        if self.progress is not None:
            self.progress(
                {"step": self.step, "total_steps": self.plan.total_steps, **self.rows[-1]}
            )

    # -- the loop ------------------------------------------------------------------------

    def run(
        self,
        until: int,
        out_dir: Path,
        checkpoints: bool,
        states_at: list[int] | tuple = (),
    ) -> tuple[RunStatus, str]:
        """Train to step `until` on the run's own schedule, or — given `states_at`, as a WSD
        trunk — on the plateau, saving the full state at each of those steps. Returns
        (status, error)."""
        total = None if states_at else self.plan.total_steps  # None: the plateau, no cooldown
        recipe = self.spec.recipe
        last_checkpoint = time.monotonic()
        while self.step < until:
            self.set_lr(total)
            outcome = self.train_step()
            why = self.divergence(outcome)
            self.log(outcome, last=self.step == until or bool(why), diverged=bool(why))
            if why:
                return RunStatus.DIVERGED, why
            if self.step in states_at:
                _save_checkpoint(state_path(out_dir, self.step), self.state_dict())
                self.write_curve(out_dir)
            due = (
                self.step % recipe.checkpoint_every == 0
                or time.monotonic() - last_checkpoint > 60 * recipe.checkpoint_minutes
            )
            if self.world > 1:  # a sharded checkpoint is collective: every rank or none
                due = mean_over_ranks(float(due)) > 0
            if checkpoints and due and self.step < until:
                self.checkpoint(out_dir)
                self.write_curve(out_dir)
                last_checkpoint = time.monotonic()
        return RunStatus.COMPLETED, ""

    def _mixture_record(self) -> dict | None:
        """Each source's weight, its realised share of the sequences trained on, the tokens
        it gave and the passes over its own data (repetition is per source)."""
        train = self.data.train
        if not self.data.parts:
            return None
        recipe, plan = self.spec.recipe, self.plan
        sizes = [
            recipe.batch_size if step < plan.full_steps else plan.tail_sequences
            for step in range(self.step)
        ]
        shares = train.realised(sizes, self.spec.seed)
        return {
            name: {
                "weight": float(weight),
                "realised": float(share),
                "tokens": float(share * self.tokens),
                "unique_tokens": len(tokens),
                "epochs": float(share * self.tokens / len(tokens)),
            }
            for name, weight, share, tokens in zip(
                train.names, train.weights, shares, train.arrays, strict=True
            )
        }

    def write_curve(self, out_dir: Path) -> None:
        if self.rank == 0:  # every rank logs the same curve; one writes it
            _write_curve(out_dir, self.name, self.rows, self.routing_rows)

    def finish(self, out_dir: Path, status: RunStatus, error: str) -> RunResult:
        """The curve, run.json (which marks the run finished) and the final weights."""
        self.write_curve(out_dir)
        result = RunResult(
            run_id=self.spec.run_id,
            status=status,
            tokens=self.tokens,
            flops=self.tokens * self.accounting.flops_per_token,
            steps=self.step,
            final_loss=self.rows[-1]["eval_loss"] if status == RunStatus.COMPLETED else math.nan,
            final_train_loss=self.final_train_loss,
            n_active=self.accounting.n_active,
            n_total=self.accounting.n_total,
            n_embedding=self.accounting.n_embedding,
            flops_per_token=self.accounting.flops_per_token,
            wall_s=time.perf_counter() - self.wall_start,
            train_s=self.train_s,
            peak_flops=self.peak,
            error=error,
            unique_tokens=len(self.data.train),
            epochs=self.tokens / len(self.data.train),
            final_bpb=self.rows[-1]["eval_bpb"] if status == RunStatus.COMPLETED else math.nan,
            mixture=self._mixture_record(),
            grad_noise_scale=self.noise.value,
        )
        weights = full_model_state(self.model) if self.world > 1 else self.model.state_dict()
        if self.rank == 0:
            _write_run_json(out_dir, self.spec, result)
            # the final weights, for whoever wants the model; run.json marks it finished
            _save_checkpoint(
                out_dir / CHECKPOINT, {"model": weights, "step": self.step, "final": True}
            )
        return result


def _full(value: torch.Tensor) -> float:
    """A norm as a number (a sharded DTensor's reduced over the ranks first)."""
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)


def _grad_norm(model: torch.nn.Module) -> torch.Tensor:
    """The norm of the gradient accumulated so far, as a tensor (no host sync)."""
    return torch.nn.utils.get_total_norm(
        [p.grad for p in model.parameters() if p.grad is not None], foreach=True
    )


def _write_curve(out_dir: Path, run_id: str, rows: list[dict], routing_rows: list[tuple]) -> None:
    """curve.parquet (the DESIGN's columns) and routing.parquet (step, layer, expert, fraction:
    each routed expert's share of the layer's assignments at each logged step)."""
    table = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    table.insert(0, "run_id", run_id)
    atomic_write_parquet(out_dir / CURVE_FILE, table.astype({"step": "int64", "tokens": "int64"}))
    routing = pd.DataFrame(routing_rows, columns=["step", "layer", "expert", "fraction"])
    atomic_write_parquet(out_dir / "routing.parquet", routing)
