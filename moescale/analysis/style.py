"""How moescale's figures look and how they are written: one style, colour-blind-safe colours,
one colour scale per meaning, numbers written as 10^k, hover labels for the HTML report, and
files a paper can use (PDF and SVG with their text as text, PNG at 200 dpi)."""

from __future__ import annotations

import contextlib
import functools
import html
import io
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from cycler import cycler  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from moescale.results import atomic_write_bytes  # noqa: E402

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision
# deficiencies; black moved last so that it stays free for data of one kind (the sweep's optima).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
# One colour scale per meaning, the same in every figure; all perceptually uniform and
# colour-blind safe. Cut before their palest end, which vanishes on white.
BUDGET_CMAP = matplotlib.colors.ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 0.88, 256)))
SIZE_CMAP = matplotlib.colors.ListedColormap(plt.get_cmap("cividis")(np.linspace(0, 0.85, 256)))
LOSS_CMAP = matplotlib.colors.ListedColormap(plt.get_cmap("magma")(np.linspace(0.05, 0.85, 256)))

PNG_DPI = 200
FORMATS = ("png", "svg", "pdf")

RC = {
    "svg.fonttype": "none",  # text stays <text>, editable and searchable
    "pdf.fonttype": 42,  # TrueType, not Type 3: journals ask for it
    "ps.fonttype": 42,
    "savefig.dpi": PNG_DPI,
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "errorbar.capsize": 2.5,
    # room above titles: a browser drawing the SVG's text with its own font metrics would
    # otherwise clip their tops at the figure's edge
    "figure.constrained_layout.h_pad": 0.1,
}

# the words on every axis, so that one quantity is named one way everywhere
N_LABEL = "activated parameters N"
D_LABEL = "training tokens D"
C_LABEL = "training compute C (FLOPs)"
LOSS_LABEL = "final held-out loss (nats/token)"


def styled(draw):
    """Draw a figure under moescale's style (rcParams are read when artists are made)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(RC):
            fig = draw(*args, **kwargs)
            for ax in fig.axes:
                _tidy_log_labels(ax)
            return fig

    return wrapper


def _tidy_log_labels(ax) -> None:
    """Few enough tick labels on a log axis that they never overlap: under one decade the
    minor ticks at 2 and 5 are labelled too, under two decades those at 3, beyond that only
    the powers of ten (matplotlib's default labels so many minor ticks that they collide)."""
    for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() != "log" or min(limits) <= 0:
            continue
        decades = np.log10(max(limits) / min(limits))
        if decades < 2:
            labelled = (2, 5) if decades < 1 else (3,)

            def label(value, _position, labelled=labelled):
                mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
                return sci(value, 2) if round(mantissa) in labelled else ""

            axis.set_minor_formatter(matplotlib.ticker.FuncFormatter(label))
        else:
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def legend_below(fig: Figure, ax, ncol: int = 2, **kwargs) -> None:
    """The axes' legend under the figure, where it hides no data."""
    if "handles" not in kwargs:
        kwargs["handles"], kwargs["labels"] = ax.get_legend_handles_labels()
    fig.legend(loc="outside lower center", ncol=ncol, **kwargs)


def figure(nrows: int = 1, ncols: int = 1, width: float = 5.2, height: float = 3.6):
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(width * ncols, height * nrows),
        constrained_layout=True,
        squeeze=False,
    )
    return fig, axes.ravel().tolist()


def sci(x: float, digits: int = 3) -> str:
    """A number for a label: plain between 0.01 and 10,000, else m×10^k with a real
    superscript (mathtext)."""
    if x is None or not np.isfinite(x):
        return "n/a"
    if x == 0 or 1e-2 <= abs(x) < 1e4:
        return np.format_float_positional(x, precision=digits, fractional=False, trim="-")
    exponent = math.floor(math.log10(abs(x)))
    mantissa = f"{x / 10**exponent:.{digits}g}"
    if mantissa == "10":  # rounding carried over
        mantissa, exponent = "1", exponent + 1
    if mantissa == "1":
        return rf"$10^{{{exponent}}}$"
    return rf"${mantissa}\times10^{{{exponent}}}$"


def log_norm(values) -> Normalize:
    values = np.asarray(values, float)
    values = values[np.isfinite(values) & (values > 0)]
    low, high = values.min(), values.max()
    if high <= low * 1.0001:
        low, high = low / 2, high * 2
    return LogNorm(low, high)


def colour_bar(fig: Figure, ax, cmap, norm: Normalize, label: str) -> None:
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label, pad=0.01)


def hover(fig: Figure, collection, labels: list[str]) -> None:
    """Attach one label per point of a scatter collection; the HTML report shows it when the
    pointer is over that point. Files written for papers carry no hover."""
    registry = fig.__dict__.setdefault("_moescale_hover", {})
    gid = f"hover-{len(registry)}"
    collection.set_gid(gid)
    registry[gid] = list(labels)


