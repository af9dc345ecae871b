"""The `moescale` command: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from moescale import __version__
from moescale.errors import OptionError, UserError
from moescale.fitting import options as fit_choices  # light: no numpy (the CLI starts fast)
from moescale.results import RunStatus, SweepFolder

app = typer.Typer(
    name="moescale",
    help="Compute-optimal scaling of Mixture-of-Experts language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's own help: flags without a '<bool>' and option texts wrapped, never cut off
    rich_markup_mode=None,
)


def _console() -> Console:
    """Rich output: the terminal's width, or 150 columns into a pipe or file (rich's 80 would
    squeeze the plan and budget tables into ellipses)."""
    return Console(width=None if sys.stdout.isatty() else 150)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"moescale {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Compute-optimal scaling of Mixture-of-Experts language models."""


@app.command()
def flops(
    config: Path = typer.Argument(
        ..., help="A model YAML (MoEConfig keys, or under `model:`), a run YAML or a sweep YAML."
    ),
    seq_len: int | None = typer.Option(
        None, help="Sequence length (default: the file's, else max_seq_len)."
    ),
) -> None:
    """Print the exact parameter, FLOP and KV-cache accounting of a model config (of a run's
    model, or of every size a sweep plans)."""
    from moescale.models import count, kv_cache_bytes
    from moescale.models.config import load_model_yaml
    from moescale.yamlio import load_yaml

    if seq_len is not None and seq_len < 1:
        raise UserError(f"--seq-len must be a positive number of tokens, got {seq_len}")
    data = load_yaml(config)
    if "budgets" in data:  # a sweep: the family at every planned size
        _sweep_accounting(config)
        return
    if "model" in data and set(data) - {"model", "seq_len"}:  # a run
        from moescale.training import RunSpec
        from moescale.yamlio import validate

        spec = validate(RunSpec, data, source=str(config))
        model, file_seq_len = spec.model, spec.recipe.seq_len
    else:
        model, file_seq_len = load_model_yaml(config)
    seq_len = seq_len or file_seq_len
    if seq_len > model.max_seq_len:
        raise UserError(f"--seq-len {seq_len} exceeds the model's max_seq_len {model.max_seq_len}")
    accounting = count(model, seq_len)
    console = _console()
    table = Table(title=f"{config} at seq_len {seq_len}: forward FLOPs per token")
    table.add_column("component")
    table.add_column("forward FLOPs/token", justify="right")
    table.add_column("share", justify="right")
    total = accounting.forward_flops_per_token
    for name, value in accounting.forward.items():
        table.add_row(name.replace("_", " "), f"{value:.4g}", f"{value / total:.1%}")
    table.add_row("total (forward)", f"{total:.4g}", "100.0%", style="bold")
    console.print(table)

    summary = Table(show_header=False, title="accounting")
    summary.add_column(justify="left")
    summary.add_column(justify="right")
    n = accounting.n_active
    rows = [
        ("n_total", f"{accounting.n_total:,}"),
        ("n_active (N)", f"{n:,}"),
        ("n_embedding", f"{accounting.n_embedding:,}"),
        # papers' "activated parameters" count the input table too (Mixtral's 12.9B, say)
        ("N + n_embedding (papers' activated)", f"{n + accounting.n_embedding:,}"),
        ("flops_per_token (train, 3 x fwd)", f"{accounting.flops_per_token:.4g}"),
        ("flops_per_token / N", f"{accounting.flops_per_token / n:.3f}  (6 for the 6ND rule)"),
        ("KV cache per token (bf16)", f"{kv_cache_bytes(model, 1):,} bytes"),
        (
            f"KV cache per sequence of {seq_len}",
            f"{kv_cache_bytes(model, seq_len) / 2**20:,.2f} MiB",
        ),
    ]
    for row in rows:
        summary.add_row(*row)
    console.print(summary)


