"""The results store: the one data contract between sweeps, fitting and analysis.

One folder per sweep (`results/<sweep>/`): `sweep.yaml`, `runs.parquet` (one row per planned
run), `curves.parquet` (one row per logged point), `runs/<run_id>/`, `fit.json`, `report/`.
Writes are atomic (write beside, then rename); loading checks the schema and names the file
and column that is wrong in one line. No pickle anywhere. No torch or ray import here.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from moescale.errors import UserError


class RunStatus(str, Enum):
    """Where a planned run stands; runs.parquet's `status` column holds its value."""

    PLANNED = "planned"  # no record yet
    RUNNING = "running"  # a trial is training it now
    COMPLETED = "completed"
    FAILED = "failed"  # crashed (its reason in `error`); trained again by the next sweep
    DIVERGED = "diverged"  # its loss blew up: a result, kept with its curve

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.DIVERGED})  # never trained again
ENDED = FINISHED | {RunStatus.FAILED}  # no trial is working on it
STATUSES = tuple(status.value for status in RunStatus)
# the results folder's names (docs/design.md, "The results store"); paths come from SweepFolder
RUNS_FILE = "runs.parquet"
CURVES_FILE = "curves.parquet"
FIT_FILE = "fit.json"
SPEC_FILE = "sweep.yaml"
VALIDATIONS = "validations.json"  # what `moescale validate` planned, predicted and scored
NEXT_RUNS = "next_runs.json"  # what `moescale suggest` chose, and the interval it expects
RUN_RECORD = "run.json"  # a run's own record, in runs/<run_id>/ beside its curve
CURVE_FILE = "curve.parquet"

# column → pandas dtype family: "str", "int", "float", "bool"
RUNS_SCHEMA: dict[str, str] = {
    "run_id": "str",
    "sweep": "str",
    "status": "str",
    "budget_flops": "float",
    "n_active": "int",
    "n_total": "int",
    "n_embedding": "int",
    "flops_per_token": "float",
    "tokens": "int",
    "flops": "float",
    "final_loss": "float",
    "final_train_loss": "float",
    "d_model": "int",
    "n_layers": "int",
    "n_heads": "int",
    "n_kv_heads": "int",
    "cla_share": "int",
    "n_experts": "int",
    "top_k": "int",
    "n_shared_experts": "int",
    "expert_hidden": "int",
    "seq_len": "int",
    "vocab_size": "int",
    "lr": "float",
    "batch_tokens": "int",
    "seed": "int",
    "wall_s": "float",
    "train_s": "float",
    "peak_flops": "float",
    "error": "str",
}

# the columns a sweep adds after those (sweeps/store.py writes them; a runs table from elsewhere
# may lack them): its plan, validation runs, repeated data, WSD branches, MoE variants, tuning
RUNS_SWEEP_COLUMNS = (
    "budget_index",
    "steps",
    "extension",
    "tokens_per_param",
    "validation",
    "unique_tokens",
    "epochs",
    "trunk_id",
    "branch_step",
    "flops_trained",
    "variant",
    "variant_index",
    "granularity",
    "routed_lr_scale",
    "untuned",
    "final_bpb",  # final_loss in bits per byte of the held-out text (NaN: text unknown, or older)
    # the MoE recipe (models/config.py), so a recipe variant is told from its shape's reference
    "score_func",
    "route_norm",
    "balance",
    "n_dense_layers",
)

CURVES_SCHEMA: dict[str, str] = {
    "run_id": "str",
    "step": "int",
    "tokens": "int",
    "flops": "float",
    "train_loss": "float",
    "eval_loss": "float",
    "lr": "float",
    "grad_norm": "float",
    "tokens_per_s": "float",
    "max_expert_load": "float",
    "dropped_frac": "float",
    "recycled_frac": "float",
}
# written by every run since they were added, absent from older curves (so never required)
CURVES_LATER_COLUMNS = (
    "bias_spread",  # balance: bias — the widest layer's max − min selection bias; else NaN
    "eval_bpb",  # eval_loss in bits per byte of the held-out text (NaN: its text unknown)
    # B_noise = tr Σ / |G|², tokens (training/noise_scale.py; NaN: not yet measurable)
    "grad_noise_scale",
)
CURVE_COLUMNS = [*list(CURVES_SCHEMA)[1:], *CURVES_LATER_COLUMNS]  # a run's own, less run_id

_KIND_CHECKS = {
    "str": pd.api.types.is_string_dtype,
    "int": pd.api.types.is_integer_dtype,
    "float": pd.api.types.is_numeric_dtype,
    "bool": pd.api.types.is_bool_dtype,
}


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


_OUTPUTS: list[list[Path]] = []  # the open `one_output` blocks, each with what it wrote


@contextmanager
def one_output():
    """Files and folders written inside this block are one output (a report, a figure set):
    if the block fails, the ones it wrote are removed, so nothing half-written is left."""
    written: list[Path] = []
    _OUTPUTS.append(written)
    try:
        yield
    except BaseException:
        for path in reversed(written):
            if path.is_dir():
                with suppress(OSError):
                    path.rmdir()  # only if left empty
            else:
                path.unlink(missing_ok=True)
        raise
    finally:
        _OUTPUTS.remove(written)


