"""`moescale compare`: several sweeps (or variants) side by side — their isoFLOP optima, N_opt
laws and predictions at one common budget, on one figure and one table — for the everyday
question "did this change help"."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from moescale.analysis.style import C_LABEL, OKABE_ITO, figure, hover, save_figure, sci, styled
from moescale.errors import OptionError, UserError
from moescale.fitting.options import check_target_flops
from moescale.fitting.pipeline import FitReport, current_fit
from moescale.results import RunStatus, SweepFolder, atomic_write_bytes, load_runs, one_output


def load_fits(folders: list[Path]) -> dict[str, FitReport]:
    """Each folder's fit (fit.json when it matches its runs, else a fresh fit, kept in
    memory: compare reads its inputs and never writes into them), named by the folder."""
    if len(folders) < 2:
        raise UserError("compare: give at least two results folders")
    fits = {}
    for folder in folders:
        runs = load_runs(folder)
        curves = SweepFolder(folder).curves()
        name = folder.name if folder.name not in fits else str(folder)
        fits[name] = current_fit(folder, runs, curves, write=False)[0]
    return fits


def check_out(folders: list[Path], out: Path) -> None:
    """Refuse an output folder that is one of the inputs or inside one."""
    target = out.resolve()
    for folder in folders:
        source = folder.resolve()
        if target == source or source in target.parents:
            raise OptionError(
                f"compare: {{out}} {out} is inside the input {folder}; choose another folder"
            )


def comparison_table(fits: dict[str, FitReport], flops: float) -> pd.DataFrame:
    rows = []
    for name, fit in fits.items():
        predictions = fit.predict_at(flops)
        lead = fit.lead_method
        p = predictions.get(lead)
        interval = (p and p.n_opt_interval) or (np.nan, np.nan)
        exponent = fit.isoflop.n_law if fit.isoflop is not None else None
        rows.append(
            {
                "sweep": name,
                "runs fitted": fit.run_counts.get(RunStatus.COMPLETED.value, 0),
                "headline method": lead or "no law fitted",
                "N_opt exponent (isoFLOP)": np.nan if exponent is None else exponent.exponent,
                "N_opt at C": np.nan if p is None else p.n_opt,
                "N_opt 95% low": interval[0],
                "N_opt 95% high": interval[1],
                "loss at C": np.nan if p is None or p.loss_opt is None else p.loss_opt,
                "agreement": "" if fit.prediction is None else fit.prediction.agreement.verdict,
                # a sweep no law fits (one budget, too few runs) is shown, with why
                "note": "" if lead else "; ".join(fit.skipped.values()),
            }
        )
    return pd.DataFrame(rows)


@styled
def comparison_figure(fits: dict[str, FitReport], flops: float) -> Figure:
    """Left: every sweep's isoFLOP optima and N_opt law; right: the headline N_opt at the
    common budget with its interval, one marker per sweep."""
    fig, (left, right) = figure(1, 2, width=5.4, height=3.8)
    for i, (name, fit) in enumerate(fits.items()):
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        if fit.isoflop is not None:
            usable = fit.isoflop.interior
            dots = left.scatter(usable["budget"], usable["n_opt"], color=colour, s=22, label=name)
            hover(fig, dots, [
                f"{name}: budget C = {r.budget:.4g} FLOPs · optimal N = {r.n_opt:.4g} activated · loss {r.loss_opt:.4g} nats/token"
                for r in usable.itertuples()
            ])  # fmt: skip
            grid = np.geomspace(usable["budget"].min() / 1.5, flops * 1.5, 100)
            left.plot(grid, fit.isoflop.n_law(grid), color=colour, lw=1)
        p = fit.predict_at(flops).get(fit.lead_method)
        if p is not None:
            interval = p.n_opt_interval
            error = (  # clipped at 0: a percentile interval need not hold its point
                None
                if not interval
                else [[max(0.0, p.n_opt - interval[0])], [max(0.0, interval[1] - p.n_opt)]]
            )
            right.errorbar([i], [p.n_opt], yerr=error, fmt="D", color=colour, capsize=4)
        else:  # said where its marker would be: x in data, y halfway up the axes
            at = blended_transform_factory(right.transData, right.transAxes)
            right.text(i, 0.5, "no law\nfitted", transform=at, ha="center", color=colour)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel(C_LABEL)
    left.set_ylabel("optimal N (activated parameters)")
    left.legend()
    left.set_title("isoFLOP optima and N_opt power laws")
    right.set_yscale("log")
    right.set_xticks(range(len(fits)), list(fits), rotation=20)
    right.set_xlim(-0.5, len(fits) - 0.5)
    right.set_ylabel("optimal N (activated parameters)")
    right.set_title(f"headline N_opt at C = {sci(flops)} FLOPs (95% interval)")
    return fig


def compare(folders: list[Path], out: Path, target_flops: float | None = None) -> pd.DataFrame:
    """Write compare.pdf, .svg, .png and compare.csv into `out` (never into an input); return
    the table."""
    check_target_flops(target_flops)
    check_out(folders, out)
    fits = load_fits(folders)
    flops = target_flops or max(f.target_flops for f in fits.values())
    table = comparison_table(fits, flops)
    fig = comparison_figure(fits, flops)
    try:
        with one_output():  # a failed write leaves no half of the figure set
            save_figure(fig, out, "compare")
            atomic_write_bytes(out / "compare.csv", table.to_csv(index=False).encode())
    finally:
        plt.close(fig)
    return table
