"""`moescale sweep --dry-run`: the plan as a table with totals and estimated wall time."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import numpy as np
import pandas as pd
from rich.table import Table

from moescale.sweeps.plan import Plan, Repetition
from moescale.sweeps.progress import format_duration
from moescale.sweeps.spec import SweepSpec
from moescale.training.hardware import Hardware
from moescale.training.memory import HEADROOM, Fit, fit_to_device

PROBE_MAX_PARAMS = 20e6  # larger models are not probed on this machine
ASSUMED_SHARE_OF_PEAK = 0.4


def probe_throughput(
    spec: SweepSpec, plan: Plan, steps: int = 12
) -> tuple[Callable[[float], float], str]:
    """Achieved training FLOP/s of one trial as a function of n_active: a few steps of the
    plan's smallest, median and largest models on random tokens of the sweep's vocabulary
    (the corpus is never read; nothing is kept), interpolated in log n_active. Models too
    large to probe on a CPU get 40% of the measured matmul peak. Returns (n_active →
    FLOP/s, how it was found)."""
    import torch

    from moescale.training import train_run
    from moescale.training.data import DataSpec
    from moescale.training.hardware import matmul_peak, pick_device

    runs = sorted(plan.runs, key=lambda r: r.n_active)
    torch.set_num_threads(max(1, int(spec.resources.cpus)))
    if runs[len(runs) // 2].n_total > PROBE_MAX_PARAMS and pick_device(spec.device).type == "cpu":
        rate = ASSUMED_SHARE_OF_PEAK * matmul_peak("cpu")
        return (lambda n: rate), f"assumed {ASSUMED_SHARE_OF_PEAK:.0%} of the measured peak"
    probes = {run.n_active: run for run in (runs[0], runs[len(runs) // 2], runs[-1])}
    sizes, rates = [], []
    with tempfile.TemporaryDirectory() as folder:
        for n_active, run in sorted(probes.items()):
            recipe = run.spec.recipe.model_copy(
                update={
                    "log_every": 10**9,
                    "eval_every": 10**9,
                    "eval_tokens": run.spec.recipe.seq_len,
                }
            )
            synthetic = DataSpec(source="synthetic", vocab_size=run.spec.model.vocab_size)
            probe = run.spec.model_copy(
                update={"recipe": recipe, "tokens": steps * recipe.batch_tokens, "data": synthetic}
            )
            result = train_run(probe, os.path.join(folder, run.run_id))
            sizes.append(np.log(n_active))
            rates.append(result.flops / result.train_s)
    return (
        lambda n: float(np.interp(np.log(n), sizes, rates))
    ), f"probed {len(sizes)} sizes × {steps} steps"


def compact(number: float) -> str:
    """A count for a table cell: with separators below a million, else 233.8M or 1.63G."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(number) >= scale:
            return f"{number / scale:.4g}{suffix}"
    return f"{number:,.0f}"


def fit_plan(plan: Plan, hardware: Hardware, max_devices: int = 64) -> dict[str, Fit]:
    """How each planned run fits `hardware`: devices, micro-batch and memory per device."""
    fits = {}
    for run in plan.runs:
        recipe = run.spec.recipe
        fits[run.run_id] = fit_to_device(
            run.spec.model,
            recipe.seq_len,
            recipe.micro_batch_tokens or recipe.batch_tokens,
            recipe.precision,
            hardware.memory,
            max_devices,
        )
    return fits


def hardware_rates(
    spec: SweepSpec, hardware: Hardware, mfu: float, fits: dict[str, Fit]
) -> Callable[[str], float]:
    """run id → the FLOP/s of its trial: its devices × the target's peak × the assumed MFU."""
    peak = hardware.peak(spec.recipe.precision)

    def rate(run_id: str) -> float:
        fit = fits[run_id]
        return (fit.memory.devices if fit.memory else np.nan) * peak * mfu

    return rate