def _sweep_accounting(config: Path) -> None:
    """`flops` on a sweep YAML: each planned size as asked and as built, with its shape,
    exact FLOPs per token and the memory of its weights and AdamW states."""
    from moescale.sweeps import load_sweep_spec, plan_sweep
    from moescale.sweeps.plan import planned_sizes

    spec = load_sweep_spec(config)
    plan = plan_sweep(spec)
    table = Table(
        title=f"{config}: the family at every planned size (seq_len {spec.recipe.seq_len})",
        caption="N = n_active (activated parameters, input embedding excluded); memory: fp32 "
        "weights, gradients and AdamW's two moments, 16 bytes per parameter",
    )
    for column in (
        "asked N",
        "built N",
        "n_total",
        "d_model",
        "layers",
        "experts (top-k)",
        "FLOPs/token",
        "FLOPs/token ÷ N",
        "memory",
    ):
        table.add_column(column, justify="right")
    seen = set()
    for index in range(len(spec.budgets)):
        for asked in planned_sizes(spec, index):
            for run in plan.runs:
                key = (run.n_active, run.variant)
                if run.budget_index != index or run.asked != asked or key in seen:
                    continue
                seen.add(key)
                c = run.spec.model
                table.add_row(
                    f"{asked:,.0f}" + (f" {run.variant}" if run.variant else ""), f"{run.n_active:,}",
                    f"{run.n_total:,}", str(c.d_model), str(c.n_layers), f"{c.n_experts} ({c.top_k})",
                    f"{run.flops_per_token:.4g} FLOPs", f"{run.flops_per_token / run.n_active:.3f}",
                    f"{16 * run.n_total / 2**30:.3g} GiB",
                )  # fmt: skip
    _console().print(table)
    for line in plan.dropped:
        _console().print(f"[yellow]not planned:[/yellow] {line}")


@app.command()
def fit(
    source: Path = typer.Argument(..., help="A results folder, or a CSV/Parquet table."),
    method: str = typer.Option("all", help=" | ".join(fit_choices.METHODS)),
    target_flops: float | None = typer.Option(
        None,
        help=f"Budget to predict at (default: {fit_choices.DEFAULT_TARGET_FACTOR:g} × the largest).",
    ),
    bootstrap: int = typer.Option(
        fit_choices.DEFAULT_BOOTSTRAP, help="Bootstrap samples for the intervals."
    ),
    isoflop_method: str = typer.Option(
        fit_choices.DEFAULT_ISOFLOP_METHOD,
        help="Per-budget fit: auto (the slice or the parabola, whichever predicts left-out "
        "sizes better) | slices | parabola (the Hunyuan-Large report's) | akima.",
    ),
    n_nearest: int | None = typer.Option(
        None, help="Per-budget fit on only the k sizes nearest the lowest loss."
    ),
    n_col: str | None = typer.Option(None, help="Table column of activated parameters N."),
    d_col: str | None = typer.Option(None, help="Table column of tokens D."),
    flops_col: str | None = typer.Option(None, help="Table column of training FLOPs C."),
    loss_col: str | None = typer.Option(None, help="Table column of the loss."),
    budget_col: str | None = typer.Option(None, help="Table column of the isoFLOP budget."),
    unique_col: str | None = typer.Option(
        None, help="Table column of unique training tokens U_D (for repeated data)."
    ),
    out: Path | None = typer.Option(
        None, help="Where to write fit.json (default: in the results folder)."
    ),
    format: str = typer.Option(
        "rich", help="rich (the summary) | csv | markdown | latex (the budgets and predictions)."
    ),
    variant: str | None = typer.Option(
        None,
        help="A sweep of MoE variants: the one whose laws are the headline (default: the first).",
    ),
    metric: str = typer.Option(
        "loss",
        help="Fit on loss (nats per token) or bpb (bits per byte of the held-out text, "
        "comparable across tokenizers; written to fit.bpb.json unless --out).",
    ),
    batch_adjusted: bool = typer.Option(
        False,
        help="Fit every law on C_min = C/(1 + B/B_crit(L)), B_crit fitted to the runs' "
        "gradient noise scales (written to fit.cmin.json unless --out).",
    ),
) -> None:
    """Refit every law from saved results or a published table; write fit.json and print a
    summary that ends with the headline prediction."""
    from moescale.analysis.summary import FORMATS, fit_summary, fit_tables, render_table
    from moescale.fitting.pipeline import fit_all, load_source, write_fit_json

    if format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got '{format}'")
    _check_out(out)
    columns = dict(n_active=n_col, tokens=d_col, flops=flops_col, final_loss=loss_col,
                   budget_flops=budget_col, unique_tokens=unique_col)  # fmt: skip
    options = fit_choices.FitOptions(
        method=method,
        target_flops=target_flops,
        bootstrap=bootstrap,
        isoflop_method=isoflop_method,
        n_nearest=n_nearest,
        variant=variant,
        metric=metric,
        batch_adjusted=batch_adjusted,
    )
    loaded = load_source(source, columns)
    console = _console()
    with console.status("fitting…"):
        report = fit_all(
            loaded.runs, loaded.curves, str(source), options, compute_law=loaded.compute_law
        )
    path = out or loaded.fit_path.with_name(options.file_name)
    write_fit_json(report, path)
    if format != "rich":  # plain tables for a paper or a spreadsheet, on stdout
        for name, table in fit_tables(report).items():
            typer.echo(f"# {name}" if format != "latex" else f"% {name}")
            typer.echo(render_table(table, format))
        return
    console.print(f"wrote {path}")
    for part in fit_summary(report):
        console.print(part)


