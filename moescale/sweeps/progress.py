"""The live progress display of a running sweep, and the same summary read from disk."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import pandas as pd
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from moescale.results import (
    CURVE_FILE,
    ENDED,
    RunStatus,
    SweepFolder,
    completed,
    read_parquet,
)
from moescale.sweeps.plan import Plan


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def trial_time_left(runs: pd.DataFrame) -> str:
    """From disk alone: the FLOPs still to train at the finished runs' own FLOP/s, as trial
    time (divide by the trials that run at once for wall time). A branch's wall time is its
    cooldown's, so its rate is its cooldown FLOPs over it, and what is left is counted as
    the real cost (`flops_trained`)."""
    done = runs[(runs["status"] == RunStatus.COMPLETED) & (runs["wall_s"] > 0)]
    left = runs[~runs["status"].isin(ENDED)]
    if done.empty or left.empty:
        return ""
    own = _own_flops(done)
    rate = float(own.sum() / done["wall_s"].sum())  # FLOP/s of one trial, wall
    cost = left["flops_trained"] if "flops_trained" in left else _own_flops(left)
    seconds = float(cost.fillna(0).sum()) / rate
    return f"about {format_duration(seconds)} of trial time left at the finished runs' pace"


def _own_flops(runs: pd.DataFrame) -> pd.Series:
    """What each row trains in its own trial: all of a separate run, a branch's cooldown."""
    nominal = runs["tokens"] * runs["flops_per_token"]
    if "branch_step" not in runs:
        return nominal
    return nominal - runs["branch_step"].fillna(0) * runs["batch_tokens"] * runs["flops_per_token"]


def trunk_progress(results_dir: Path, runs: pd.DataFrame) -> str:
    """For a branched sweep: how far its WSD trunks have come (from their curves on disk)."""
    if "trunk_id" not in runs or not runs["trunk_id"].fillna("").astype(bool).any():
        return ""
    needed = runs[runs["trunk_id"].astype(bool)].groupby("trunk_id")["branch_step"].max()
    reached = {}
    for trunk_id in needed.index:
        path = SweepFolder(results_dir).trunk_dir(trunk_id) / CURVE_FILE
        reached[trunk_id] = (
            int(read_parquet(path, columns=["step"])["step"].max()) if path.exists() else 0
        )
    steps = sum(min(reached[t], needed[t]) for t in needed.index)
    whole = sum(reached[t] >= needed[t] for t in needed.index)
    return (
        f"WSD trunks: {whole} of {len(needed)} at their last branch point, "
        f"{steps:,} of {int(needed.sum()):,} plateau steps trained"
    )


def sweeps_in(folder: Path) -> list[Path]:
    """The sweep folders (holding runs.parquet) directly inside `folder`."""
    return sorted(p.parent for p in folder.glob("*/runs.parquet"))


def _flops_done_and_total(runs: pd.DataFrame, done: pd.Series, live: dict) -> tuple[float, float]:
    """FLOPs trained so far and in all. With WSD branches the total is the real cost (trunks
    once, each branch's cooldown); live trials report their own FLOPs (a branch: its cooldown
    only), and a finished row counts its own part (from disk alone, its share of trunk too)."""
    if "flops_trained" not in runs or runs["flops_trained"].isna().all():
        own = runs["tokens"] * runs["flops_per_token"]
        total = float(own.sum())
    else:
        total = float(runs["flops_trained"].sum())
        own = _own_flops(runs) if live else runs["flops_trained"]
    ended = set(runs.loc[done, "run_id"])
    return float(own[done].sum()) + sum(v for k, v in live.items() if k not in ended), total


def status_tables(
    runs: pd.DataFrame, elapsed: float | None = None, live_flops: dict | None = None
) -> Group:
    """Runs done / total, FLOPs done / total, ETA, and each budget's best loss so far."""
    live_flops = live_flops or {}
    done = runs["status"].isin(ENDED)
    flops_done, flops_total = _flops_done_and_total(runs, done, live_flops)
    head = Table.grid(padding=(0, 2))
    counts = runs["status"].value_counts()
    line = (
        f"runs {int(done.sum())}/{len(runs)}  ({', '.join(f'{v} {k}' for k, v in counts.items())})"
    )
    flops = (
        f"FLOPs {flops_done:.3g}/{flops_total:.3g} ({flops_done / flops_total:.0%})"
        if flops_total
        else ""
    )
    eta = ""
    if elapsed is not None and flops_done > 0:
        eta = f"elapsed {format_duration(elapsed)}, ETA {format_duration(elapsed * (flops_total - flops_done) / flops_done)}"
    head.add_row(line, flops, eta)
    left = trial_time_left(runs) if elapsed is None else ""
    if left:  # from disk: on a line of its own
        head.add_row(left, "", "")

    budgets = Table(title=None, show_edge=False)
    by_variant = "variant" in runs and runs["variant"].fillna("").astype(bool).any()
    keys = ["budget_flops"] + (["variant_index", "variant"] if by_variant else [])
    for column in ("budget", *(["variant"] if by_variant else []), "runs done", "best loss",
                   "at n_active", "bracketing"):  # fmt: skip
        budgets.add_column(column, justify="right")
    for key, group in runs.groupby(keys, sort=True):
        budget = key[0] if isinstance(key, tuple) else key
        done = completed(group)
        best, at = "", ""
        if len(done):
            row = done.loc[done["final_loss"].idxmin()]
            best, at = f"{row['final_loss']:.4f}", f"{int(row['n_active']):,}"
            # a size's loss: its best over any tuned values, averaged over seeds
            per_seed = done.groupby(["n_active", "seed"])["final_loss"].min()
            sizes = per_seed.groupby(level=0).mean().sort_index()
            if len(sizes) >= 3 and sizes.idxmin() in (sizes.index[0], sizes.index[-1]):
                at += " (edge)"
        extensions = group["extension"] if "extension" in group else pd.Series(dtype=int)
        bracket = f"{int((extensions != 0).sum())} added" if (extensions != 0).any() else ""
        done_here = group["status"].isin(ENDED).sum()
        budgets.add_row(
            f"{budget:.3g}", *([key[2]] if by_variant else []), f"{done_here}/{len(group)}",
            best, at, bracket,
        )  # fmt: skip
    return Group(head, budgets)


class SweepProgress:
    """Tracks trials as Ray reports them and renders `status_tables` live."""

    def __init__(self, results_dir: Path, plan: Plan, enabled: bool = True):
        self.results_dir, self.plan, self.enabled = results_dir, plan, enabled
        self.running: set[str] = set()
        self.flops: dict[str, float] = {}
        self.started = time.monotonic()
        self._live: Live | None = None

    def _render(self):
        path = SweepFolder(self.results_dir).runs_path
        runs = (
            read_parquet(path)
            if path.exists()
            else self.plan.table().assign(
                status=RunStatus.PLANNED.value, final_loss=math.nan, flops=0.0
            )
        )
        return status_tables(runs, time.monotonic() - self.started, self.flops)

    def update(self, run_id: str, result: dict) -> None:
        if "flops" in result:
            self.flops[run_id] = float(result["flops"])
        if self._live is not None:
            self._live.update(self._render())

    def finish(self, run_id: str) -> None:
        self.running.discard(run_id)
        if self._live is not None:
            self._live.update(self._render())

    @contextlib.contextmanager
    def live(self):
        if not self.enabled:
            yield
            return
        console = Console()
        with Live(self._render(), console=console, refresh_per_second=2, transient=False) as live:
            self._live = live
            try:
                yield
            finally:
                live.update(self._render())
                self._live = None
        console.line()
