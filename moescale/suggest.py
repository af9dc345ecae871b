"""`moescale suggest`: the next runs that most narrow the headline's interval
(fitting/studies/next_runs.py decides), each planned exactly as the sweep would train it, and
the sweep YAML that adds them to the same results folder (the runs join the sweep: the same
ids for what is already trained, new ids for what is not).

Conventions: N is n_active (the laws' N); a run's cost is its own training FLOPs (3 × forward,
counted per architecture), as if trained alone — a WSD branch that shares a trunk costs less;
the interval is the headline's 95% interval of N_opt at the fit's target budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from moescale.errors import UserError
from moescale.fitting.pipeline import FitReport, fit_all
from moescale.fitting.studies.next_runs import (
    Misfit,
    NextRuns,
    Point,
    next_budget,
    runs_text,
    sizes_around,
    suggest_next_runs,
)
from moescale.recommend import load_inputs
from moescale.results import RunStatus, SweepFolder, atomic_write_json
from moescale.sweeps.plan import (
    Dropped,
    grid_centre,
    plan_run,
    plan_sweep,
    size_grid,
    size_step,
)
from moescale.sweeps.spec import SweepSpec


@dataclass
class Planner:
    """The sweep's planner asked for one run at any budget: a budget past the sweep's is
    planned as if appended to its budgets; a run already in the sweep, or one that would read
    its data more than the sweep's `max_epochs` times, is not offered. Remembers the size
    asked for each point (so the YAML asks the same) and the run's row (for the refits)."""

    spec: SweepSpec
    # (budget, n_active) of the runs the folder already has (bracketing's included); with
    # every run the spec plans, never offered again
    known: set = field(default_factory=set)
    unique_tokens: float | None = None  # the training split's, from runs.parquet (None: unknown)
    asked: dict = field(default_factory=dict)  # (budget, n_active) -> the size asked
    rows: dict = field(default_factory=dict)  # (budget, n_active) -> the run's runs.parquet row
    _cache: dict = field(default_factory=dict)  # (budget, size asked) -> Point | None

    def __post_init__(self) -> None:
        if self.spec.variants or self.spec.tune is not None or len(self.spec.seeds) > 1:
            raise UserError(
                "suggest plans one run per point: a sweep of MoE variants, tuning grids or "
                "several seeds would train each point several times (not supported yet)"
            )
        planned = plan_sweep(self.spec).runs
        self.known = self.known | {(r.budget_flops, float(r.n_active)) for r in planned}

    def spec_with(self, budgets: list[float]) -> SweepSpec:
        """The spec with `budgets` past its largest appended (each new budget at the largest
        budget's batch); not validated: plan_run reads only the budget and its batch."""
        new = sorted(b for b in set(budgets) if b not in self.spec.budgets)
        batches = self.spec.batch_tokens_per_budget
        return self.spec.model_copy(
            update={
                "budgets": list(self.spec.budgets) + new,
                "batch_tokens_per_budget": None
                if batches is None
                else batches + [batches[-1]] * len(new),
            }
        )

    def _offered(self, budget: float, run) -> bool:
        """Not a run the sweep already has, nor one past `max_epochs` passes over its data
        (there the sweep warns and the fit turns to the data-constrained law)."""
        if (budget, float(run.n_active)) in self.known:
            return False
        return self.unique_tokens is None or run.tokens <= self.spec.max_epochs * self.unique_tokens

    def __call__(self, budget: float, n_active: float) -> Point | None:
        n_active = float(round(n_active))  # the YAML asks whole parameters
        key = (float(budget), n_active)
        if key not in self._cache:
            spec = self.spec_with([budget])
            run = plan_run(spec, spec.budgets.index(budget), n_active, self.spec.seeds[0])
            point = None
            if not isinstance(run, Dropped) and self._offered(budget, run):
                point = Point(budget, float(run.n_active), float(run.tokens), run.flops_trained)
                self.asked.setdefault((budget, point.n_active), n_active)
                self.rows[(budget, point.n_active)] = run.row()
            self._cache[key] = point
        return self._cache[key]


