"""The `moescale` command as a user meets it: help, version, accounting, one-line errors."""

from __future__ import annotations

import subprocess
import sys

from pathlib import Path

import pytest

from moescale import __version__

ROOT = Path(__file__).resolve().parents[1]


def moescale(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "moescale.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_version_and_help_list_only_existing_commands():
    assert moescale("--version").stdout.strip() == f"moescale {__version__}"
    help_text = moescale("--help").stdout
    from moescale.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert "flops" in commands
    for command in commands:
        assert command in help_text


def test_flops_prints_the_hunyuan_large_accounting():
    result = moescale("flops", "configs/hunyuan-large.yaml")
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
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
