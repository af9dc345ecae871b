"""Approach 1 (Hoffmann et al. 2022): from loss curves, the lowest loss reached at each FLOP
level across all runs, the N that reaches it, and the power law of that N in C."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from moescale.errors import UserError
from moescale.fitting.laws.powerlaw import PowerLaw, fit_power_law
from moescale.results import RunStatus, completed

BIAS_NOTE = (
    "read off every logged point of every curve: a point before the end of its run's schedule "
    "is not annealed, so its loss is higher than a run of that length would reach and the "
    "envelope favours the runs that are nearer their end — a biased reading, shown for "
    "comparison and never used for the headline"
)


ANNEALED_NOTE = (
    "read off the endpoints of WSD branches: each size's annealed losses at every budget "
    "(interpolated in log C between them), so every point is the end of a cooldown"
)


def branched(runs: pd.DataFrame) -> bool:
    """Whether the completed runs are WSD branches (sweeps with `branching: true`)."""
    if "trunk_id" not in runs:
        return False
    done = completed(runs)
    return bool(len(done)) and bool(done["trunk_id"].fillna("").astype(bool).all())


def annealed_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """One curve per WSD trunk from its completed branches' endpoints: (flops, final loss)
    at each budget, labelled by the trunk, for an envelope of annealed points only."""
    done = completed(runs)
    table = done.rename(columns={"final_loss": "eval_loss"})[
        ["trunk_id", "flops", "eval_loss", "n_active"]
    ]
    return table.rename(columns={"trunk_id": "run_id"}).sort_values(["run_id", "flops"])


@dataclass(frozen=True)
class EnvelopeFit:
    levels: pd.DataFrame  # flops, loss, n_active, run_id: the envelope's winner at each level
    n_law: PowerLaw  # N at the envelope ∝ C^exponent
    excluded: tuple[str, ...] = ()
    annealed: bool = False  # from WSD branch endpoints rather than unannealed curve points

    @property
    def note(self) -> str:
        return ANNEALED_NOTE if self.annealed else BIAS_NOTE

    @property
    def n_coef(self) -> float:
        return self.n_law.coef

    @property
    def n_exponent(self) -> float:
        return self.n_law.exponent

    def to_dict(self) -> dict:
        return {
            "n_law": self.n_law.to_dict(),
            "levels": self.levels.to_dict(orient="records"),
            "excluded": list(self.excluded),
            "annealed": self.annealed,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: dict) -> EnvelopeFit:
        return cls(
            levels=pd.DataFrame(data["levels"]),
            n_law=PowerLaw.from_dict(data["n_law"]),
            excluded=tuple(data.get("excluded", ())),
            annealed=bool(data.get("annealed", False)),
        )


def fit_envelope(
    curves: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    n_levels: int = 40,
    annealed: bool = False,
) -> EnvelopeFit:
    """The lower envelope of loss against FLOPs over all curves (interpolated in log FLOPs
    within each run's range), its winner's n_active per level, and N_env = coef·C^exponent.

    `curves` needs run_id, flops and eval_loss; n_active comes from `curves` or from `runs`
    (whose non-completed runs are left out and listed). Levels won by the smallest or largest
    size are flagged and left out of the law, as edge optima are in Approach 2.
    """
    excluded: list[str] = []
    if runs is not None:
        if "status" in runs:
            bad = runs[runs["status"] != RunStatus.COMPLETED]
            if len(bad):
                excluded.append(f"{len(bad)} run(s) not completed: their curves not used")
            runs = completed(runs)
        curves = curves[curves["run_id"].isin(runs["run_id"])]
        if "n_active" not in curves:
            curves = curves.merge(runs[["run_id", "n_active"]], on="run_id")
    for column in ("run_id", "flops", "eval_loss", "n_active"):
        if column not in curves:
            raise UserError(f"envelope fit: missing column '{column}'")
    curves = curves[np.isfinite(curves["eval_loss"]) & (curves["flops"] > 0)]
    if curves["run_id"].nunique() < 2:
        raise UserError("envelope fit: needs the curves of at least 2 runs")
    # up to the FLOPs that at least 3 runs reach (or all, with fewer): beyond that the
    # "envelope" is one run's tail, not a lower envelope
    reach = np.sort(curves.groupby("run_id")["flops"].max().to_numpy())[::-1]
    low, high = np.log(curves["flops"].min()), np.log(reach[min(2, len(reach) - 1)])
    levels = np.exp(np.linspace(low + 0.05 * (high - low), high, n_levels))
    sizes = np.sort(curves["n_active"].unique())
    best = np.full(n_levels, np.inf)
    winner_n = np.full(n_levels, np.nan)
    winner_id = np.empty(n_levels, dtype=object)
    for run_id, curve in curves.groupby("run_id"):
        curve = curve.sort_values("flops")
        lf = np.log(curve["flops"].to_numpy(float))
        inside = (np.log(levels) >= lf[0]) & (np.log(levels) <= lf[-1])
        if not inside.any():
            continue
        loss = np.interp(np.log(levels[inside]), lf, curve["eval_loss"].to_numpy(float))
        idx = np.flatnonzero(inside)
        better = loss < best[idx]
        best[idx[better]] = loss[better]
        winner_n[idx[better]] = curve["n_active"].iloc[0]
        winner_id[idx[better]] = run_id
    table = pd.DataFrame({"flops": levels, "loss": best, "n_active": winner_n, "run_id": winner_id})
    table = table[np.isfinite(table["loss"])]
    table["at_edge"] = table["n_active"].isin([sizes[0], sizes[-1]])
    usable = table[~table["at_edge"]]
    if usable["n_active"].nunique() < 2:
        raise UserError("envelope fit: fewer than 2 interior sizes win a FLOP level; no law to fit")
    if table["at_edge"].any():
        excluded.append(
            f"{int(table['at_edge'].sum())} FLOP level(s) won by the smallest or largest size"
        )
    return EnvelopeFit(
        levels=table.reset_index(drop=True),
        n_law=fit_power_law(usable["flops"], usable["n_active"]),
        excluded=tuple(excluded),
        annealed=annealed,
    )
