"""`moescale quickstart`: the embedded default, end to end — the quick CPU sweep on a local
Ray instance, its fit and its report — then the prediction and where the report is."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rich.console import Console

QUICK_SPEC = "quick.yaml"  # moescale/configs/quick.yaml (configs/quick.yaml links to it)


def quick_spec_path() -> Path:
    return Path(str(resources.files("moescale.configs").joinpath(QUICK_SPEC)))


def quickstart(out: Path = Path("results"), target_flops: float | None = None) -> Path:
    from moescale.analysis.report import build_report
    from moescale.fitting.pipeline import fit_all
    from moescale.results import load_curves, load_runs
    from moescale.sweeps import load_sweep_spec
    from moescale.sweeps.runner import run_sweep

    console = Console()
    spec = load_sweep_spec(quick_spec_path())
    console.rule(f"1/3  sweep '{spec.name}': {len(spec.budgets)} budgets on a local Ray instance")
    outcome = run_sweep(spec, out)
    for line in outcome.notes:
        console.print(f"[yellow]note:[/yellow] {line}")
    console.rule("2/3  fit and report")
    with console.status("fitting and drawing…"):
        report = build_report(outcome.results_dir, target_flops)
        runs, curves = load_runs(outcome.results_dir), load_curves(outcome.results_dir)
        fit = fit_all(
            runs, curves, str(outcome.results_dir), "isoflop", target_flops, 200, strict=False
        )
    console.rule("3/3  result")
    if fit.isoflop is not None:
        p = fit.prediction
        interval = p.get("n_opt_interval")
        console.print(
            f"N_opt ∝ C^{fit.isoflop.n_exponent:.3f}; at C = {p['flops']:.3g} FLOPs: "
            f"N_opt ≈ {p['n_opt']:.3g} activated parameters"
            + (f" (95% interval {interval[0]:.3g}–{interval[1]:.3g})" if interval else "")
            + f", D_opt ≈ {p['d_opt']:.3g} tokens"
        )
    else:
        console.print(f"[yellow]no isoFLOP law:[/yellow] {fit.skipped.get('isoflop')}")
    console.print(f"report: {report}")
    return report
