"""Plots and the report, on the worked example that moescale itself produced (results/example),
checked in a real headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser import Browser, find_chromium
from PIL import Image

from moescale.analysis.report import build_report, step_limited_warning
from moescale.fitting.options import FitOptions
from moescale.fitting.pipeline import fit_all, runs_hash
from moescale.fitting.prediction import headline_line
from moescale.fitting.studies.next_runs import Design, NextRuns, Point
from moescale.recommend import report_target_run
from moescale.results import SweepFolder, atomic_write_json, atomic_write_parquet, load_runs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "results" / "example"
SECTIONS = (
    "Headline: the optimum at C",
    "The sweep",
    "The compute law",
    "isoFLOP fits",
    "The hold-out check",
    "The parametric fit",
    "Loss curves",
    "Next steps",
    "Diagnostics",
)


@pytest.fixture
def example(tmp_path) -> Path:
    """A copy of the example without its report or fit, as a fresh results folder would be."""
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("report", "fit.json"))
    return folder


@pytest.fixture(scope="module")
def first_report(tmp_path_factory) -> tuple[Path, Path, object]:
    """The example's report built once, as a fresh results folder gets it (fit first), for the
    tests that only read it: (folder, index.html, the fit)."""
    folder = tmp_path_factory.mktemp("report") / "example"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("report", "fit.json"))
    atomic_write_json(SweepFolder(folder).next_runs_path, SUGGESTED.to_dict())
    index, fit = build_report(
        folder, target_flops=1e15, bootstrap=100, target_run=report_target_run(folder)
    )
    return folder, index, fit


def _suggested() -> NextRuns:
    """What `moescale suggest` might have written for the example (made by hand: the report
    only draws it)."""
    points = (Point(4.75e12, 46_470, 1.466e7, 4.75e12), Point(4.75e12, 101_596, 7.03e6, 4.75e12))
    designs = tuple(
        Design(name, points[:k], 2.1, width, (3.2e5, 6.9e5), 2, (np.log(2.0), np.log(2.5)))
        for name, k, width in (("screened", 1, 2.4), ("the sweep's grid continued", 2, 2.2))
    )
    return NextRuns(
        chosen=designs[1],
        chosen_because="the narrowest expected interval",
        designs=designs,
        target_flops=1e15,
        cap_flops=9.5e12,
        interval_now=(3.0e5, 9.0e5),
        simulations=2,
        draws=200,
        runs_hash=runs_hash(load_runs(EXAMPLE)),
    )


SUGGESTED = _suggested()


# the tests that read `first_report` run on one worker of `make test`, which builds it once
@pytest.mark.xdist_group("first_report")
def test_report_fits_first_and_writes_a_self_contained_page(first_report):
    example, index, fit = first_report
    assert (example / "fit.json").exists()  # fitted first: `moescale fit` had not run
    page = index.read_text()
    assert page.index("Headline") < page.index("The sweep")  # the report leads with it
    assert headline_line(fit.prediction) in html.unescape(page)
    for title in SECTIONS:
        assert title in page
    # self-contained: the figures are inline SVG, every link points inside the page, and the
    # only URLs are the SVG namespaces (names, never fetched)
    assert page.count('<svg class="figure"') >= 7
    links = re.findall(r"(?:src|href)=['\"]([^'\"]+)", page)
    inside = [link for link in links if link.startswith(("#", "data:image/png;base64,"))]
    assert links and inside == links, set(links) - set(inside)
    ids = re.findall(r"\bid=['\"]([^'\"]+)", page)
    assert len(ids) == len(set(ids))  # one page, several SVGs: no id twice
    urls = set(re.findall(r"https?://[^\s'\"<>]+", page))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    markdown = (example / "report" / "report.md").read_text()
    for stem in (
        "isoflop",
        "optimal_scaling",
        "compute_law",
        "parametric",
        "loss_curves",
        "lr_schedules",
        "routing",
    ):
        folder = example / "report"
        with Image.open(folder / f"{stem}.png") as png:
            assert min(png.info["dpi"]) >= 199.9 and png.width > 1000
        svg = (folder / f"{stem}.svg").read_text()
        # text kept as text: <text> elements, not glyphs drawn as paths
        assert svg.lstrip().startswith("<?xml") and "<text" in svg
        assert 'id="DejaVuSans-' not in svg
        pdf = (folder / f"{stem}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and b"/FontFile2" in pdf and b"/Type3" not in pdf
        assert f"({stem}.png)" in markdown
    assert "1e+15" in page  # the prediction at the requested target
    # next steps: the run `moescale recommend` makes at the target, the suggested runs
    steps = markdown[markdown.index("## Next steps") :]
    target = report_target_run(example)(fit)
    assert target.budget_flops == 1e15
    assert f"n_active {target.n_active:,}" in steps and f"{target.tokens:.4g} tokens" in steps
    assert "×3.00 wide now" in steps and "×2.20 expected" in steps
    assert "the sweep's grid continued (chosen)" in steps and "4.75e+12: 46,470, 101,596" in steps
    assert "2.00 – 2.50" in steps  # what one real set of runs may give
    assert "take the law as exact past the sweep" in steps  # what the outcomes assumed


def test_report_on_a_partly_finished_sweep_says_what_is_missing(example):
    runs = load_runs(example)
    runs.loc[runs.index[:2], ["status", "final_loss"]] = ["planned", float("nan")]
    runs.loc[runs.index[2], ["status", "error"]] = ["diverged", "train loss 9.1 at step 40"]
    atomic_write_parquet(example / "runs.parquet", runs)
    page = build_report(example, bootstrap=0)[0].read_text()
    assert "not finished: 2 run(s) still planned or running" in page
    assert f"run {runs['run_id'].iloc[2]}" in page and "diverged" in page


def test_report_uses_a_matching_fit_json_and_refits_when_a_run_lands(example):
    _, first = build_report(example, bootstrap=50)
    # mark fit.json: a report that reads it shows the mark; one that refits cannot
    data = json.loads((example / "fit.json").read_text())
    data["prediction"]["n_opt"] = 123456789.0
    (example / "fit.json").write_text(json.dumps(data))
    page = build_report(example)[0].read_text()  # no options: fit.json's own
    assert "1.23e+08 activated parameters" in page
    assert "as written" in page
    # a new run lands (here: one run's loss changes, as a rerun would write it)
    runs = load_runs(example)
    runs.loc[runs.index[0], "final_loss"] += 0.01
    atomic_write_parquet(example / "runs.parquet", runs)
    index, refit = build_report(example)
    page = index.read_text()
    assert "1.23e+08 activated parameters" not in page
    assert "Refitted" in page and "other runs" in page
    assert json.loads((example / "fit.json").read_text())["runs_hash"] == refit.runs_hash
    assert refit.runs_hash != first.runs_hash


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ({"source": "an older moescale"}, "not a moescale fit.json"),
        # a newer moescale's fit.json whose prediction means something else (issue 27)
        ({"moescale_version": "9.0.0", "prediction": {"method": "x"}}, "newer than this one"),
    ],
    ids=["older", "newer"],
)
def test_report_refits_over_a_fit_json_it_cannot_read(example, written, said):
    if "moescale_version" in written:
        written = json.loads((EXAMPLE / "fit.json").read_text()) | written  # as committed
    (example / "fit.json").write_text(json.dumps(written))
    index, fit = build_report(example, bootstrap=20)
    assert "Refitted" in index.read_text() and said in index.read_text()
    assert json.loads((example / "fit.json").read_text())["runs_hash"] == fit.runs_hash


def test_step_limited_optima_are_called_out(example):
    runs = load_runs(example)
    fit = fit_all(runs, None, "example", FitOptions(method="isoflop", bootstrap=0), strict=False)
    same = runs.assign(steps=1000)  # every optimum took the same number of steps
    assert "step-limited" in step_limited_warning(same, fit)
    growing = runs.assign(
        steps=(runs["budget_flops"] / runs["budget_flops"].min() * 1000).astype(int)
    )
    assert step_limited_warning(growing, fit) is None


@pytest.mark.xdist_group("first_report")
def test_report_in_a_real_browser(first_report, tmp_path):
    executable = find_chromium()
    if executable is None:
        pytest.skip(
            "no Chromium here: install Debian's `chromium` package (.ci/run does) to run the browser test"
        )
    example, index, _ = first_report
    browser = Browser(executable)
    try:
        screenshot = tmp_path / "report.png"
        seen = browser.open(index.as_uri(), screenshot=screenshot, probe=_hover_every_figure)
    finally:
        browser.close()
    assert seen["title"].startswith("moescale report")
    assert seen["errors"] == []
    figures = seen["probe"]
    assert len(figures) >= 7
    run_ids = set(load_runs(example)["run_id"])
    for figure in figures:
        # the figure's text is text the browser lays out, not glyph outlines
        assert figure["texts"] > 10 and figure["glyph_paths"] == 0, figure
        assert figure["width"] > 300, figure  # drawn, not collapsed
        if figure["name"] == "lr_schedules":  # lines only, no points to hover
            continue
        if figure["name"] == "optimal_scaling":  # its points are budgets' optima, not runs
            assert figure["shown"].startswith("budget C = "), figure
            continue
        # hovering a point shows the tooltip that names its run(s), N, D, C and loss
        assert figure["shown"] == figure["expected"] and not figure["hidden"], figure
        named = re.findall(r"\b[0-9a-f]{12}\b", figure["shown"])
        assert named and set(named) <= run_ids, figure
        for quantity in ("N = ", "D = ", "C = ", "nats/token"):
            assert quantity in figure["shown"], figure
    assert screenshot.stat().st_size > 50_000
    keep = ROOT / ".pytest_cache"
    if keep.is_dir():  # left for a person to look at after the run
        shutil.copy(screenshot, keep / "report-screenshot.png")


def _hover_every_figure(call) -> list[dict]:
    """For each inline figure: how many <text> elements it has and whether any glyph is drawn
    as a path; then the pointer moved onto its first point that is not covered by another
    mark, and what the page's tooltip said."""

    def evaluate(expression: str):
        result = call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]
        return json.loads(result["value"]) if result.get("value") else None

    count = evaluate("JSON.stringify(document.querySelectorAll('svg.figure').length)")
    figures = []
    for i in range(count):
        figure = evaluate(f"""JSON.stringify((() => {{
            const f = document.querySelectorAll('svg.figure')[{i}];
            const out = {{name: f.getAttribute('aria-label'), texts: f.querySelectorAll('text').length,
                         glyph_paths: f.querySelectorAll('path[id^="DejaVu"]').length,
                         width: f.getBoundingClientRect().width}};
            for (const p of f.querySelectorAll('[data-tip]')) {{
                p.scrollIntoView({{block: 'center'}});
                const r = p.getBoundingClientRect(), x = r.x + r.width / 2, y = r.y + r.height / 2;
                const hit = document.elementFromPoint(x, y);
                if (hit && hit.closest('[data-tip]') === p) {{
                    return Object.assign(out, {{x: x, y: y, expected: p.getAttribute('data-tip')}});
                }}
            }}
            return out;
        }})())""")
        if "x" in figure:
            call("Input.dispatchMouseEvent", type="mouseMoved", x=figure["x"], y=figure["y"])
            figure.update(
                evaluate(
                    "JSON.stringify({hidden: document.getElementById('tip').hidden, shown: document.getElementById('tip').textContent})"
                )
            )
            call("Input.dispatchMouseEvent", type="mouseMoved", x=1, y=1)
        figures.append(figure)
    return figures


