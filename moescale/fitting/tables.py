"""Tables from outside (published scaling-law data as CSV or Parquet) mapped onto our names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from moescale.errors import OptionError, UserError
from moescale.fitting.laws.compute_law import DEFAULT_LAW, ComputeLaw
from moescale.results import read_parquet

CANONICAL = ("n_active", "tokens", "flops", "final_loss", "budget_flops")


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV (plain or .gz) or Parquet file as a DataFrame; unreadable files are one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".parquet":
        return read_parquet(path)
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{path}: not a readable CSV file ({first})") from None


def map_columns(
    table: pd.DataFrame,
    columns: dict[str, str | None],
    compute_law: ComputeLaw | None = None,
    source: str = "table",
) -> tuple[pd.DataFrame, ComputeLaw | None]:
    """Rename the mapped source columns to our names (n_active, tokens, flops, final_loss,
    budget_flops) and derive what is missing: D = C/(a·N + b) or C = (a·N + b)·D through the
    compute law (6ND by default), and the budget as C itself. Returns the table and the law
    that derived D or C (None when the table had both): the fit must use that law, not fit
    one to FLOP counts it made itself."""
    law = compute_law or DEFAULT_LAW
    out = table.copy()
    for name, column in columns.items():
        if column is None or column == name:
            continue
        if column not in table:
            raise UserError(f"{source}: missing column '{column}' (mapped to {name})")
        out[name] = table[column]
    for name in ("n_active", "final_loss"):
        if name not in out:
            raise OptionError(
                f"{source}: missing column '{name}' (map one with "
                f"{{{'n_col' if name == 'n_active' else 'loss_col'}}})"
            )
    if "tokens" not in out and "flops" not in out:
        raise OptionError(
            f"{source}: needs a token column ({{d_col}}) or a FLOP column ({{flops_col}})"
        )
    for name in ("n_active", "final_loss", "tokens", "flops", "unique_tokens"):
        if name in out:
            values = pd.to_numeric(out[name], errors="coerce").to_numpy(float)
            if not np.all(np.isfinite(values)) or np.any(values <= 0):
                bad = columns.get(name) or name
                raise UserError(f"{source}: column '{bad}' has NaN or non-positive values")
            out[name] = values
    derived_by = law if "tokens" not in out or "flops" not in out else None
    if "tokens" not in out:
        out["tokens"] = law.tokens(out["flops"], out["n_active"])
    if "flops" not in out:
        out["flops"] = law.flops_per_token(out["n_active"]) * out["tokens"]
    if "budget_flops" not in out:
        out["budget_flops"] = out["flops"]
    if "flops_per_token" not in out:
        out["flops_per_token"] = out["flops"] / out["tokens"]
    return out, derived_by