def _check_out(out: Path | None) -> None:
    """--out names a fit.json to write, in a folder that exists (checked before any fitting)."""
    if out is not None and out.is_dir():
        raise UserError(f"--out {out}: is a folder; name the fit.json file to write")
    if out is not None and not out.parent.is_dir():
        raise UserError(f"--out {out}: no folder {out.parent} to write into")


@app.command()
def tokenize(
    inputs: list[Path] = typer.Argument(
        ...,
        help="Text files or folders, Parquet or JSONL files with a text column, or a Hugging "
        "Face dataset saved to disk.",
    ),
    tokenizer: str = typer.Option(..., help="A local tokenizer.json, or bytes."),
    out: Path = typer.Option(..., help="The folder of shards (resumed if a run was killed)."),
    text_column: str = typer.Option("text", help="The text column of Parquet, JSONL or HF."),
    shard_tokens: int = typer.Option(
        2**25,
        help="Tokens per shard at most (a whole document longer than that is a shard of its own).",
    ),  # fmt: skip
    eos: str | None = typer.Option(
        None, help="The end-of-document token (default: the tokenizer's own, found by name)."
    ),
    val_percent: float = typer.Option(5.0, help="Share of documents held out, by name hash."),
) -> None:
    """Tokenize a corpus once, with every core and in bounded memory, into flat uint16 or
    uint32 shards and a manifest that `data.source: tokens` reads memory-mapped."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from moescale.training.data import DataSpec, read_tokenizer
    from moescale.training.shards import write_shards

    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise UserError(f"{missing[0]}: no such file or folder")
    suffixes = {p.suffix for p in inputs if p.is_file()}
    if any((p / "dataset_info.json").exists() or (p / "state.json").exists() for p in inputs):
        source = "hf_disk"
    elif suffixes == {".parquet"}:
        source = "parquet"
    elif suffixes == {".jsonl"}:
        source = "jsonl"
    else:
        source = "text"
    hf = tokenizer != "bytes"
    spec = DataSpec(
        source=source,
        path=[str(p) for p in inputs] if source != "hf_disk" else str(inputs[0]),
        text_column=text_column,
        tokenizer="hf" if hf else "bytes",
        tokenizer_path=tokenizer if hf else None,
        vocab_size=read_tokenizer(tokenizer).tokenizer.vocab_size if hf else 256,
        val_percent=val_percent,
    )
    console = _console()
    columns = (SpinnerColumn(), TextColumn("[bold]tokenize[/bold] {task.fields[done]} documents"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("tokenize", total=None, done=0)
        manifest = write_shards(
            spec, out, shard_tokens, eos, lambda done, _: bar.update(task, done=f"{done:,}")
        )
    for split in ("train", "val"):
        shards = manifest["shards"][split]
        tokens, text = sum(s["tokens"] for s in shards), sum(s["text_bytes"] for s in shards)
        console.print(
            f"{split}: {len(shards)} shard(s), {tokens:,} tokens of {manifest['dtype']} from "
            f"{text:,} bytes of text ({tokens / max(text, 1):.3f} tokens per byte)"
        )
    console.print(f"wrote {out} (data: {{source: tokens, path: {out}}})")


@app.command()
def train(
    config: Path = typer.Argument(..., help="Run YAML: model, recipe, data, tokens, seed."),
    out: Path | None = typer.Option(None, help="Run folder (default: results/runs/<run_id>)."),
) -> None:
    """Train one run with a progress bar; resumes from the folder's checkpoint if it has one."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from moescale.training import RunSpec
    from moescale.yamlio import load_yaml, validate

    spec = validate(RunSpec, load_yaml(config), source=str(config))  # before torch loads
    from moescale.training import train_run

    out = out or Path("results") / "runs" / spec.run_id
    console = _console()
    columns = (
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("train", total=None, status="loading data…")

        def show(row: dict) -> None:
            text = f"loss {row['train_loss']:.3f}"
            if row["eval_loss"] == row["eval_loss"]:  # not NaN
                text += f"  eval {row['eval_loss']:.3f}"
            bar.update(
                task,
                total=row["total_steps"],
                completed=row["step"],
                status=f"{text}  {row['tokens_per_s']:,.0f} tok/s",
            )

        result = train_run(spec, out, progress=show)
    table = Table(title=f"run {result.run_id}: {result.status}", show_header=False)
    rows = [
        ("n_active / n_total", f"{result.n_active:,} / {result.n_total:,}"),
        ("tokens (budget)", f"{result.tokens:,} ({spec.tokens:,})"),
        ("FLOPs", f"{result.flops:.4g}"),
        ("final held-out loss", f"{result.final_loss:.4f} nats/token"),
        ("train time / wall", f"{result.train_s:.1f} s / {result.wall_s:.1f} s"),
        (
            "achieved / peak FLOP/s",
            f"{result.flops / max(result.train_s, 1e-9) / result.peak_flops:.1%} of {result.peak_flops / 1e9:.0f} GFLOP/s",
        ),
        ("folder", str(out)),
    ]
    if result.error:
        rows.append(("error", result.error))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if result.status != RunStatus.COMPLETED:
        raise typer.Exit(1)


def _dry_run(spec, target, mfu: float, max_devices: int, plan_csv: Path | None) -> None:
    """`moescale sweep --dry-run`: the plan as a table, timed on this machine (a few probe
    steps) or for `target` hardware, with what was dropped; the table saved as CSV if asked."""
    from moescale.sweeps import plan_sweep
    from moescale.sweeps.dry_run import fit_plan, hardware_rates, plan_table, probe_throughput
    from moescale.sweeps.runner import corpus_repetition

    console = _console()
    plan = plan_sweep(spec)
    if target is not None:
        fits = fit_plan(plan, target, max_devices)
        if not any(f.memory for f in fits.values()):
            raise UserError(
                f"no run of '{spec.name}' fits {target.name}: " + next(iter(fits.values())).changed
            )
        rate = hardware_rates(spec, target, mfu, fits)
        how = f"at {mfu:.0%} of peak (--mfu)"
        table, frame = plan_table(spec, plan, rate, how, None, fits, target)
    else:
        with console.status(
            "measuring throughput: 12 steps of the smallest, median and largest size on "
            "random tokens, in a throwaway folder…"
        ):
            flops_per_s, how = probe_throughput(spec, plan)
        table, frame = plan_table(spec, plan, flops_per_s, how, corpus_repetition(spec, plan))
    console.print(table)
    if spec.variants:
        from moescale.sweeps.dry_run import variant_table

        console.print(variant_table(spec, plan))
    for line in plan.dropped:
        console.print(f"[yellow]dropped:[/yellow] {line}")
    if plan_csv:
        from moescale.results import atomic_write_bytes

        atomic_write_bytes(plan_csv, frame.to_csv(index=False).encode())
        console.print(f"wrote {plan_csv}")


@app.command()
def recommend(
    results_dir: Path = typer.Argument(..., help="A sweep's results folder with its fit.json."),
    budget: float = typer.Option(..., help="The target budget C in training FLOPs."),
    hardware: str | None = typer.Option(
        None, help="Plan the run on this device (a100-80gb, h100, h200, ...; cpu: this machine)."
    ),
    peak_flops: float | None = typer.Option(
        None, help="With --hardware (or instead): the device's dense bf16 peak FLOP/s."
    ),
    device_memory: float | None = typer.Option(
        None, help="With --hardware (or instead): memory per device in GB (1e9 bytes)."
    ),
    inference_tokens: float | None = typer.Option(
        None,
        help="Lifetime inference tokens: the model that reaches the same loss for the "
        "least training + inference FLOPs (Sardana et al. 2024).",
    ),
    out: Path | None = typer.Option(None, help="Write the run as a run YAML (moescale train)."),
    figure: Path | None = typer.Option(
        None, help="With --inference-tokens: a folder for the figure of N and FLOPs against T."
    ),
) -> None:
    """The run to train at a target budget, from a sweep's fit: the family's model at N_opt,
    its tokens, LR and batch, the cost of the interval's ends, and inference-aware sizing."""
    import yaml

    from moescale.recommend import describe, load_inputs, recommend, run_config
    from moescale.results import atomic_write_bytes
    from moescale.training.hardware import resolve_hardware

    if out is not None and not out.parent.is_dir():
        raise UserError(f"--out {out}: no folder {out.parent} to write into")
    if figure is not None and inference_tokens is None:
        raise UserError("--figure draws the inference-aware choice: give --inference-tokens")
    target = resolve_hardware(
        hardware, peak_flops, None if device_memory is None else device_memory * 1e9
    )
    fit, spec = load_inputs(results_dir)
    rec = recommend(fit, spec, budget, target, inference_tokens)
    console = _console()
    for part in describe(rec):
        console.print(part)
    if out is not None:
        config = run_config(rec, spec)
        atomic_write_bytes(out, yaml.safe_dump(config, sort_keys=False).encode())
        console.print(f"wrote {out}")
    if figure is not None:
        import pandas as pd

        from moescale.analysis.plots import inference_sizing
        from moescale.analysis.style import save_figure
        from moescale.recommend import inference_curve

        curve = pd.DataFrame(inference_curve(rec, fit, spec))
        figure.mkdir(parents=True, exist_ok=True)
        save_figure(inference_sizing(curve, rec.model.n_active, budget), figure, "inference_sizing")
        console.print(f"wrote {figure}/inference_sizing.(png|svg|pdf)")


@app.command()
def suggest(
    results_dir: Path = typer.Argument(..., help="A sweep's results folder with its fit.json."),
    runs: int = typer.Option(..., help="How many runs to add (K)."),
    budget_cap: float | None = typer.Option(
        None,
        help="FLOPs the K runs may spend together (default: what the sweep's grid continued "
        "to its next budget would spend on K runs).",
    ),
    simulations: int = typer.Option(
        8, help="Simulated outcomes each proposed design is refitted on (more: slower, steadier)."
    ),
    out: Path | None = typer.Option(
        None, help="Write the sweep with the runs added (moescale sweep OUT --results ROOT)."
    ),
) -> None:
    """The K next runs that most narrow the headline's interval: proposed by reweighting the
    fit's bootstrap draws on simulated outcomes, decided by refitting on them (the regular
    grid's next budget unless another design is narrower beyond the simulation's noise)."""
    import yaml
    from rich.progress import Progress

    from moescale.results import atomic_write_bytes
    from moescale.suggest import describe, suggest, suggested_spec

    if out is not None and not out.parent.is_dir():
        raise UserError(f"--out {out}: no folder {out.parent} to write into")
    console = _console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("refitting on simulated outcomes", total=None)
        result, spec, planner = suggest(
            results_dir, runs, budget_cap, simulations, lambda: progress.advance(task)
        )
    for part in describe(result, planner, spec):
        console.print(part)
    if out is not None:
        extended = suggested_spec(spec, result.chosen.points, planner)
        atomic_write_bytes(
            out, yaml.safe_dump(extended.model_dump(mode="json"), sort_keys=False).encode()
        )
        console.print(
            f"wrote {out}: `moescale sweep {out} --results {results_dir.resolve().parent}` "
            f"trains the {runs} runs into {results_dir} (the rest is already trained)"
        )


@app.command()
def sweep(
    config: Path = typer.Argument(
        ..., help="Sweep YAML (budgets, family, sizes, recipe, data, resources)."
    ),
    results: Path = typer.Option(
        Path("results"), help="Results root: the sweep writes <results>/<name>/."
    ),
    address: str | None = typer.Option(
        None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)."
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Print the plan and train nothing: a few probe steps on random tokens measure "
        "this machine's throughput (or --hardware plans for another), and the passes over the "
        "corpus are shown when it can be read (its token cache is built if missing).",
    ),
    plan_csv: Path | None = typer.Option(
        None, help="With --dry-run, also save the plan table as CSV."
    ),
    hardware: str | None = typer.Option(
        None,
        help="With --dry-run: plan for this device (a100-40gb, a100-80gb, h100, h200, l40s, "
        "mi300x from their datasheets; cpu: this machine, measured): memory per device, "
        "devices, micro-batch and time per run; the data is not read.",
    ),
    peak_flops: float | None = typer.Option(
        None,
        help="With --hardware (or instead): the device's peak FLOP/s at the recipe's precision.",
    ),
    device_memory: float | None = typer.Option(
        None, help="With --hardware (or instead): memory per device in GB (1e9 bytes)."
    ),
    mfu: float = typer.Option(
        0.4, help="With --hardware: the share of the peak a trial is assumed to reach."
    ),
    max_devices: int = typer.Option(
        64, help="With --hardware: the most devices one run may be sharded over."
    ),
    dashboard: bool = typer.Option(False, help="Start the Ray dashboard (on 127.0.0.1)."),
) -> None:
    """Plan an isoFLOP grid and run it on Ray; run it again to finish what is missing."""
    from moescale.sweeps import load_sweep_spec
    from moescale.training.hardware import resolve_hardware

    if plan_csv is not None and not dry_run:
        raise UserError("--plan-csv needs --dry-run (it saves the plan of a dry run)")
    planning_flags = (hardware, peak_flops, device_memory)
    if not dry_run and any(v is not None for v in planning_flags):
        raise UserError("--hardware, --peak-flops and --device-memory plan a sweep: add --dry-run")
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu must be in (0, 1], got {mfu}")
    if max_devices < 1:
        raise UserError(f"--max-devices must be at least 1, got {max_devices}")
    target = resolve_hardware(
        hardware, peak_flops, None if device_memory is None else device_memory * 1e9
    )
    spec = load_sweep_spec(config)
    if dry_run:
        return _dry_run(spec, target, mfu, max_devices, plan_csv)
    console = _console()
    from moescale.sweeps.runner import run_sweep

    outcome = run_sweep(spec, results, address=address, dashboard=dashboard)
    for line in outcome.notes:
        console.print(f"[yellow]note:[/yellow] {line}")
    console.print(
        f"results in {outcome.results_dir} ({len(outcome.trained)} run(s) trained this time)"
    )


