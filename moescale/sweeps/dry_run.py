"""`moescale sweep --dry-run`: the plan as a table with totals and estimated wall time."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import numpy as np
import pandas as pd
from rich.table import Table

from moescale.sweeps.plan import Plan, Repetition
from moescale.sweeps.spec import SweepSpec

PROBE_MAX_PARAMS = 20e6  # larger models are not probed on this machine
ASSUMED_SHARE_OF_PEAK = 0.4


def probe_throughput(
    spec: SweepSpec, plan: Plan, steps: int = 12
) -> tuple[Callable[[float], float], str]:
    """Achieved training FLOP/s of one trial as a function of n_active: a few steps of the
    plan's smallest, median and largest models (in a throwaway folder), interpolated in
    log n_active. Models too large to probe on a CPU get 40% of the measured matmul peak.
    Returns (n_active → FLOP/s, how it was found)."""
    import torch

    from moescale.training import train_run
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
            probe = run.spec.model_copy(
                update={"recipe": recipe, "tokens": steps * recipe.batch_tokens}
            )
            result = train_run(probe, os.path.join(folder, run.run_id))
            sizes.append(np.log(n_active))
            rates.append(result.flops / result.train_s)
    return (
        lambda n: float(np.interp(np.log(n), sizes, rates))
    ), f"probed {len(sizes)} sizes × {steps} steps"


def plan_table(
    spec: SweepSpec,
    plan: Plan,
    flops_per_s: Callable[[float], float],
    how: str,
    repeats: Repetition | None = None,
) -> tuple[Table, pd.DataFrame]:
    frame = plan.table()
    rates = frame["n_active"].map(flops_per_s)
    # a branch's time is what it adds: its cooldown and the stretch of trunk it first needs
    frame["est_wall_s"] = frame["flops_trained"] / rates
    frame["epochs"] = frame["run_id"].map(repeats.epochs) if repeats else np.nan
    table = Table(title=f"sweep '{spec.name}': {len(frame)} runs over {len(spec.budgets)} budgets")
    branched = bool(frame["trunk_id"].astype(bool).any())
    columns = ["budget (FLOPs)", "N asked → built", "n_total", "D (tokens)", "tokens/param",
               "passes", "steps"] + (["trunk", "branch at step"] if branched else []) + ["est. wall"]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for row in frame.itertuples():
        over = repeats is not None and row.epochs > repeats.threshold
        cells = [
            f"{row.budget_flops:.3g}", f"{row.asked:,.0f} → {row.n_active:,}", f"{row.n_total:,}", f"{row.tokens:,}",
            f"{row.tokens_per_param:.1f}", "?" if np.isnan(row.epochs) else f"{row.epochs:.2f}", f"{row.steps:,}",
        ] + ([row.trunk_id[:7] or "—", f"{row.branch_step:,}" if row.trunk_id else "—"] if branched else [])  # fmt: skip
        table.add_row(*cells, f"{row.est_wall_s:,.0f} s", style="yellow" if over else None)
    parallel = (
        max(1, int((os.cpu_count() or 1) // spec.resources.cpus)) if spec.resources.gpus == 0 else 1
    )
    nominal = float((frame["tokens"] * frame["flops_per_token"]).sum())
    total_flops = float(frame["flops_trained"].sum())
    serial = float(frame["est_wall_s"].sum())
    table.caption = (
        f"total {total_flops:.3g} FLOPs, {frame['tokens'].sum():,} tokens; est. {serial / 60:.1f} min of trial time, "
        f"~{serial / parallel / 60:.1f} min with {parallel} trials at a time here ({how}: {rates.min() / 1e9:.1f}-{rates.max() / 1e9:.1f} GFLOP/s per trial)"
    )
    if branched:
        separate = float((frame["tokens"] * frame["flops_per_token"] / rates).sum())
        table.caption += (
            f"\nbranched: {frame['trunk_id'].nunique()} WSD trunks, {len(frame)} cooldown branches; "
            f"{total_flops:.3g} FLOPs really trained against {nominal:.3g} for the same grid run "
            f"separately ({nominal / total_flops:.2f}× more), est. {serial / 60:.1f} against "
            f"{separate / 60:.1f} min of trial time"
        )
    if repeats is not None:
        table.caption += (
            f"\npasses = tokens ÷ the corpus's {repeats.unique_tokens:,} unique training tokens; "
            f"{len(repeats.over(plan))} run(s) beyond {repeats.threshold:g} (yellow); every planned "
            f"size stays within {repeats.threshold:g} passes up to {repeats.largest_budget(plan):.3g} FLOPs"
        )
    return table, frame
