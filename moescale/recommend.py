"""`moescale recommend`: a sweep's fit turned into the run to train at a target budget — the
family's model at the headline N_opt, the tokens that spend the budget, its LR and batch, its
memory and time on a device, what choosing either end of the interval would cost — and, given
a lifetime of inference tokens, the model that reaches the same loss for the least training
plus inference FLOPs (Sardana et al. 2024, "Beyond Chinchilla-Optimal").

Conventions: N is n_active (the laws' N); training FLOPs are counted exactly per architecture
(3 × forward, models/accounting.py); inference FLOPs per token are one forward pass at the
recipe's sequence length (the activated path: 2 FLOPs per activated weight plus attention),
exact from the same accounting; losses are the fit's parametric law (nats/token, held out).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moescale.errors import UserError
from moescale.fitting.laws.parametric import optima_of
from moescale.fitting.pipeline import FitReport, load_fit
from moescale.fitting.studies.next_runs import TargetRun
from moescale.models import MoEConfig, count, family
from moescale.models.accounting import kv_cache_bytes
from moescale.results import SweepFolder
from moescale.sweeps.plan import lr_from_law, power_of_two_batch
from moescale.sweeps.spec import SweepSpec, load_sweep_spec
from moescale.training.hardware import Hardware
from moescale.training.memory import fit_to_device

MIN_STEPS = 25  # the tokens are whole batches: with fewer steps C would be missed by > 2%


@dataclass(frozen=True)
class Model:
    """One model of the family trained at one budget, as `recommend` shows it."""

    config: MoEConfig
    n_active: int
    n_total: int
    tokens: int
    flops: float  # training: flops_per_token × tokens
    flops_per_token: float
    inference_flops_per_token: float  # one forward pass, served at the recipe's seq_len
    kv_bytes_per_token: float  # bf16 K and V cached per token of context
    loss: float  # the parametric law's at (n_active, tokens), nats/token


@dataclass(frozen=True)
class Inference:
    """The least training + lifetime inference FLOPs that reach the compute-optimal loss."""

    inference_tokens: float
    model: Model  # trained to `loss_target`, not to the budget
    total_flops: float  # its training FLOPs + inference_tokens × its forward FLOPs per token
    optimal_total_flops: float  # the same for the compute-optimal model
    loss_target: float


@dataclass(frozen=True)
class Recommendation:
    budget_flops: float
    method: str  # the headline's method, whose N_opt this is
    n_opt: float
    n_opt_interval: tuple[float, float] | None
    model: Model
    low: Model | None  # the models at the interval's two ends
    high: Model | None
    # the loss lost by training an end model when the optimum is at the other end (median
    # over the parametric law's bootstrap draws whose optimum lies beyond that end)
    regret_low: float
    regret_high: float
    lr: float
    lr_source: str
    batch_tokens: int
    batch_source: str
    devices: int | None = None  # on the hardware asked for (None: none asked, or no fit)
    memory_per_device: float | None = None
    days: float | None = None  # at the hardware's dense peak × `mfu`
    hardware_note: str = ""
    inference: Inference | None = None


def target_run(rec: Recommendation) -> TargetRun:
    """The recommendation in numbers, for the report's next steps."""
    m = rec.model
    return TargetRun(
        budget_flops=rec.budget_flops, n_active=m.n_active, n_total=m.n_total, tokens=m.tokens,
        flops=m.flops, loss=m.loss, lr=rec.lr, lr_source=rec.lr_source,
        batch_tokens=rec.batch_tokens, batch_source=rec.batch_source,
        n_opt_interval=rec.n_opt_interval, regret_low=rec.regret_low, regret_high=rec.regret_high,
    )  # fmt: skip


def report_target_run(results_dir: Path) -> Callable[[FitReport], TargetRun | None]:
    """For `moescale report`: the run to train at a fit's target, from the folder's sweep
    (None where the folder has no sweep.yaml or the fit no parametric law to size it by)."""

    def make(fit: FitReport) -> TargetRun | None:
        spec_path = SweepFolder(results_dir).spec_path
        if fit.prediction is None or fit.parametric is None or not spec_path.is_file():
            return None
        try:
            return target_run(recommend(fit, load_sweep_spec(spec_path), fit.target_flops))
        except UserError:
            return None

    return make