def refitter(runs: pd.DataFrame, fit: FitReport, planner: Planner, on_refit: Callable) -> Callable:
    """The pipeline refitted with simulated runs added: the headline's N_opt interval at the
    fit's own target (the default target would move with a new largest budget), with the fit's
    options less the hold-out check (it words the headline's reach, not its interval)."""
    options = replace(fit.options, holdout_check=False, target_flops=fit.target_flops)

    def refit(points: tuple[Point, ...], losses: np.ndarray):
        rows = [
            planner.rows[(p.budget_flops, p.n_active)]
            | {"final_loss": float(loss), "status": RunStatus.COMPLETED.value}
            for p, loss in zip(points, losses, strict=True)
        ]
        table = pd.concat([runs, pd.DataFrame(rows)], ignore_index=True)
        try:
            report = fit_all(table, None, "simulated", options)
        except UserError:
            return None
        finally:
            on_refit()
        return None if report.prediction is None else report.prediction.n_opt_interval

    return refit


def suggest(
    results_dir: Path,
    k: int,
    cap_flops: float | None = None,
    simulations: int = 8,
    on_refit: Callable = lambda: None,
) -> tuple[NextRuns, SweepSpec, Planner]:
    """The K next runs for a results folder's fit (next_runs.py), planned by its sweep; kept
    in the folder's next_runs.json for the report."""
    if k < 1:
        raise UserError(f"--runs must be at least 1, got {k}")
    if cap_flops is not None and not cap_flops > 0:
        raise UserError(f"--budget-cap must be a positive number of FLOPs, got {cap_flops}")
    if simulations < 2:
        raise UserError(f"--simulations must be at least 2, got {simulations}")
    fit, spec = load_inputs(results_dir)
    if fit.prediction.n_opt_interval is None:
        raise UserError(
            f"{results_dir}: the headline has no interval to narrow (fit with a bootstrap)"
        )
    runs = SweepFolder(results_dir).runs()
    unique = runs["unique_tokens"].dropna() if "unique_tokens" in runs else []
    known = set(
        zip(runs["budget_flops"].astype(float), runs["n_active"].astype(float), strict=True)
    )
    planner = Planner(spec, known, float(unique.median()) if len(unique) else None)
    step = size_step(size_grid(spec, len(spec.budgets) - 1))
    budget = next_budget(list(spec.budgets))
    grid = [planner(budget, n) for n in sizes_around(grid_centre(spec, budget), k, step)]
    result = suggest_next_runs(
        fit.parametric,
        fit.law,
        fit.target_flops,
        fit.prediction.n_opt_interval,
        list(spec.budgets),
        k,
        planner,
        refitter(runs, fit, planner, on_refit),
        cap_flops=cap_flops,
        size_step=step,
        simulations=simulations,
        grid=tuple(p for p in grid if p is not None),
        misfit=Misfit.of(fit.extrapolation),
    )
    result = replace(result, runs_hash=fit.runs_hash)
    atomic_write_json(SweepFolder(results_dir).next_runs_path, result.to_dict())
    return result, spec, planner