@app.command()
def status(
    results_dir: Path = typer.Argument(..., help="A sweep's results folder, or a folder of them."),
) -> None:
    """Print a sweep's progress from disk, whether or not it is running (every sweep's, for
    a folder of sweeps), with the trial time left at the finished runs' pace."""
    from moescale.results import load_runs
    from moescale.sweeps.progress import status_tables, sweeps_in, trunk_progress

    console = _console()
    inside = sweeps_in(results_dir) if not SweepFolder(results_dir).runs_path.exists() else []
    for folder in inside or [results_dir]:  # a folder of sweeps: each one's progress
        if inside:
            console.rule(str(folder))
        runs = load_runs(folder)
        console.print(status_tables(runs))
        trunks = trunk_progress(folder, runs)
        if trunks:
            console.print(trunks)


@app.command()
def report(
    results_dir: Path = typer.Argument(..., help="A sweep's results folder."),
    target_flops: float | None = typer.Option(
        None, help="Budget to predict at (default: fit.json's, else 100 × the largest)."
    ),
    bootstrap: int | None = typer.Option(
        None, min=0, help="Bootstrap samples for the intervals (default: fit.json's, else 200)."
    ),
    hunyuan_reference: bool = typer.Option(
        True, help="Draw the Hunyuan-Large report's laws for reference."
    ),
) -> None:
    """Write report/index.html (self-contained) and report/report.md from fit.json, refitting
    only when fit.json does not match the runs."""
    from moescale.analysis.report import build_report
    from moescale.fitting.prediction import headline_line
    from moescale.recommend import report_target_run

    console = _console()
    with console.status("drawing…"):
        path, fit = build_report(
            results_dir, target_flops, bootstrap, hunyuan_reference,
            report_target_run(results_dir),
        )  # fmt: skip
    console.print(f"wrote {path} and {path.with_name('report.md')}")
    console.print(headline_line(fit.prediction, fit.loss_unit, fit.budget_name))