def _plan_caption(
    spec: SweepSpec,
    plan: Plan,
    frame: pd.DataFrame,
    rates: pd.Series,
    how: str,
    repeats: Repetition | None,
    fits: dict[str, Fit] | None,
    hardware: Hardware | None,
) -> str:
    """The plan table's totals: FLOPs and tokens, device-hours and memory for `hardware` (or
    trial time here), what WSD branching saves, and passes over the corpus."""
    branched = bool(frame["trunk_id"].astype(bool).any())
    nominal = float((frame["tokens"] * frame["flops_per_token"]).sum())
    total_flops = float(frame["flops_trained"].sum())
    serial = float(frame["est_wall_s"].sum())
    if fits:
        device_s = float((frame["est_wall_s"] * frame["devices"]).sum())
        caption = (
            f"total {total_flops:.3g} FLOPs, {frame['tokens'].sum():,} tokens; for {hardware.name} "
            f"({hardware.peak(spec.recipe.precision) / 1e12:,.0f} TFLOP/s {spec.recipe.precision}, "
            f"{hardware.memory / 1e9:,.0f} GB per device; {hardware.source}) {how}: "
            f"{device_s / 3600:,.1f} device-hours"
            f"\nmemory per device = (fp32 weights + gradients + AdamW states) / devices + "
            f"activations at the micro-batch + one block gathered (FSDP) + {HEADROOM:.0%} headroom"
        )
        refused = int((frame["devices"] == 0).sum())
        if refused:
            caption += f"\n{refused} run(s) refused: they fit no number of devices up to the limit"
        if (frame["devices"] > spec.resources.workers).any():
            caption += (
                f"\nruns needing more devices than resources.workers ({spec.resources.workers}) "
                "would run out of memory: set workers to at least the most devices shown (each "
                "trial is then sharded over that many processes with FSDP2)"
            )
    else:
        parallel = (
            max(1, int((os.cpu_count() or 1) // spec.resources.cpus))
            if spec.resources.gpus == 0
            else 1
        )
        caption = (
            f"total {total_flops:.3g} FLOPs, {frame['tokens'].sum():,} tokens; est. {serial / 60:.1f} min of trial time, "
            f"~{serial / parallel / 60:.1f} min with {parallel} trials at a time here ({how}: {rates.min() / 1e9:.1f}-{rates.max() / 1e9:.1f} GFLOP/s per trial)"
        )
    if branched:
        separate = float((frame["tokens"] * frame["flops_per_token"] / rates).sum())
        caption += (
            f"\nbranched: {frame['trunk_id'].nunique()} WSD trunks, {len(frame)} cooldown branches; "
            f"{total_flops:.3g} FLOPs really trained against {nominal:.3g} for the same grid run "
            f"separately ({nominal / total_flops:.2f}× more), est. {serial / 60:.1f} against "
            f"{separate / 60:.1f} min of trial time"
        )
    if repeats is not None:
        caption += (
            f"\npasses = tokens ÷ the corpus's {repeats.unique_tokens:,} unique training tokens; "
            f"{len(repeats.over(plan))} run(s) beyond {repeats.threshold:g} (yellow); every planned "
            f"size stays within {repeats.threshold:g} passes up to {repeats.largest_budget(plan):.3g} FLOPs"
        )
    return caption


def plan_table(
    spec: SweepSpec,
    plan: Plan,
    flops_per_s: Callable[[float], float],
    how: str,
    repeats: Repetition | None = None,
    fits: dict[str, Fit] | None = None,
    hardware: Hardware | None = None,
) -> tuple[Table, pd.DataFrame]:
    """The plan, a row per run. With `fits` (planning for `hardware`): each run's memory per
    device, devices and micro-batch, and `flops_per_s` takes the run id instead of N."""
    frame = plan.table()
    rates = frame["run_id" if fits else "n_active"].map(flops_per_s)
    # a branch's time is what it adds: its cooldown and the stretch of trunk it first needs
    frame["est_wall_s"] = frame["flops_trained"] / rates
    frame["epochs"] = frame["run_id"].map(repeats.epochs) if repeats else np.nan
    table = Table(title=f"sweep '{spec.name}': {len(frame)} runs over {len(spec.budgets)} budgets")
    branched = bool(frame["trunk_id"].astype(bool).any())
    tuned = list(spec.tune.axes()) if spec.tune else []
    columns = ["budget (FLOPs)"] + (["variant"] if spec.variants else []) + tuned + [
        "N asked → built", "n_total", "D (tokens)", "tokens/param", "passes", "steps",
    ] + (["trunk", "branch at step"] if branched else [])  # fmt: skip
    if fits:
        columns += ["GiB/device", "devices", "micro-batch (tokens)", "changed to fit"]
        for name, value in (
            ("memory_per_device", lambda f: f.memory.per_device if f.memory else np.nan),
            ("activations", lambda f: f.memory.activations if f.memory else np.nan),
            ("states", lambda f: f.memory.states if f.memory else np.nan),
            ("devices", lambda f: f.memory.devices if f.memory else 0),
            ("micro_batch_tokens", lambda f: f.memory.micro_batch_tokens if f.memory else 0),
            ("changed_to_fit", lambda f: f.changed),
        ):
            frame[name] = frame["run_id"].map(lambda r, value=value: value(fits[r]))
    columns.append("est. wall")
    for column in columns:
        table.add_column(column, justify="right")
    for row in frame.itertuples():
        over = repeats is not None and row.epochs > repeats.threshold
        cells = [f"{row.budget_flops:.3g}"] + ([row.variant] if spec.variants else []) + [
            f"{getattr(row, axis):.3g}" for axis in tuned
        ] + [
            f"{compact(row.asked)} → {compact(row.n_active)}", compact(row.n_total), compact(row.tokens),
            f"{row.tokens_per_param:.1f}", "?" if np.isnan(row.epochs) else f"{row.epochs:.2f}", f"{row.steps:,}",
        ] + ([row.trunk_id[:7] or "—", f"{row.branch_step:,}" if row.trunk_id else "—"] if branched else [])  # fmt: skip
        refused = bool(fits) and row.devices == 0
        if fits:
            cells += ["—", "—", "—", f"refused: {row.changed_to_fit}"] if refused else [
                f"{row.memory_per_device / 2**30:,.1f}", f"{row.devices}",
                compact(row.micro_batch_tokens), row.changed_to_fit or "as planned",
            ]  # fmt: skip
        wall = "—" if refused else format_duration(row.est_wall_s)
        style = "red" if refused else "yellow" if over else None
        table.add_row(*cells, wall, style=style)
    table.caption = _plan_caption(spec, plan, frame, rates, how, repeats, fits, hardware)
    return table, frame


def _recipe(config) -> str:
    """The MoE recipe where it is not the family's default (softmax top-k, aux loss)."""
    parts = [config.score_func] if config.score_func != "softmax" else []
    parts += ["norm"] if config.route_norm else []
    parts += [config.balance] if config.balance != "aux_loss" else []
    parts += [f"{config.n_dense_layers} dense first"] if config.n_dense_layers else []
    return f", {' + '.join(parts)}" if parts else ""


def variant_table(spec: SweepSpec, plan: Plan) -> Table:
    """The sweep's MoE variants side by side at every planned size: what each activates,
    holds and costs per token, and the memory of its weights and optimizer states."""
    table = Table(
        title=f"sweep '{spec.name}': {len(spec.variants)} variants at equal activated size",
        caption="N = n_active (activated parameters, input embedding excluded); FLOPs per token "
        "counted exactly (train, 3 × forward); memory = fp32 weights + gradients + AdamW's two "
        "moments, 16 bytes per parameter of n_total",
    )
    for column in ("N asked", "variant", "experts (top-k) × width", "n_active", "n_total",
                   "FLOPs/token", "vs first", "weights + optimizer"):  # fmt: skip
        table.add_column(column, justify="right")
    first: dict[float, float] = {}
    shown = set()
    for run in sorted(plan.runs, key=lambda r: (r.asked, r.variant_index)):
        key = (run.asked, run.variant)
        if key in shown:
            continue
        shown.add(key)
        config = run.spec.model
        ffn = (
            f"{config.n_experts} ({config.top_k}) × {config.expert_hidden}{_recipe(config)}"
            if config.is_moe
            else f"dense × {config.n_shared_experts * config.shared_hidden}"
        )
        base = first.setdefault(run.asked, run.flops_per_token)
        table.add_row(
            compact(run.asked), run.variant, ffn, f"{run.n_active:,}", f"{run.n_total:,}",
            f"{run.flops_per_token:.4g}", f"{run.flops_per_token / base:.3f}",
            f"{16 * run.n_total / 2**20:,.1f} MiB",
            end_section=run.variant_index == len(spec.variants) - 1,
        )  # fmt: skip
    return table
