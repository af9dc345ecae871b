"""`moescale quickstart`: the embedded default, end to end — the quick CPU sweep on a local
Ray instance, its fit and its report — then the prediction and where the report is."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rich.console import Console

# moescale/configs/quick-wsd.yaml (configs/ links to it): six budgets from one WSD trunk per
# size; with intervals from the runs' own noise, six budgets give a narrower honest interval
# than quick.yaml's three for about the same FLOPs (README, "The worked example")
QUICK_SPEC = "quick-wsd.yaml"


def quick_spec_path() -> Path:
    return Path(str(resources.files("moescale.configs").joinpath(QUICK_SPEC)))


def quickstart(out: Path = Path("results"), target_flops: float | None = None) -> Path:
    from moescale.analysis.report import build_report
    from moescale.analysis.summary import headline_lines
    from moescale.recommend import report_target_run
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
        # fits once, into fit.json
        report, fit = build_report(
            outcome.results_dir, target_flops, target_run=report_target_run(outcome.results_dir)
        )
    console.rule("3/3  result")
    for line in headline_lines(fit):
        console.print(line)
    console.print(f"report: {report}")
    return report
