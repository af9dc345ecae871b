"""Running the `moescale` command as a user does, and checking its one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# configs/quick.yaml's family: a 2-layer MoE, 1 shared + 8 routed experts, top-1
QUICK_FAMILY = {"n_layers": 2, "n_experts": 8, "top_k": 1, "cla_share": 1, "gqa_ratio": 1,
                "qk_norm": False}  # fmt: skip


def moescale(
    *args: str, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moescale.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    """Exit code 2, one line on stderr naming the problem, and no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def as_runs_table(table):
    """A simulated table with every runs.parquet column a report reads (NaN or '' where the
    simulation has nothing to say), all completed."""
    import numpy as np

    from moescale.results import RUNS_SCHEMA

    table = table.copy()
    for column, kind in RUNS_SCHEMA.items():
        if column not in table:
            table[column] = "" if kind == "str" else np.nan
    table["status"] = "completed"
    return table