@app.command()
def validate(
    results_dir: Path = typer.Argument(..., help="A sweep's results folder."),
    budget: float = typer.Option(..., help="The budget to validate at (FLOPs, past the sweep)."),
    sizes: int = typer.Option(5, help="How many sizes to train around the predicted N_opt."),
    address: str | None = typer.Option(
        None, help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)."
    ),
) -> None:
    """Train K sizes at a budget past the sweep and score every method's prediction there:
    realised N_opt and loss against the predicted intervals, and the regret of following it."""
    from moescale.validate import run_validation

    console = _console()
    record, scores, notes = run_validation(results_dir, budget, sizes, address=address)
    for line in notes:
        console.print(f"[yellow]note:[/yellow] {line}")
    if not scores:
        raise typer.Exit(1)
    table = Table(
        title=f"validation at C = {record['budget']:.3g} FLOPs ({len(record['sizes'])} sizes; "
        f"headline method: {record['headline_method']})",
        title_justify="left",
    )
    for column in (
        "method",
        "N_opt predicted [95%]",
        "realised",
        "inside",
        "loss predicted",
        "realised ",
        "regret (nats)",
        "compute ×",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for s in scores:
        interval = s.n_opt_interval
        table.add_row(
            s.method,
            f"{s.n_opt_predicted:.3g}"
            + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else ""),
            f"{s.n_opt_realised:.3g}",
            {True: "yes", False: "NO", None: "-"}[s.n_opt_inside],
            "" if s.loss_predicted is None else f"{s.loss_predicted:.4f}",
            f"{s.loss_realised:.4f}",
            f"{s.regret:.4f}",
            f"{s.regret_compute_factor:.3g}",
        )
    console.print(table)
    for s in scores:
        console.print(s.words())
    console.print(f"scores written to {Path(results_dir) / 'validations.json'}")


