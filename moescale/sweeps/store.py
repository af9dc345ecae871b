"""Consolidating a sweep's run folders into `runs.parquet` and `curves.parquet`."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from moescale.errors import UserError
from moescale.results import (
    CURVE_FILE,
    CURVES_SCHEMA,
    RUN_RECORD,
    RUNS_SCHEMA,
    RUNS_SWEEP_COLUMNS,
    RunStatus,
    SweepFolder,
    atomic_write_parquet,
    read_json,
    read_parquet,
)
from moescale.sweeps.plan import Plan, PlannedRun


def run_record(results_dir: Path, run_id: str) -> dict | None:
    """A run's run.json, or None if it has none (not started) or it is unreadable."""
    path = SweepFolder(results_dir).run_dir(run_id) / RUN_RECORD
    if not path.exists():
        return None
    try:
        return read_json(path)
    except UserError:
        return None


def finished_status(results_dir: Path, run_id: str) -> str | None:
    record = run_record(results_dir, run_id)
    return None if record is None else record.get("result", {}).get("status")


def _row(planned: PlannedRun, sweep: str, record: dict | None, running: bool) -> dict:
    config, recipe = planned.spec.model, planned.spec.recipe
    result = (record or {}).get("result", {})
    status = result.get("status") or (RunStatus.RUNNING if running else RunStatus.PLANNED).value
    return {
        "run_id": planned.run_id,
        "sweep": sweep,
        "status": status,
        "budget_flops": planned.budget_flops,
        "n_active": planned.n_active,
        "n_total": planned.n_total,
        "n_embedding": config.vocab_size * config.d_model,
        "flops_per_token": planned.flops_per_token,
        "tokens": int(result.get("tokens") or planned.tokens),
        "flops": float(result.get("flops") or planned.tokens * planned.flops_per_token),
        "final_loss": float(result.get("final_loss", math.nan)),
        "final_train_loss": float(result.get("final_train_loss", math.nan)),
        "d_model": config.d_model,
        "n_layers": config.n_layers,
        "n_heads": config.n_heads,
        "n_kv_heads": config.n_kv_heads,
        "cla_share": config.cla_share,
        "n_experts": config.n_experts,
        "top_k": config.top_k,
        "n_shared_experts": config.n_shared_experts,
        "expert_hidden": config.expert_hidden,
        "seq_len": recipe.seq_len,
        "vocab_size": config.vocab_size,
        "lr": recipe.peak_lr(config.d_model),
        "batch_tokens": recipe.batch_tokens,
        "seed": planned.spec.seed,
        "wall_s": float(result.get("wall_s", math.nan)),
        "train_s": float(result.get("train_s", math.nan)),
        "peak_flops": float(result.get("peak_flops", math.nan)),
        "error": result.get("error") or "",
        "budget_index": planned.budget_index,
        "steps": planned.steps,
        "extension": planned.extension,
        "tokens_per_param": planned.tokens_per_param,
        "validation": planned.validation,
        # NaN until the run has trained (and for runs recorded before moescale kept it)
        "unique_tokens": float(result.get("unique_tokens") or math.nan),
        "epochs": float(result.get("epochs", math.nan)),
        # a branch of a WSD trunk ('' and 0 for a run trained on its own), and the FLOPs
        # this row adds to the sweep's real cost (a branch: its cooldown and its new stretch
        # of trunk; the sum over the rows is what the sweep trained)
        "trunk_id": planned.trunk_id,
        "branch_step": planned.branch_step,
        "flops_trained": planned.flops_trained,
        # the MoE design variant ('' without variants) and the tuned recipe: `lr` and
        # `batch_tokens` above; `untuned` when every tuned axis is at the recipe's own value
        "variant": planned.variant,
        "variant_index": planned.variant_index,
        "granularity": planned.granularity,
        "routed_lr_scale": recipe.routed_lr_scale,
        "untuned": planned.untuned,
        "final_bpb": float(result.get("final_bpb", math.nan)),
        "score_func": config.score_func,
        "route_norm": config.route_norm,
        "balance": config.balance,
        "n_dense_layers": config.n_dense_layers,
    }


def consolidate(
    results_dir: Path, sweep: str, plan: Plan, running: set[str] | frozenset = frozenset()
) -> pd.DataFrame:
    """Rewrite runs.parquet (one row per planned run) and curves.parquet (every logged point
    of every run that has a curve) from the run folders; both writes are atomic."""
    rows, curves = [], []
    for planned in plan.runs:
        record = run_record(results_dir, planned.run_id)
        rows.append(_row(planned, sweep, record, planned.run_id in running))
        curve_path = SweepFolder(results_dir).run_dir(planned.run_id) / CURVE_FILE
        if curve_path.exists():  # written atomically: never seen half-written
            curves.append(read_parquet(curve_path, CURVES_SCHEMA))
    for trunk_id in plan.trunks():  # a trunk's plateau once; its branches hold their cooldowns
        curve_path = SweepFolder(results_dir).trunk_dir(trunk_id) / CURVE_FILE
        if curve_path.exists():
            curves.append(read_parquet(curve_path, CURVES_SCHEMA))
    runs = pd.DataFrame(rows, columns=list(RUNS_SCHEMA) + list(RUNS_SWEEP_COLUMNS))
    atomic_write_parquet(SweepFolder(results_dir).runs_path, runs)
    table = (
        pd.concat(curves, ignore_index=True)
        if curves
        else pd.DataFrame(columns=list(CURVES_SCHEMA))
    )
    atomic_write_parquet(
        SweepFolder(results_dir).curves_path, table.astype({"step": "int64", "tokens": "int64"})
    )
    return runs