def _record(path: Path) -> None:
    for written in _OUTPUTS:
        written.append(path)


def _make_folder(folder: Path) -> None:
    """mkdir -p, recording each folder it creates for `one_output`."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        _record(made)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync, then rename over `path`. A
    failure (a full disk, a read-only folder) is a one-line UserError naming the path and the
    reason, with the temporary file removed."""
    path = Path(path)
    tmp = None
    try:
        _make_folder(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        # mkstemp makes the file 0600; results are for the group to read, as any file would be
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with suppress(OSError):
                Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            reason = err.strerror or err.__class__.__name__
            raise UserError(f"{path}: cannot write ({reason})") from None
        raise
    _record(path)


def completed(runs: pd.DataFrame) -> pd.DataFrame:
    """The completed runs of a table (all of a table without a status column: a published
    table's points are finished runs). Every law is fitted on these alone."""
    return runs[runs["status"] == RunStatus.COMPLETED] if "status" in runs else runs


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, default=_json_default) + "\n").encode())


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def atomic_write_parquet(path: str | os.PathLike, table: pd.DataFrame) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not readable JSON ({err.__class__.__name__})") from None


def read_parquet(
    path: str | os.PathLike,
    schema: dict[str, str] | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Read a Parquet table (or some of its `columns`); a missing or corrupted file, or a
    column missing from `schema` or of the wrong type, is a one-line UserError naming the file
    and the column.

    Read through one open handle: `pq.read_table(path)` opens the path once for the footer and
    again for the pages, and a file replaced in between (a live run rewriting its curve) mixed
    the two ("Page was smaller than expected": 237 of 4,282 reads beside a rewriting thread,
    none through one handle)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with pa.OSFile(str(path), "rb") as source:
            table = pq.read_table(source, columns=columns).to_pandas()
    except (OSError, pa.ArrowException) as err:
        raise UserError(f"{path}: not a readable Parquet file ({_first_line(err)})") from None
    if schema:
        check_columns(table, schema, str(path))
    return table


def check_columns(table: pd.DataFrame, schema: dict[str, str], source: str) -> None:
    for column, kind in schema.items():
        if column not in table.columns:
            raise UserError(f"{source}: missing column '{column}'")
        series = table[column]
        if series.isna().all():
            continue  # all-missing columns (e.g. 'error' on a clean sweep) have no type to check
        if not _KIND_CHECKS[kind](series.dtype):
            raise UserError(f"{source}: column '{column}' should be {kind}, found {series.dtype}")


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__


@dataclass(frozen=True)
class SweepFolder:
    """A sweep's results folder: the one place that names its files and reads them back."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def runs_path(self) -> Path:
        return self.root / RUNS_FILE

    @property
    def curves_path(self) -> Path:
        return self.root / CURVES_FILE

    @property
    def fit_path(self) -> Path:
        return self.root / FIT_FILE

    @property
    def spec_path(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def validations_path(self) -> Path:
        return self.root / VALIDATIONS

    @property
    def next_runs_path(self) -> Path:
        return self.root / NEXT_RUNS

    def run_dir(self, run_id: str) -> Path:
        """runs/<run_id>/: the run's record (RUN_RECORD), curve, checkpoint and trial.json."""
        return self.root / "runs" / run_id

    def trunk_dir(self, trunk_id: str) -> Path:
        """trunks/<trunk_id>/: a WSD trunk's curve, checkpoint and plateau states."""
        return self.root / "trunks" / trunk_id

    def runs(self) -> pd.DataFrame:
        """runs.parquet, schema-checked."""
        if not self.root.is_dir():
            raise UserError(f"{self.root}: no such results folder")
        if not self.runs_path.exists():
            raise UserError(f"{self.root}: empty results folder (no {RUNS_FILE})")
        runs = read_parquet(self.runs_path, RUNS_SCHEMA)
        unknown = sorted(set(runs["status"].dropna()) - set(STATUSES))
        if unknown:
            raise UserError(f"{self.runs_path}: column 'status' has unknown value '{unknown[0]}'")
        return runs

    def curves(self) -> pd.DataFrame | None:
        """curves.parquet, schema-checked; None where there is none (curves are optional:
        every law but the envelope fits without them)."""
        if not self.curves_path.exists():
            return None
        return read_parquet(self.curves_path, CURVES_SCHEMA)

    def validations(self) -> list[dict]:
        """validations.json's records (none where there is no file)."""
        return read_json(self.validations_path) if self.validations_path.exists() else []


def state_path(trunk_dir: Path, step: int) -> Path:
    """Where a trunk keeps its state at `step`, the branch point of one or more branches."""
    return Path(trunk_dir) / f"state-{step:09d}.pt"


def load_runs(results_dir: str | os.PathLike) -> pd.DataFrame:
    """`runs.parquet` of a sweep folder, schema-checked."""
    return SweepFolder(results_dir).runs()


def load_curves(results_dir: str | os.PathLike) -> pd.DataFrame:
    """`curves.parquet` of a sweep folder, schema-checked (an error where it is missing)."""
    return read_parquet(SweepFolder(results_dir).curves_path, CURVES_SCHEMA)