def _numbers(value, path=""):
    """Every number in a JSON tree, by its path; bootstrap draws ("samples") aside: in a flat
    valley a draw may end elsewhere within its tolerance on another machine."""
    if isinstance(value, dict):
        return {
            k: v
            for key in value
            if key != "samples"
            for k, v in _numbers(value[key], f"{path}.{key}").items()
        }
    if isinstance(value, list):
        return {k: v for i, x in enumerate(value) for k, v in _numbers(x, f"{path}[{i}]").items()}
    return {path: value} if isinstance(value, int | float) and not isinstance(value, bool) else {}


def test_refitting_the_example_gives_its_committed_fit_json(tmp_path):
    """`moescale fit results/example`, as committed, writes the committed fit.json again: the
    headline, every method's prediction, every law's parameters and intervals, the same keys
    and the same words. To 1e-3 of each number, not 1e-9: a five-parameter law's flat
    directions are pinned only to about the square root of the objective's rounding, so
    another machine's BLAS moves bootstrap percentiles by up to 3e-5 (measured between two
    machines, 2026-12-02); any change of method moves them by far more."""
    from cli_helpers import moescale

    result = moescale("fit", str(EXAMPLE), "--out", str(tmp_path / "fit.json"))
    assert result.returncode == 0, result.stderr
    committed = json.loads((EXAMPLE / "fit.json").read_text())
    again = json.loads((tmp_path / "fit.json").read_text())
    assert set(again) == set(committed)
    for key in set(committed) - {"created", "source"}:
        want, got = _numbers(committed[key], key), _numbers(again[key], key)
        assert set(got) == set(want), key
        assert got == pytest.approx(want, rel=1e-3, abs=1e-6), key
    assert again["prediction"]["method"] == committed["prediction"]["method"]
    assert again["prediction"]["agreement"] == committed["prediction"]["agreement"]