def load_inputs(results_dir: Path) -> tuple[FitReport, SweepSpec]:
    """The folder's fit.json and sweep spec, or one line saying which is missing."""
    folder = SweepFolder(results_dir)
    if not folder.spec_path.is_file():
        raise UserError(f"{results_dir}: not a sweep's results folder (no sweep.yaml)")
    if not folder.fit_path.is_file():
        raise UserError(f"{results_dir}: no fit.json (run `moescale fit {results_dir}` first)")
    fit = load_fit(folder.fit_path)
    if fit.prediction is None or fit.parametric is None:
        raise UserError(f"{folder.fit_path}: no headline and parametric law to recommend from")
    return fit, load_sweep_spec(folder.spec_path)


def model_at(
    spec: SweepSpec,
    fit: FitReport,
    n_active: float,
    flops: float | None = None,
    *,
    tokens: float | None = None,
    batch_tokens: int | None = None,
) -> Model:
    """The family's model nearest `n_active`, trained on whole batches that spend `flops`
    (or on `tokens`), with its accounting and its loss under the parametric law."""
    config = family(n_active, spec.shape_rules)
    seq_len = spec.recipe.seq_len
    accounting = count(config, seq_len)
    batch = batch_tokens or spec.recipe.batch_tokens
    wanted = tokens if tokens is not None else flops / accounting.flops_per_token
    steps = max(1, round(wanted / batch))
    return Model(
        config=config,
        n_active=accounting.n_active,
        n_total=accounting.n_total,
        tokens=steps * batch,
        flops=steps * batch * accounting.flops_per_token,
        flops_per_token=accounting.flops_per_token,
        inference_flops_per_token=accounting.forward_flops_per_token,
        kv_bytes_per_token=kv_cache_bytes(config, 1),
        loss=float(fit.parametric.loss(accounting.n_active, steps * batch)),
    )


def _regret(fit: FitReport, flops: float, n_choice: float, beyond: np.ndarray) -> float:
    """Median over the bootstrap laws in `beyond` of the loss given up by training N =
    n_choice at `flops` instead of each law's own optimum."""
    samples = fit.parametric.samples
    if samples is None or not beyond.any():
        return math.nan
    law = fit.law
    chosen = samples[beyond]
    log_a, log_b, log_e, alpha, beta = chosen.T
    d = law.tokens(flops, n_choice)
    with np.errstate(over="ignore"):
        at_choice = np.exp(log_a) / n_choice**alpha + np.exp(log_b) / d**beta
    best = optima_of(chosen, flops, law)["loss_opt"] - np.exp(log_e)
    return float(np.median(at_choice - best))


def critical_batch_at(fit: FitReport, loss: float, seq_len: int) -> int:
    """B_crit at `loss` as a power-of-two number of sequences (the sweep planner's rounding)."""
    return power_of_two_batch(float(fit.critical_batch(loss)), seq_len)


