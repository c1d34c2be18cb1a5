"""Pictures of local attributions: token heatmaps as HTML pages, deletion and insertion curves as PNG, and
screenshots of HTML pages with headless Chromium.

A token heatmap colours each token by its score: red where the score is positive (the token supports the
prediction), blue where it is negative (the token opposes it), as the demo (`experiments/demo/run.py`) does. The
colour's opacity is `|score| / scale`, with `scale` the largest `|score|` unless given, so the strongest token is
fully coloured and a token scoring zero is left white. (The circuit drawings of `jaxinterp.circuits.render` use the
same two colours the other way round, blue for a positive edge or node score, because there a positive score is
not a vote for a class.) Every token is a `<span class="token" data-score="...">` whose `title` tooltip gives the
score, so a page can be checked by a program as well as read.

Only Python, numpy and matplotlib are used (no JAX); `screenshot` also needs a Chromium executable, which
`jaxinterp assets install chromium` (or `apt-get install chromium`) installs.
"""

from __future__ import annotations

import html
import math
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import SupportsFloat

import numpy as np

from .. import assets

SUPPORTS_RGB = (178, 24, 43)  # #b2182b, red: a positive score, the token supports the prediction
OPPOSES_RGB = (33, 102, 172)  # #2166ac, blue: a negative score, the token opposes the prediction
_WHITE_TEXT_ABOVE = 0.6  # opacity above which a token's text is white rather than black
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_STYLE = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 16px; color: #202020; background: #ffffff; }
h1 { font-size: 18px; font-weight: bold; margin: 0 0 4px 0; }
.subtitle { color: #505050; margin: 0 0 12px 0; }
.sentence { line-height: 2; }
.token { padding: 2px 5px; margin: 1px; border-radius: 3px; white-space: pre; }
.legend { color: #505050; font-size: 13px; margin-top: 12px; }
.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 2px; vertical-align: middle; }
table.heatmap { border-collapse: collapse; }
table.heatmap th, table.heatmap td { border: 1px solid #d0d0d0; padding: 6px 8px; vertical-align: top; }
table.heatmap th { background: #f0f0f0; text-align: left; font-weight: bold; }
table.heatmap td.cell { line-height: 1.9; }
table.heatmap th.row-label { vertical-align: middle; }
"""


def _floats(scores: Iterable[SupportsFloat], what: str) -> list[float]:
    values = [float(score) for score in scores]
    bad = [value for value in values if not math.isfinite(value)]
    if bad:
        raise ValueError(f"{what} must be finite, got {bad[0]}")
    return values


def _scale_of(scores: Sequence[float], scale: float | None) -> float:
    if scale is None:
        return max((abs(score) for score in scores), default=0.0) or 1.0
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale}")
    return float(scale)


def _token_spans(tokens: Sequence[str], scores: Sequence[float], scale: float, tooltip_prefix: str = "") -> str:
    spans = []
    for token, score in zip(tokens, scores):
        opacity = min(abs(score) / scale, 1.0)
        red, green, blue = SUPPORTS_RGB if score > 0 else OPPOSES_RGB
        text_colour = "#ffffff" if opacity > _WHITE_TEXT_ABOVE else "#000000"
        spans.append(
            f'<span class="token" data-score="{score!r}" title="{html.escape(tooltip_prefix)}{score:+.4g}" '
            f'style="background-color: rgba({red}, {green}, {blue}, {opacity:.3f}); color: {text_colour}">'
            f"{html.escape(token)}</span>"
        )
    return " ".join(spans)


def _legend(note: str) -> str:
    red = "rgb({}, {}, {})".format(*SUPPORTS_RGB)
    blue = "rgb({}, {}, {})".format(*OPPOSES_RGB)
    return (
        f'<p class="legend"><span class="swatch" style="background-color: {red}"></span> red: positive score, '
        f'supports the prediction &nbsp; <span class="swatch" style="background-color: {blue}"></span> blue: '
        f"negative score, opposes it &nbsp; white: zero. {html.escape(note)} Hover over a token for its score.</p>"
    )


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title or 'Token attributions')}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def heatmap_html(
    tokens: Sequence[str],
    scores: Iterable[SupportsFloat],
    *,
    title: str = "",
    subtitle: str = "",
    scale: float | None = None,
    font_size: int = 22,
) -> str:
    """A standalone HTML page showing one sentence's tokens coloured by their attribution scores.

    Each token is a `<span class="token">` with its score in `data-score` and in a `title` tooltip, on a background
    of red (positive score: supports the prediction) or blue (negative: opposes it) whose opacity is
    `|score| / scale`. Tokens and titles are HTML-escaped; a legend says what the colours mean.

    **Arguments:**

    - `tokens`: the tokens (or words), in order, as they are to be shown.
    - `scores`: one finite score per token (a list, a numpy array or any array with `float` elements).
    - `title`: a heading for the page (also its `<title>`); none if empty.
    - `subtitle`: a line under the heading, for example the prediction and the method; none if empty.
    - `scale`: the `|score|` shown at full opacity (larger ones are clipped to it); by default the largest
        `|score|`, so that pages of different sentences are each scaled to their own strongest token.
    - `font_size`: the tokens' font size in CSS pixels.

    **Returns:**

    The page, as text. Raises `ValueError` if the numbers of tokens and scores differ, a score is not finite or
    `scale` is not positive.
    """
    values = _floats(scores, "scores")
    if len(values) != len(tokens):
        raise ValueError(f"got {len(tokens)} tokens but {len(values)} scores")
    scale = _scale_of(values, scale)
    parts = []
    if title:
        parts.append(f"<h1>{html.escape(title)}</h1>")
    if subtitle:
        parts.append(f'<p class="subtitle">{html.escape(subtitle)}</p>')
    parts.append(f'<p class="sentence" style="font-size: {font_size}px">{_token_spans(tokens, values, scale)}</p>')
    parts.append(_legend(f"Opacity: |score| / {scale:.4g}."))
    return _page(title, "\n".join(parts))


def heatmap_table_html(
    sentences: Sequence[Sequence[str]],
    scores: Mapping[str, Sequence[Iterable[SupportsFloat]]],
    *,
    title: str = "",
    row_labels: Sequence[str] | None = None,
) -> str:
    """A standalone HTML page with a table of token heatmaps: one row per sentence, one column per method.

    Each cell (`<td class="cell" data-method="..." data-row="i">`) holds that sentence's tokens coloured by that
    method's scores, as in `heatmap_html`, scaled by the cell's own largest `|score|`: methods' scores have different
    units and sizes, so colours compare tokens within a cell, not across cells (the legend says so).

    **Arguments:**

    - `sentences`: the sentences, each a sequence of tokens.
    - `scores`: from each method's name (a column, in the mapping's order) to its scores: one sequence of per-token
        scores per sentence, in the order of `sentences`.
    - `title`: a heading for the page (also its `<title>`); none if empty.
    - `row_labels`: a label for each sentence, shown in the first column (for example the true class); by default
        the sentence's number, from 1.

    **Returns:**

    The page, as text. Raises `ValueError` if there are no methods, or a method's scores do not match the sentences
    in number or length, or a score is not finite.
    """
    if not scores:
        raise ValueError("scores holds no method")
    if row_labels is None:
        row_labels = [str(i + 1) for i in range(len(sentences))]
    elif len(row_labels) != len(sentences):
        raise ValueError(f"got {len(sentences)} sentences but {len(row_labels)} row labels")
    cells: dict[str, list[list[float]]] = {}
    for method, per_sentence in scores.items():
        if len(per_sentence) != len(sentences):
            raise ValueError(f"method {method!r} has scores for {len(per_sentence)} sentences, not {len(sentences)}")
        cells[method] = []
        for row, (tokens, sentence_scores) in enumerate(zip(sentences, per_sentence)):
            values = _floats(sentence_scores, f"scores of method {method!r}")
            if len(values) != len(tokens):
                raise ValueError(
                    f"method {method!r}, sentence {row}: got {len(tokens)} tokens but {len(values)} scores"
                )
            cells[method].append(values)
    header = "".join(f"<th>{html.escape(method)}</th>" for method in cells)
    rows = []
    for row, (tokens, label) in enumerate(zip(sentences, row_labels)):
        row_cells = []
        for method, per_sentence in cells.items():
            scale = _scale_of(per_sentence[row], None)
            row_cells.append(
                f'<td class="cell" data-method="{html.escape(method)}" data-row="{row}" '
                f'title="{html.escape(method)}: full colour at |score| {scale:.4g}">'
                f"{_token_spans(tokens, per_sentence[row], scale, f'{method}: ')}</td>"
            )
        rows.append(f'<tr><th class="row-label">{html.escape(label)}</th>{"".join(row_cells)}</tr>')
    parts = [f"<h1>{html.escape(title)}</h1>"] if title else []
    parts.append(
        f'<table class="heatmap">\n<thead><tr><th></th>{header}</tr></thead>\n<tbody>\n'
        + "\n".join(rows)
        + "\n</tbody>\n</table>"
    )
    parts.append(
        _legend(
            "Each cell is scaled by its own largest |score| (full colour there), so compare colours within a cell, "
            "not across cells."
        )
    )
    return _page(title, "\n".join(parts))


def write_html(path: str | pathlib.Path, html: str) -> pathlib.Path:
    """Write an HTML page to a file, creating its folder if need be.

    **Arguments:**

    - `path`: the file to write.
    - `html`: the page, for example from `heatmap_html` or `heatmap_table_html`.

    **Returns:**

    `path`, as a `pathlib.Path`.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def plot_curves(
    curves: Mapping[str, Iterable[SupportsFloat]],
    fractions: Iterable[SupportsFloat],
    path: str | pathlib.Path,
    *,
    title: str,
    ylabel: str,
    xlabel: str = "fraction of features removed or inserted",
    size: tuple[int, int] = (640, 400),
) -> pathlib.Path:
    """A PNG of deletion or insertion curves: one line per attribution method, with its area under the curve.

    A deletion curve follows the model's output as the features an attribution ranks highest are removed first (a
    faithful attribution makes it fall fast: a small area); an insertion curve follows it as they are inserted first
    into an uninformative input (it should rise fast: a large area). The area is the trapezoidal integral over
    `fractions`. The figure is drawn with matplotlib's Agg backend on a `Figure` of its own, leaving pyplot alone.

    **Arguments:**

    - `curves`: from each method's name to its curve, one value per fraction.
    - `fractions`: the fractions of features removed or inserted, increasing (the x axis).
    - `path`: the PNG file to write; its folder is created if need be.
    - `title`: the plot's title.
    - `ylabel`: what the curves measure, for example "probability of the predicted class".
    - `xlabel`: the x axis label.
    - `size`: the image's width and height in pixels.

    **Returns:**

    `path`, as a `pathlib.Path`. Raises `ValueError` if there are no curves, or a curve's length differs from that
    of `fractions`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x = np.asarray(_floats(fractions, "fractions"))
    if not curves:
        raise ValueError("curves holds no method")
    width, height = size
    figure = Figure(figsize=(width / 100, height / 100), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, curve in curves.items():
        y = np.asarray(curve, dtype=float)
        if y.shape != x.shape:
            raise ValueError(f"curve {name!r} has shape {y.shape}, but fractions have shape {x.shape}")
        area = float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))
        axes.plot(x, y, marker="o" if len(x) <= 25 else None, markersize=3, label=f"{name} (area {area:.3g})")
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if len(x) > 1:
        axes.set_xlim(float(x.min()), float(x.max()))
    axes.grid(alpha=0.3)
    axes.legend()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100, facecolor="#ffffff")
    return path


def find_chromium(chromium: str | pathlib.Path | None = None) -> str:
    """The Chromium (or Chrome) executable that `screenshot` runs.

    **Arguments:**

    - `chromium`: an executable's path or name to use; by default, the file `$JAXINTERP_ASSET_CHROMIUM` points at
        if it is set, else the first of `chromium`, `chromium-browser`, `google-chrome`, `google-chrome-stable` on
        `PATH`, else where the `chromium` asset resolves (`/usr/bin/chromium`, installed by
        `jaxinterp assets install chromium`).

    **Returns:**

    The executable's path. Raises `FileNotFoundError`, saying how to install Chromium, if none is found.
    """
    if chromium is not None:
        found = shutil.which(str(chromium))
        if found is None:
            raise FileNotFoundError(f"no Chromium executable at {str(chromium)!r}")
        return found
    if not os.environ.get(assets.get_asset("chromium").environment_variable):
        for name in _CHROMIUM_NAMES:
            found = shutil.which(name)
            if found is not None:
                return found
    try:
        return str(assets.resolve("chromium", download=False))
    except assets.AssetNotFoundError as error:
        raise FileNotFoundError(
            f"Chromium is needed to screenshot HTML pages, but none of {', '.join(_CHROMIUM_NAMES)} is on PATH and "
            "the chromium asset is not installed. Install it with: apt-get install chromium (as root, on Debian), "
            "or: jaxinterp assets install chromium; or pass chromium=PATH.\n" + str(error)
        ) from None


def screenshot(
    html_path: str | pathlib.Path,
    png_path: str | pathlib.Path,
    *,
    width: int = 1200,
    height: int = 400,
    chromium: str | pathlib.Path | None = None,
    timeout: float = 60.0,
) -> pathlib.Path:
    """Render an HTML file to a PNG with headless Chromium.

    Chromium runs with a fresh, temporary profile, without a sandbox (so it runs as root), GPU or background
    networking (component updates, sync, QUIC), so it neither needs nor waits for a network, and at a device scale
    factor of 1, so the PNG is `width` x `height` pixels of the page's top left.

    **Arguments:**

    - `html_path`: the page to render.
    - `png_path`: the PNG file to write; its folder is created if need be.
    - `width`, `height`: the browser window's size, in pixels.
    - `chromium`: the executable to run; by default as found by `find_chromium`.
    - `timeout`: seconds to wait for Chromium before stopping it.

    **Returns:**

    `png_path`, as a `pathlib.Path`. Raises `FileNotFoundError` if `html_path` or Chromium is missing (saying how to
    install it), `TimeoutError` if Chromium takes longer than `timeout`, and `RuntimeError` if it writes no
    screenshot.
    """
    binary = find_chromium(chromium)
    html_path = pathlib.Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(f"no HTML file at {html_path}")
    png_path = pathlib.Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="jaxinterp-chromium-", ignore_cleanup_errors=True) as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--window-size={width},{height}",
            f"--screenshot={png_path}",
            html_path.as_uri(),
        ]
        # a session of its own, so that on a timeout the browser's helper processes are stopped with it
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(process)
            raise TimeoutError(
                f"Chromium ({binary}) did not screenshot {html_path} within {timeout:g} s; it was stopped"
            ) from None
    if process.returncode != 0 or not png_path.is_file():
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        raise RuntimeError(
            f"Chromium ({binary}) exited with status {process.returncode} and "
            f"{'wrote' if png_path.is_file() else 'did not write'} {png_path}; the end of its output:\n{tail}"
        )
    return png_path


def _stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        process.kill()
    process.communicate()