def test_compare_draws_every_sweep_on_one_figure_and_one_table(tmp_path):
    from moescale.analysis.compare import compare

    for name, scale in (("baseline", 0.0), ("changed", 0.02)):
        folder = tmp_path / name
        shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("report", "fit.json"))
        runs = load_runs(folder)
        runs["final_loss"] *= 1 + scale * runs["n_active"] / runs["n_active"].max()
        atomic_write_parquet(folder / "runs.parquet", runs)

    def contents() -> dict:
        return {
            str(path): (path.stat().st_mtime_ns, path.read_bytes())
            for name in ("baseline", "changed")
            for path in sorted((tmp_path / name).rglob("*"))
            if path.is_file()
        }

    before = contents()
    table = compare([tmp_path / "baseline", tmp_path / "changed"], tmp_path / "out")
    assert contents() == before  # fitted in memory: no fit.json written into an input
    assert table["sweep"].tolist() == ["baseline", "changed"]
    # the change penalises large models: the optimum it predicts is smaller
    assert table.loc[1, "N_opt at C"] < table.loc[0, "N_opt at C"]
    svg = (tmp_path / "out" / "compare.svg").read_text()
    assert "baseline" in svg and "changed" in svg  # both drawn and named
    assert (tmp_path / "out" / "compare.png").stat().st_size > 10_000
    assert len((tmp_path / "out" / "compare.csv").read_text().splitlines()) == 3


