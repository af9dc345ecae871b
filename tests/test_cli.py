"""The `moescale` command as a user meets it: help, version, accounting, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import ROOT, assert_one_line_error, moescale

from moescale import __version__


def test_version_and_help_list_only_existing_commands():
    assert moescale("--version").stdout.strip() == f"moescale {__version__}"
    help_text = moescale("--help").stdout
    from moescale.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert "flops" in commands
    for command in commands:
        assert command in help_text


def test_flops_prints_the_hunyuan_large_accounting():
    result = moescale("flops", "configs/published/hunyuan-large.yaml")
    assert result.returncode == 0, result.stderr
    assert "388,698,126,080" in result.stdout  # n_total, within 1% of the report's 389B
    assert "51,318,798,080" in result.stdout  # n_active: the report's 52B activated


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("model: [unclosed", "malformed YAML"),
        ("model:\n  d_model: 64\n  colour: blue\n", "MoEConfig.colour: unknown key"),
        ("model:\n  d_model: wide\n", "MoEConfig.d_model"),
        ("model:\n  d_model: 64\n  n_heads: 3\n", "MoEConfig.n_heads must divide d_model"),
        ("seq_len: -1\nmodel:\n  d_model: 64\n", "seq_len"),
    ],
)
def test_bad_model_configs_are_one_line_errors(tmp_path, content, expected):
    path = tmp_path / "model.yaml"
    if content is not None:
        path.write_text(content)
    result = moescale("flops", str(path))
    assert_one_line_error(result, expected)


def _synthetic_csv(path: Path, budgets: int = 5) -> Path:
    import numpy as np

    from benchmarks.synthetic import synthetic_sweep
    from moescale.fitting import ComputeLaw, ParametricFit

    law = ParametricFit(
        E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37, objective=0, n_points=0, huber_delta=0
    )
    table = synthetic_sweep(
        law, ComputeLaw(6.0, 0.0, 1.0), list(np.logspace(18, 20, budgets)), noise=0.002
    )
    table = table.rename(columns={"n_active": "N", "final_loss": "L", "flops": "C"})
    table[["N", "C", "L"]].to_csv(path, index=False)
    return path


def test_fit_a_published_table_writes_fit_json_and_prints_the_summary(tmp_path):
    import json

    table = _synthetic_csv(tmp_path / "sweep.csv")
    out = tmp_path / "fit.json"
    result = moescale(
        "fit", str(table), "--n-col", "N", "--flops-col", "C", "--loss-col", "L",
        "--target-flops", "3.1e24", "--bootstrap", "100", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for heading in (
        "compute law",
        "assumed",  # D = C/(6N): the table's compute law is assumed, not fitted
        "isoFLOP optima",
        "power laws",
        "every method at C = 3.1e+24",
        "hold-out check",
    ):
        assert heading in result.stdout
    tail = result.stdout[result.stdout.rindex("N_opt ≈") :]  # the headline ends the output
    assert "3.1e+24" in tail and "agreement:" in tail and "wrote" not in tail
    fit = json.loads(out.read_text())
    assert fit["compute_law"]["cost"] == "assumed"
    assert fit["prediction"]["method"] in ("parametric", "isoflop")
    assert set(fit["predictions"]) == {"parametric", "isoflop"}
    # Akima per budget follows the 0.2% noise through 7 close sizes: looser than the parametric
    assert fit["isoflop"]["n_law"]["exponent"] == pytest.approx(0.37 / 0.72, abs=0.05)
    assert fit["parametric"]["allocation_exponent"] == pytest.approx(0.37 / 0.72, abs=0.03)
    assert fit["isoflop"]["n_law"]["exponent_interval"] is not None
    assert fit["prediction"]["flops"] == 3.1e24
    assert fit["parametric"]["alpha"] == pytest.approx(0.35, abs=0.05)


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("missing_column", "missing column 'loss'"),
        ("nan", "column 'L' has NaN or non-positive values"),
        ("negative", "column 'N' has NaN or non-positive values"),
        ("two_budgets", "needs at least 3"),
        ("unreadable", "not a readable"),
        ("no_file", "no such file"),
        ("empty_folder", "empty results folder"),
    ],
)
def test_fit_bad_input_is_one_line_and_writes_nothing(tmp_path, problem, expected):
    import pandas as pd

    table = _synthetic_csv(tmp_path / "sweep.csv", budgets=2 if problem == "two_budgets" else 4)
    args = ["--n-col", "N", "--flops-col", "C", "--loss-col", "L"]
    data = pd.read_csv(table)
    if problem == "missing_column":
        args[-1] = "loss"
    elif problem == "nan":
        data.loc[3, "L"] = float("nan")
    elif problem == "negative":
        data.loc[0, "N"] = -5
    elif problem == "unreadable":
        table.write_bytes(b"\x00\xff\xfe garbage \x00" * 10)
        table = table.rename(tmp_path / "sweep.parquet")
    data.to_csv(table, index=False) if problem in ("nan", "negative") else None
    if problem == "no_file":
        table = tmp_path / "absent.csv"
    if problem == "empty_folder":
        table = tmp_path / "results"
        table.mkdir()
    before = set(tmp_path.rglob("*"))
    if problem == "two_budgets":  # asked for by name: the isoFLOP fit must be possible
        args += ["--method", "isoflop"]
    result = moescale("fit", str(table), *args, "--bootstrap", "0")
    assert_one_line_error(result, expected)
    assert set(tmp_path.rglob("*")) == before  # nothing written


def test_train_runs_a_yaml_and_reports(tmp_path):
    import json

    config = tmp_path / "run.yaml"
    config.write_text(
        "model: {d_model: 32, n_heads: 2, n_layers: 2, n_experts: 4, expert_hidden: 64, max_seq_len: 64}\n"
        "recipe: {base: tiny-cpu, batch_tokens: 1024, eval_tokens: 4096}\n"
        "tokens: 20480\nnum_threads: 1\n"
    )
    result = moescale("train", str(config), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout and "final held-out loss" in result.stdout
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["result"]["tokens"] == 20480


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("model: {d_model: 32}\ntokens: 100\ncolour: red\n", "colour: unknown key"),
        ("model: {d_model: 32}\ntokens: many\n", "tokens"),
        ("model: {d_model: 32, n_heads: 3}\ntokens: 100\n", "MoEConfig.n_heads"),
        (
            "model: {d_model: 32}\nrecipe: {base: gigantic}\ntokens: 100\n",
            "unknown recipe 'gigantic'",
        ),
        (
            "model: {d_model: 32}\ndata: {source: text, path: /no/such/corpus}\ntokens: 100000\n",
            "/no/such/corpus",
        ),
    ],
)
def test_train_bad_input_is_one_line(tmp_path, content, expected):
    config = tmp_path / "run.yaml"
    config.write_text(content)
    result = moescale("train", str(config), "--out", str(tmp_path / "run"))
    assert_one_line_error(result, expected)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["flops", "configs/published/hunyuan-large.yaml", "--seq-len", "-5"],
            "--seq-len must be a positive",
        ),
        (
            ["flops", "configs/published/hunyuan-large.yaml", "--seq-len", "0"],
            "--seq-len must be a positive",
        ),
        (["sweep", "configs/quick.yaml", "--plan-csv", "PLAN"], "--plan-csv needs --dry-run"),
        (
            ["fit", "results/example", "--target-flops", "0", "--out", "OUT"],
            "--target-flops must be a positive",
        ),
        (
            ["fit", "results/example", "--n-nearest", "2", "--out", "OUT"],
            "--n-nearest must be at least 3",
        ),
        (
            ["fit", "results/example", "--batch-adjusted", "--out", "OUT"],
            "a batch-adjusted fit needs the critical batch: no curves with the gradient noise",
        ),
        (["compare", "results/example", "--out", "OUT"], "give at least two results folders"),
        (
            ["compare", "results/example", "results/example", "--out", "results/example/cmp"],
            "is inside the input results/example",
        ),
    ],
)
def test_impossible_numbers_and_flag_combinations_are_one_line_errors(tmp_path, args, expected):
    args = [
        str(tmp_path / "out.csv")
        if a == "PLAN"
        else str(tmp_path / "fit.json")
        if a == "OUT"
        else a
        for a in args
    ]
    result = moescale(*args)
    assert_one_line_error(result, expected)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_status_of_a_folder_of_sweeps_lists_each_with_the_time_left(tmp_path):
    import shutil

    from moescale.results import atomic_write_parquet, load_runs

    for name in ("done", "half"):
        shutil.copytree(ROOT / "results" / "example", tmp_path / name)
    runs = load_runs(tmp_path / "half")
    runs.loc[runs.index[:3], ["status", "wall_s"]] = ["planned", float("nan")]
    atomic_write_parquet(tmp_path / "half" / "runs.parquet", runs)
    result = moescale("status", str(tmp_path))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert str(tmp_path / "done") in result.stdout and str(tmp_path / "half") in result.stdout
    n = len(runs)
    assert f"runs {n}/{n}" in text and f"runs {n - 3}/{n}" in text
    assert text.count("trial time left") == 1  # only the unfinished sweep has time left


def test_flops_takes_a_run_or_a_sweep_yaml_as_well_as_a_model():
    run = moescale("flops", "configs/run-tiny.yaml")
    assert run.returncode == 0, run.stderr
    assert "n_active (N)" in run.stdout
    import os

    sweep = moescale("flops", "configs/quick.yaml", env={**os.environ, "COLUMNS": "200"})
    assert sweep.returncode == 0, sweep.stderr
    text = " ".join(sweep.stdout.split())
    # every planned size, as asked and as the family built it
    for asked, built in (("11,000", "10,822"), ("248,000", "250,000"), ("500,000", "496,608")):
        assert f"{asked} │ {built}" in text


@pytest.mark.parametrize("fmt", ["csv", "markdown", "latex"])
def test_fit_prints_its_tables_for_a_paper_or_a_spreadsheet(tmp_path, fmt):
    import io

    import pandas as pd

    result = moescale(
        "fit",
        "results/example",
        "--bootstrap",
        "20",
        "--format",
        fmt,
        "--out",
        str(tmp_path / "f.json"),
    )
    assert result.returncode == 0, result.stderr
    fit = json.loads((tmp_path / "f.json").read_text())
    headline = f"{fit['prediction']['n_opt']:.4g}"
    if fmt == "csv":
        blocks = result.stdout.split("# predictions\n")
        table = pd.read_csv(io.StringIO(blocks[1]))
        row = table[table["headline"]].iloc[0]
        assert row["method"] == fit["prediction"]["method"]
        assert row["n_opt"] == pytest.approx(fit["prediction"]["n_opt"])
    elif fmt == "markdown":
        assert "| method | headline | n_opt |" in result.stdout and headline in result.stdout
    else:
        assert result.stdout.count(r"\begin{tabular}") == 2 and r"n\_opt" in result.stdout
        assert headline in result.stdout


def test_fit_on_bits_per_byte_moves_no_optimum_and_writes_its_own_file(tmp_path):
    """--metric bpb fits every law on final_bpb. On a byte tokenizer bits per byte is the loss
    / ln 2, a change of unit: the optimum N must not move and the optimal loss must scale by
    1 / ln 2. The fit goes to fit.bpb.json (fit.json stays the nats fit the report reads)."""
    import math
    import shutil

    from moescale.results import atomic_write_parquet, load_runs

    folder = tmp_path / "example"
    shutil.copytree(ROOT / "results" / "example", folder, ignore=shutil.ignore_patterns("report"))
    result = moescale("fit", str(folder), "--metric", "bpb", "--bootstrap", "20")
    assert_one_line_error(result, "--metric bpb")  # trained before final_bpb was recorded
    assert "without final_bpb" in result.stderr
    runs = load_runs(folder)
    atomic_write_parquet(
        folder / "runs.parquet", runs.assign(final_bpb=runs["final_loss"] / math.log(2))
    )
    fits = {}
    for metric in ("loss", "bpb"):
        out = tmp_path / f"{metric}.json"
        args = ["--bootstrap", "20", "--metric", metric] + (
            ["--out", str(out)] if metric == "loss" else []
        )
        result = moescale("fit", str(folder), *args)
        assert result.returncode == 0, result.stderr
        fits[metric] = json.loads(
            (out if metric == "loss" else folder / "fit.bpb.json").read_text()
        )
    assert "bits/byte" in result.stdout.split("N_opt ≈")[-1]
    nats, bits = fits["loss"]["prediction"], fits["bpb"]["prediction"]
    assert bits["n_opt"] == pytest.approx(nats["n_opt"], rel=0.01)
    assert bits["loss_opt"] == pytest.approx(nats["loss_opt"] / math.log(2), rel=0.01)
    assert fits["bpb"]["options"]["metric"] == "bpb"
    assert fits["bpb"]["conventions"]["loss"] == "bits per byte of the held-out text"