def run_label(run_id, n_active, tokens, flops, loss, extra: str = "") -> str:
    """What hovering a run's point says: its id, N, D, C and loss, in their units."""

    def g(x):
        return f"{x:.4g}" if x is not None and np.isfinite(x) else "n/a"

    text = f"run {run_id} · N = {g(n_active)} activated · D = {g(tokens)} tokens · C = {g(flops)} FLOPs · loss {g(loss)} nats/token"
    return text + (f" · {extra}" if extra else "")


def figure_bytes(fig: Figure, fmt: str, salt: str = "") -> bytes:
    # the salt makes the SVG's internal ids (clip paths, markers) unique per figure, so several
    # figures can live inline in one HTML page without one's ids capturing another's
    with plt.rc_context({**RC, "svg.hashsalt": salt or None}):
        buffer = io.BytesIO()
        metadata = {"Creator": "moescale"} if fmt in ("svg", "pdf") else {}
        if fmt == "svg":
            metadata["Date"] = None  # the same figure gives the same file
        if fmt == "pdf":
            metadata["CreationDate"] = None
        fig.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=metadata)
    return buffer.getvalue()


def save_figure(fig: Figure, folder: Path, stem: str) -> dict[str, bytes]:
    """stem.png (200 dpi), stem.svg and stem.pdf (text as text), each written atomically;
    returns each format's bytes (the report inlines the SVG without drawing it again)."""
    written = {}
    with _laid_out_once(fig):
        for fmt in FORMATS:
            written[fmt] = figure_bytes(fig, fmt, salt=stem)
            atomic_write_bytes(Path(folder) / f"{stem}.{fmt}", written[fmt])
    return written


@contextlib.contextmanager
def _laid_out_once(fig: Figure):
    """The figure's layout solved once for all its formats, every file the same layout. Each
    save would otherwise solve a constrained layout again (a third of a report's time), and
    under any layout engine, even matplotlib's 'none' placeholder, draws the whole figure
    once more before drawing it for real (another third); so the engine is taken off while
    the files are written and put back after."""
    engine = fig.get_layout_engine()
    if engine is not None:
        with plt.rc_context(RC):
            fig.draw_without_rendering()
        # None, not "none": with neither rc setting on, no placeholder engine is left behind
        with plt.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
            fig.set_layout_engine(None)
    try:
        yield
    finally:
        if engine is not None:
            fig.set_layout_engine(engine)


_USE = re.compile(r"<use\b[^>]*?/>")


def inline_svg(fig: Figure, stem: str, svg_bytes: bytes | None = None) -> str:
    """The figure as an <svg> element for an HTML page: ids unique to this figure, and each
    hoverable point given its label (data-tip, and a <title> for a plain hover).
    `svg_bytes`: the figure's SVG as `save_figure` wrote it (else drawn here)."""
    svg = (svg_bytes or figure_bytes(fig, "svg", salt=stem)).decode()
    svg = svg[svg.index("<svg") :]
    # the RDF metadata describes the file, not the page
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    for gid, labels in fig.__dict__.get("_moescale_hover", {}).items():
        start = svg.find(f'<g id="{gid}">')
        if start < 0:
            continue
        close = _group_end(svg, start)
        end = svg.find("</defs>", start, close)
        end = start if end < 0 else end
        labels_left = iter(labels)

        def tag(match, labels_left=labels_left):
            label = next(labels_left, None)
            if label is None:
                return match.group(0)
            text = html.escape(label, quote=True)
            return f'{match.group(0)[:-2]} class="hoverable" data-tip="{text}"><title>{text}</title></use>'

        # the group's points are its <use> elements in the order of the collection's offsets
        svg = svg[:end] + _USE.sub(tag, svg[end:close]) + svg[close:]
    # every id made the figure's own (matplotlib numbers them figure_1, axes_1, … in each file),
    # so that the page's ids are unique and one figure's references never reach another's
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    svg = re.sub(
        r'(\bid="|href="#|url\(#)([^")]+)',
        lambda m: m.group(1) + (f"{stem}-{m.group(2)}" if m.group(2) in ids else m.group(2)),
        svg,
    )
    return svg.replace(
        "<svg ", f'<svg class="figure" role="img" aria-label="{html.escape(stem)}" ', 1
    )


def _group_end(svg: str, start: int) -> int:
    """Index just past the </g> that closes the <g> opened at `start`."""
    depth, i = 0, start
    pattern = re.compile(r"<g\b|</g>")
    for match in pattern.finditer(svg, start):
        depth += 1 if match.group(0) == "<g" else -1
        i = match.end()
        if depth == 0:
            break
    return i