@app.command()
def compare(
    results_dirs: list[Path] = typer.Argument(..., help="Two or more sweeps' results folders."),
    out: Path = typer.Option(Path("compare"), help="Folder for compare.pdf, .svg, .png and .csv."),
    target_flops: float | None = typer.Option(
        None, help="The common budget to compare predictions at (default: the largest target)."
    ),
) -> None:
    """Several sweeps side by side: isoFLOP optima, N_opt laws and the headline prediction at
    one common budget, on one figure and one table."""
    from moescale.analysis.compare import compare as run_compare

    console = _console()
    with console.status("fitting (where fit.json does not match) and drawing…"):
        frame = run_compare(results_dirs, out, target_flops)
    table = Table(title="sweeps compared", title_justify="left")
    for column in frame.columns:
        table.add_column(
            column,
            justify="left"
            if column in ("sweep", "headline method", "agreement", "note")
            else "right",
        )
    for row in frame.itertuples(index=False):
        table.add_row(
            *("" if v != v else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row)
        )
    console.print(table)
    console.print(f"wrote {out / 'compare.pdf'}, .svg, .png and compare.csv")


@app.command()
def quickstart(
    out: Path = typer.Option(Path("results"), help="Results root (the sweep writes <out>/quick/)."),
    target_flops: float | None = typer.Option(
        None, help="Budget to predict at (default: 100 × the largest)."
    ),
) -> None:
    """The embedded default end to end: a small CPU sweep, its fit and its report."""
    from moescale.quickstart import quickstart as run_quickstart

    run_quickstart(out, target_flops)


def main(argv: list[str] | None = None) -> None:
    """Entry point: a UserError, or a command line click cannot parse (a bad value, a missing
    argument, an unknown flag), becomes one line on stderr and exit code 2, never a
    traceback or a usage box."""
    try:
        code = app(args=argv, prog_name="moescale", standalone_mode=False)
    except typer.TyperException as err:  # typer's own click: the command line itself
        ctx = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError":  # bare `moescale` or `moescale sweep`
            typer.echo(ctx.get_help() if ctx else err.format_message())
            sys.exit(2)
        _fail(err.format_message() + (f" (see {ctx.command_path} --help)" if ctx else ""))
    except typer.Abort:
        print("moescale: interrupted", file=sys.stderr)
        sys.exit(130)
    except OptionError as err:  # the library names an option by its keyword; here, its flag
        _fail(err.spelled(lambda keyword: "--" + keyword.replace("_", "-")))
    except UserError as err:
        _fail(str(err))
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    print(f"moescale: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