def recommend(
    fit: FitReport,
    spec: SweepSpec,
    budget_flops: float,
    hardware: Hardware | None = None,
    inference_tokens: float | None = None,
    mfu: float = 0.4,
) -> Recommendation:
    """The run to train at `budget_flops`, from a sweep's fit and spec (`load_inputs`)."""
    if not (math.isfinite(budget_flops) and budget_flops > 0):
        raise UserError(f"--budget must be a positive number of FLOPs, got {budget_flops}")
    if inference_tokens is not None and not inference_tokens >= 0:
        raise UserError(f"--inference-tokens must be at least 0, got {inference_tokens}")
    smallest = min(spec.budgets)
    if budget_flops < smallest:
        raise UserError(
            f"--budget {budget_flops:.3g} is below the sweep's smallest budget {smallest:.3g}: "
            "the fit says nothing there"
        )
    predictions = fit.predict_at(budget_flops)
    method = fit.lead_method if fit.lead_method in predictions else "parametric"
    prediction = predictions[method]
    seq_len = spec.recipe.seq_len

    expected = float(fit.parametric.optimal(budget_flops, fit.law)["loss_opt"])
    laws = fit.tuning.laws if fit.tuning is not None else {}
    if "batch_tokens" in laws:
        batch = int(round(laws["batch_tokens"](budget_flops) / seq_len)) * seq_len
        batch_source = "the fitted batch law (tuned sweep)"
    elif fit.critical_batch is not None:
        batch = critical_batch_at(fit, expected, seq_len)
        batch_source = f"B_crit at the expected loss {expected:.3g} (the fitted critical batch)"
    else:
        batch = spec.batch_tokens(len(spec.budgets) - 1)
        batch_source = "the sweep's batch at its largest budget (no batch law fitted)"
    batch = max(batch, seq_len)

    model = model_at(spec, fit, prediction.n_opt, budget_flops, batch_tokens=batch)
    if model.tokens < MIN_STEPS * batch:
        raise UserError(
            f"--budget {budget_flops:.3g} gives {model.tokens // batch} steps of {batch} tokens; "
            f"a run needs at least {MIN_STEPS}"
        )
    if "lr" in laws:
        lr, lr_source = float(laws["lr"](budget_flops)), "the fitted LR law (tuned sweep)"
    elif spec.recipe.lr_rule == "law":
        lr = lr_from_law(spec.recipe.lr_law, budget_flops)
        lr_source = f"the recipe's LR law ({spec.recipe.lr_law})"
    else:
        lr = spec.recipe.peak_lr(model.config.d_model)
        lr_source = f"the recipe's rule ({spec.recipe.lr_rule}; no LR law fitted)"

    low = high = None
    regret_low = regret_high = math.nan
    interval = prediction.n_opt_interval
    if interval is not None:
        low = model_at(spec, fit, interval[0], budget_flops, batch_tokens=batch)
        high = model_at(spec, fit, interval[1], budget_flops, batch_tokens=batch)
        draws = fit.parametric.draws(budget_flops, fit.law).get("n_opt", np.array([]))
        if len(draws):
            regret_low = _regret(fit, budget_flops, low.n_active, draws >= interval[1])
            regret_high = _regret(fit, budget_flops, high.n_active, draws <= interval[0])

    plan = {}
    if hardware is not None:
        placed = fit_to_device(
            model.config, seq_len, batch, "bf16", hardware.memory, batch_tokens=batch
        )
        if placed.memory is None:
            plan = {"hardware_note": placed.changed}
        else:
            devices = placed.memory.devices
            seconds = model.flops / (devices * hardware.peak("bf16") * mfu)
            plan = {
                "devices": devices,
                "memory_per_device": placed.memory.per_device,
                "days": seconds / 86400,
                "hardware_note": f"{hardware.name}, bf16 at {mfu:.0%} of its dense peak"
                + (f"; {placed.changed}" if placed.changed else ""),
            }
    inference = None
    if inference_tokens is not None:
        inference = inference_aware(spec, fit, budget_flops, model, inference_tokens, batch)
    return Recommendation(
        budget_flops=budget_flops,
        method=method,
        n_opt=prediction.n_opt,
        n_opt_interval=interval,
        model=model,
        low=low,
        high=high,
        regret_low=regret_low,
        regret_high=regret_high,
        lr=lr,
        lr_source=lr_source,
        batch_tokens=batch,
        batch_source=batch_source,
        inference=inference,
        **plan,
    )


def tokens_for_loss(fit: FitReport, n_active: float, loss: float) -> float:
    """D that brings a model of `n_active` to `loss` under the parametric law (inf if its
    N-term alone is already above the loss)."""
    law = fit.parametric
    room = loss - law.E - law.A / n_active**law.alpha
    return (law.B / room) ** (1 / law.beta) if room > 0 else math.inf


def inference_aware(
    spec: SweepSpec,
    fit: FitReport,
    budget_flops: float,
    optimal: Model,
    inference_tokens: float,
    batch_tokens: int,
    points: int = 24,
) -> Inference:
    """Among the family's models from a tenth of the compute-optimal N up to it, the one that
    reaches the compute-optimal model's loss with the least training + inference FLOPs
    (Sardana et al. 2024, eq. 2: minimise 6ND + 2N·D_inf subject to L(N, D) = L*, here with
    our exact training and forward FLOPs per token). Larger models never win: they cost more
    per inference token and need more training compute for the same loss."""
    target = optimal.loss
    best = None
    for n in np.geomspace(optimal.n_active / 10, optimal.n_active, points):
        # D for the family's model near n, whose own N_active is what the law is asked about
        n_active = count(family(n, spec.shape_rules), spec.recipe.seq_len).n_active
        tokens = tokens_for_loss(fit, n_active, target)
        if not math.isfinite(tokens):
            continue  # its N term alone is above the target loss
        candidate = model_at(spec, fit, n, tokens=tokens, batch_tokens=batch_tokens)
        total = candidate.flops + inference_tokens * candidate.inference_flops_per_token
        if best is None or total < best[0]:
            best = (total, candidate)
    optimal_total = optimal.flops + inference_tokens * optimal.inference_flops_per_token
    if best is None or best[0] > optimal_total:
        best = (optimal_total, optimal)
    return Inference(inference_tokens, best[1], best[0], optimal_total, target)