def test_compare_shows_a_sweep_no_law_fits_and_says_why(tmp_path):
    """One budget's runs fit no law: compare still draws and tabulates both sweeps, that one
    marked 'no law fitted' with the fits' own reasons."""
    from moescale.analysis.compare import compare

    shutil.copytree(EXAMPLE, tmp_path / "example", ignore=shutil.ignore_patterns("report"))
    one = tmp_path / "one"
    shutil.copytree(EXAMPLE, one, ignore=shutil.ignore_patterns("report", "fit.json"))
    runs = load_runs(one)
    atomic_write_parquet(one / "runs.parquet", runs[runs["budget_flops"] == 3e12])
    table = compare([tmp_path / "example", one], tmp_path / "out").set_index("sweep")
    assert table.loc["example", "note"] == "" and table.loc["example", "N_opt at C"] > 0
    assert table.loc["one", "headline method"] == "no law fitted"
    assert "1 budget(s) with an interior optimum" in table.loc["one", "note"]
    assert "no law" in (tmp_path / "out" / "compare.svg").read_text()


def test_numbers_on_figures_are_written_with_real_superscripts():
    from moescale.analysis.style import sci

    assert sci(3e14) == r"$3\times10^{14}$"
    assert sci(1e13) == "$10^{13}$"
    assert sci(9.9996e4) == "$10^{5}$"  # rounding carries into the exponent
    assert sci(5.92e-3) == r"$5.92\times10^{-3}$"
    assert sci(1500) == "1500" and sci(0.0123) == "0.0123" and sci(6.49) == "6.49"


def test_names_that_hold_html_are_text_in_both_the_page_and_the_markdown(tmp_path):
    """A run or sweep name can hold anything a table or folder name can: <script> must reach
    neither index.html (autoescape) nor report.md (Markdown passes raw HTML through)."""
    import pandas as pd

    from moescale.analysis.report import Section, write_html

    evil = "<script>alert(1)</script>"
    section = Section(
        title=f"runs of {evil}",
        paragraphs=[f"the run {evil} & co"],
        table=pd.DataFrame({"run_id": [evil], "final_loss": [3.0]}),
        warnings=[f"{evil} diverged"],
    )
    write_html(tmp_path, [section], f"sweep {evil}")
    page = (tmp_path / "report" / "index.html").read_text()
    markdown = (tmp_path / "report" / "report.md").read_text()
    for text in (page, markdown):
        assert "<script>alert" not in text
    assert (
        markdown.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 5
    )  # title, heading, text, warning, cell
    assert "&amp; co" in markdown


def test_the_report_states_the_bias_spread_of_bias_balanced_runs():
    from moescale.analysis.report import _last_bias_spread

    curves = pd.DataFrame(
        {
            "run_id": ["a", "a", "b", "b", "c"],
            "bias_spread": [0.1, 0.3, 0.2, 0.5, np.nan],  # c: balanced another way
        }
    )
    assert _last_bias_spread(curves) == (0.3, 0.5)  # each run's last, over the runs
    assert _last_bias_spread(curves.assign(bias_spread=np.nan)) is None
    assert _last_bias_spread(curves.drop(columns="bias_spread")) is None  # older curves