def suggested_spec(spec: SweepSpec, points: tuple[Point, ...], planner: Planner) -> SweepSpec:
    """The sweep with `points` added: new budgets appended with their sizes as their grid
    (the sizes turned into a list per budget, each old budget's grid unchanged), sizes at old
    budgets under `sizes.added`. Checked: it plans every run the sweep planned, and the new."""
    new_budgets = sorted({p.budget_flops for p in points} - set(spec.budgets))
    extended = planner.spec_with(new_budgets)
    asked = {
        budget: sorted(
            planner.asked[(p.budget_flops, p.n_active)] for p in points if p.budget_flops == budget
        )
        for budget in extended.budgets
    }
    sizes = spec.sizes.model_dump()
    if new_budgets:
        grids = [size_grid(spec, i) for i in range(len(spec.budgets))]
        sizes |= {"n_active": None, "guess_coef": None,
                  "per_budget": grids + [asked[b] for b in new_budgets]}  # fmt: skip
    old = sizes.get("added") or [[] for _ in spec.budgets]
    sizes["added"] = [
        sorted(old[i] + asked[b]) if i < len(old) else [] for i, b in enumerate(extended.budgets)
    ]
    data = extended.model_dump(mode="json") | {"sizes": sizes}
    out = SweepSpec.model_validate(data)
    before = {r.run_id for r in plan_sweep(spec).runs}
    after = {(r.budget_flops, r.n_active): r.run_id for r in plan_sweep(out).runs}
    missing_old = before - set(after.values())
    missing_new = [p for p in points if (p.budget_flops, p.n_active) not in after]
    if missing_old or missing_new:  # a bug, not bad input: the YAML would lose or miss runs
        raise RuntimeError(
            f"the suggested sweep would drop {len(missing_old)} planned runs and miss "
            f"{len(missing_new)} suggested ones"
        )
    return out


def describe(result: NextRuns, planner: Planner, spec: SweepSpec) -> list:
    """Rich renderables: the designs decided between, and the chosen runs."""
    from rich.table import Table

    low, high = result.interval_now
    head = (
        f"headline now: N_opt {low:.3g}–{high:.3g} (95%, ×{result.width_now:.2f} wide) at "
        f"C = {result.target_flops:.3g} FLOPs; cap {result.cap_flops:.3g} FLOPs for the new runs"
    )
    why = f"chosen: '{result.chosen.name}', {result.chosen_because}"
    designs = Table(
        title="designs decided between: the headline's interval expected after adding each",
        caption=f"screened: the parametric law's {result.draws} bootstrap draws reweighted by "
        f"simulated outcomes; refitted: the whole fit rerun on {result.simulations} simulated "
        "outcomes (truths drawn from those draws, the runs' noise added, and the law's error "
        "below); widths are hi/lo of the 95% interval of N_opt (n_active), geometric means over "
        "outcomes (in brackets: the narrowest and widest outcome, what one real set of runs "
        "may give)",
    )
    for column in ("design", "runs (budget: n_active)", "FLOPs", "screened ×", "refitted ×",
                   "expected interval"):  # fmt: skip
        designs.add_column(
            column, justify="left" if column.startswith(("design", "runs")) else "right"
        )
    for design in result.designs:
        mark = " ◀ chosen" if design is result.chosen else ""
        runs = runs_text(design.points)
        lo, hi = design.interval
        narrowest, widest = design.width_range
        designs.add_row(
            design.name + mark, runs, f"{design.flops:.3g}", f"{design.screened_width:.2f}",
            f"{design.width:.2f} ({narrowest:.2f}–{widest:.2f})", f"{lo:.3g}–{hi:.3g}",
        )  # fmt: skip
    chosen = Table(title=f"the {len(result.chosen.points)} suggested runs")
    for column in ("budget (FLOPs)", "asked N", "n_active", "tokens", "train FLOPs", "budget is"):
        chosen.add_column(column, justify="right")
    for p in sorted(result.chosen.points, key=lambda p: (p.budget_flops, p.n_active)):
        chosen.add_row(
            f"{p.budget_flops:.3g}", f"{planner.asked[(p.budget_flops, p.n_active)]:,.0f}",
            f"{p.n_active:,.0f}", f"{p.tokens:.4g}", f"{p.flops:.4g}",
            "in the sweep" if p.budget_flops in spec.budgets else "new",
        )  # fmt: skip
    notes = []
    if spec.bracket.enabled and any(
        p.budget_flops not in spec.budgets for p in result.chosen.points
    ):
        notes.append(
            f"note: bracketing is on in this sweep: where a new budget's lowest loss lands at "
            f"the edge of its sizes, `moescale sweep` adds up to {spec.bracket.max_extensions} "
            "sizes beyond it, past the cap (and past max_epochs, where the small end repeats "
            "its data)"
        )
    return [head, designs, result.law_error, why, chosen, *notes]