def run_config(rec: Recommendation, spec: SweepSpec) -> dict:
    """The recommended run as a run YAML's mapping (what `moescale train` and `flops` read)."""
    recipe = spec.recipe.model_copy(
        update={"lr": rec.lr, "lr_rule": "fixed", "lr_law": None, "batch_tokens": rec.batch_tokens,
                "batch_rule": "fixed", "batch_law": None, "micro_batch_tokens": None}
    )  # fmt: skip
    return {
        "model": rec.model.config.to_dict(),
        "recipe": recipe.model_dump(mode="json"),
        "data": spec.data.model_dump(mode="json"),
        "tokens": int(rec.model.tokens),
        "seed": 0,
    }


def _gib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**30:.1f} GiB"


def describe(rec: Recommendation) -> list:
    """Rich renderables: the recommended run, the interval's ends and their cost, the plan on
    the hardware, and the inference-aware choice."""
    from rich.table import Table

    table = Table(title=f"the run at C = {rec.budget_flops:.3g} FLOPs ({rec.method} law)")
    for column in ("", "n_active", "n_total", "tokens", "train FLOPs", "KV B/token", "loss",
                   "loss given up"):  # fmt: skip
        table.add_column(column, justify="right" if column else "left")

    def row(name: str, model: Model | None, regret: float = math.nan) -> None:
        if model is None:
            return
        table.add_row(
            name, f"{model.n_active:,}", f"{model.n_total:,}", f"{model.tokens:.4g}",
            f"{model.flops:.4g}", f"{model.kv_bytes_per_token:,.0f}", f"{model.loss:.4f}",
            "—" if math.isnan(regret) else f"{regret:.4f}",
        )  # fmt: skip

    row("recommended", rec.model)
    row("interval low end", rec.low, rec.regret_low)
    row("interval high end", rec.high, rec.regret_high)
    m = rec.model
    lines: list = [
        table,
        f"N_opt {rec.n_opt:.4g} (the family's nearest: {m.n_active:,}, "
        f"{m.n_active / rec.n_opt - 1:+.1%}); D = {m.tokens:.4g} tokens spend "
        f"{m.flops:.4g} FLOPs ({m.flops / rec.budget_flops - 1:+.2%} of C)",
        f"peak LR {rec.lr:.3g} from {rec.lr_source}; batch {rec.batch_tokens:,} tokens from "
        f"{rec.batch_source}",
        "loss given up: the loss an end model loses if the optimum is at the interval's "
        "other end (median over the parametric law's bootstrap draws whose optimum lies there)",
    ]
    if rec.devices is not None:
        lines.append(
            f"on {rec.hardware_note}: {rec.devices} device(s), {_gib(rec.memory_per_device)} "
            f"per device, {rec.days:.3g} days"
        )
    elif rec.hardware_note:
        lines.append(f"[yellow]hardware:[/yellow] {rec.hardware_note}")
    if rec.inference is not None:
        inf, model = rec.inference, rec.inference.model
        lines.append(
            f"with {inf.inference_tokens:.3g} inference tokens (Sardana et al. 2024): "
            f"N = {model.n_active:,} on {model.tokens:.4g} tokens reaches loss "
            f"{inf.loss_target:.4f} for {inf.total_flops:.4g} training + inference FLOPs, "
            f"against {inf.optimal_total_flops:.4g} for the compute-optimal model "
            f"({inf.total_flops / inf.optimal_total_flops - 1:+.1%}); it serves "
            f"{model.inference_flops_per_token:.4g} FLOPs and {model.kv_bytes_per_token:,.0f} KV "
            f"bytes per token from {model.n_total * 2 / 2**30:.2f} GiB of bf16 weights"
        )
    return lines


def inference_curve(
    rec: Recommendation, fit: FitReport, spec: SweepSpec, tokens: np.ndarray | None = None
) -> list[dict]:
    """The inference-aware choice across lifetimes of inference tokens (0 to 1000× the
    recommended run's training tokens): N, D and total FLOPs, beside the compute-optimal
    model's total, for the figure."""
    if tokens is None:
        tokens = np.concatenate([[0.0], np.geomspace(0.01, 1000, 13) * rec.model.tokens])
    rows = []
    for t in tokens:
        choice = inference_aware(spec, fit, rec.budget_flops, rec.model, float(t), rec.batch_tokens)
        rows.append(
            {
                "inference_tokens": float(t),
                "n_active": choice.model.n_active,
                "tokens": choice.model.tokens,
                "total_flops": choice.total_flops,
                "optimal_total_flops": choice.optimal_total_flops,
            }
        )
    return rows
