"""Token heatmaps, deletion/insertion curves and Chromium screenshots (`jaxinterp.attribution.render`).

The screenshot test needs Chromium. `make test` installs it (`jaxinterp assets install all` runs
`apt-get install chromium`); where it is missing the test fails with the install hint, and it is skipped only on
an OS without `apt-get`, where the `chromium` asset cannot be installed.
"""

import dataclasses
import html.parser
import itertools
import re
import shutil
import stat

import numpy as np
import pytest
from PIL import Image

from jaxinterp import assets
from jaxinterp.attribution import render


class _Tokens(html.parser.HTMLParser):
    """The `class="token"` spans of a page, in order: (text, data-score, background rgba), grouped by table cell."""

    def __init__(self):
        super().__init__()
        self.tokens, self.cells, self._open = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "td" and "cell" in attrs.get("class", "").split():
            self.cells.append({"method": attrs["data-method"], "row": int(attrs["data-row"]), "tokens": []})
        if tag == "span" and attrs.get("class") == "token":
            rgba = re.search(r"background-color: rgba\(([^)]*)\)", attrs["style"]).group(1)
            red, green, blue, alpha = (float(part) for part in rgba.split(","))
            self._open = {
                "text": "",
                "score": float(attrs["data-score"]),
                "title": attrs["title"],
                "rgb": (red, green, blue),
                "alpha": alpha,
            }

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._open is not None:
            self.tokens.append(self._open)
            if self.cells:
                self.cells[-1]["tokens"].append(self._open)
            self._open = None


def _parse(page):
    parser = _Tokens()
    parser.feed(page)
    return parser


def _is_red(rgb):
    red, green, blue = rgb
    return red > 1.5 * max(green, blue)


def _is_blue(rgb):
    red, green, blue = rgb
    return blue > 1.5 * max(red, green)


def test_heatmap_shows_the_tokens_in_order_escaped_with_their_scores():
    tokens = ["<b>bold</b>", "Tom & Jerry", '"quoted"', "plain"]
    scores = np.array([0.5, -0.25, 0.0, 1.0])
    page = render.heatmap_html(tokens, scores, title="<script>x</script>", subtitle="prediction: positive (0.93)")
    assert page.startswith("<!DOCTYPE html>")
    parsed = _parse(page)
    assert [token["text"] for token in parsed.tokens] == tokens
    assert [token["score"] for token in parsed.tokens] == list(scores)
    assert [token["title"] for token in parsed.tokens] == ["+0.5", "-0.25", "+0", "+1"]
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "Tom &amp; Jerry" in page and "<b>bold" not in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "prediction: positive (0.93)" in page
    assert "red: positive score, supports the prediction" in page and "blue: negative score, opposes it" in page


def test_heatmap_colours_positive_red_negative_blue_with_opacity_by_magnitude():
    parsed = _parse(render.heatmap_html(["a", "b", "c", "d"], [2, -1, 0, -2]))
    a, b, _, d = parsed.tokens
    assert _is_red(a["rgb"]) and _is_blue(b["rgb"]) and _is_blue(d["rgb"])
    assert [token["alpha"] for token in parsed.tokens] == [1.0, 0.5, 0.0, 1.0]


def test_heatmap_scale_sets_full_colour_and_clips():
    parsed = _parse(render.heatmap_html(["a", "b"], [0.5, -3.0], scale=2.0))
    assert [token["alpha"] for token in parsed.tokens] == [0.25, 1.0]
    assert "|score| / 2." in render.heatmap_html(["a"], [0.5], scale=2.0)


def test_heatmap_of_all_zero_scores_is_white():
    parsed = _parse(render.heatmap_html(["a", "b"], [0, 0]))
    assert [token["alpha"] for token in parsed.tokens] == [0.0, 0.0]


def test_heatmap_rejects_mismatched_or_non_finite_scores():
    with pytest.raises(ValueError, match="2 tokens but 3 scores"):
        render.heatmap_html(["a", "b"], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="finite"):
        render.heatmap_html(["a"], [float("nan")])
    with pytest.raises(ValueError, match="positive"):
        render.heatmap_html(["a"], [1.0], scale=0.0)


def test_table_has_one_cell_per_sentence_and_method_each_scaled_by_itself():
    sentences = [["a", "fine", "film"], ["dull", "&", "long"]]
    scores = {
        "CD-T": [[0.0, 2.0, 1.0], [-4.0, 0.0, -1.0]],
        "SHAP": [np.array([0.0, 0.02, -0.01]), np.array([-0.03, 0.0, 0.01])],
        "occlusion": [[0.5, 0.5, 0.0], [0.0, 0.0, -0.1]],
    }
    page = render.heatmap_table_html(sentences, scores, title="SST-2", row_labels=["positive", "negative"])
    parsed = _parse(page)
    assert [(cell["row"], cell["method"]) for cell in parsed.cells] == [
        (row, method) for row in range(2) for method in scores
    ]
    for cell in parsed.cells:
        expected = [float(s) for s in scores[cell["method"]][cell["row"]]]
        assert [token["text"] for token in cell["tokens"]] == sentences[cell["row"]]
        assert [token["score"] for token in cell["tokens"]] == expected
        assert max(token["alpha"] for token in cell["tokens"]) == 1.0  # each cell scaled by its own max |score|
        for token in cell["tokens"]:
            assert token["title"].startswith(cell["method"] + ": ")
            if token["score"] > 0:
                assert _is_red(token["rgb"])
            elif token["score"] < 0:
                assert _is_blue(token["rgb"])
    assert "<th>CD-T</th><th>SHAP</th><th>occlusion</th>" in page
    assert '<th class="row-label">positive</th>' in page
    assert "scaled by its own largest |score|" in page


def test_table_rejects_scores_that_do_not_match_the_sentences():
    with pytest.raises(ValueError, match="scores for 1 sentences, not 2"):
        render.heatmap_table_html([["a"], ["b"]], {"m": [[1.0]]})
    with pytest.raises(ValueError, match="'m', sentence 1: got 1 tokens but 2 scores"):
        render.heatmap_table_html([["a"], ["b"]], {"m": [[1.0], [1.0, 2.0]]})
    with pytest.raises(ValueError, match="no method"):
        render.heatmap_table_html([["a"]], {})


def test_write_html_creates_the_folder(tmp_path):
    path = render.write_html(tmp_path / "a" / "b" / "page.html", render.heatmap_html(["x"], [1.0]))
    assert path == tmp_path / "a" / "b" / "page.html"
    assert 'class="token"' in path.read_text(encoding="utf-8")


def test_plot_curves_writes_a_png_of_the_right_size_that_is_not_blank(tmp_path):
    fractions = np.linspace(0, 1, 11)
    curves = {"CD-T": np.exp(-5 * fractions), "random": 1 - 0.5 * fractions}
    path = render.plot_curves(
        curves, fractions, tmp_path / "plots" / "deletion.png", title="deletion", ylabel="probability"
    )
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert image.shape == (400, 640, 3)
    not_white = (image < 240).any(axis=2)
    assert 0.01 < not_white.mean() < 0.5
    saturation = image.max(axis=2) - image.min(axis=2)
    assert (saturation > 100).sum() > 200  # the coloured lines
    with pytest.raises(ValueError, match="shape"):
        render.plot_curves({"m": [1.0, 2.0]}, [0.0, 0.5, 1.0], tmp_path / "bad.png", title="", ylabel="")


def _fake_executable(path, script):
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_chromium_on_path(monkeypatch, offline_cache, tmp_path):
    """Nothing on PATH is Chromium, and the chromium asset looks for its Debian package's file in `tmp_path/bin`."""
    monkeypatch.delenv("JAXINTERP_ASSET_CHROMIUM", raising=False)
    monkeypatch.setattr(render.shutil, "which", lambda name: name if "/" in str(name) else None)
    asset = assets.ASSETS["chromium"]
    debian = assets.DebianPackage(asset.debian_package.package, str(tmp_path / "bin"))
    monkeypatch.setitem(assets.ASSETS, "chromium", dataclasses.replace(asset, debian_package=debian))
    (tmp_path / "bin").mkdir()
    return tmp_path / "bin"


def test_chromium_is_found_through_the_asset_when_not_on_path(no_chromium_on_path):
    binary = _fake_executable(no_chromium_on_path / "chromium", "exit 0")
    assert render.find_chromium() == str(binary)


def test_missing_chromium_says_how_to_install_it(no_chromium_on_path, tmp_path):
    page = render.write_html(tmp_path / "page.html", render.heatmap_html(["x"], [1.0]))
    with pytest.raises(FileNotFoundError) as error:
        render.screenshot(page, tmp_path / "page.png")
    assert "apt-get install chromium" in str(error.value)
    assert "jaxinterp assets install chromium" in str(error.value)


def test_asset_environment_variable_names_the_executable(monkeypatch, offline_cache, tmp_path):
    binary = _fake_executable(tmp_path / "my-chrome", "exit 0")
    monkeypatch.setenv("JAXINTERP_ASSET_CHROMIUM", str(binary))
    assert render.find_chromium() == str(binary)


def test_screenshot_stops_a_chromium_that_hangs(tmp_path):
    binary = _fake_executable(tmp_path / "hangs", "sleep 30 & sleep 30")
    page = render.write_html(tmp_path / "page.html", render.heatmap_html(["x"], [1.0]))
    with pytest.raises(TimeoutError, match="within 0.5 s"):
        render.screenshot(page, tmp_path / "page.png", chromium=binary, timeout=0.5)


def test_screenshot_reports_a_chromium_that_writes_nothing(tmp_path):
    binary = _fake_executable(tmp_path / "fails", "echo 'no display' >&2; exit 0")
    page = render.write_html(tmp_path / "page.html", render.heatmap_html(["x"], [1.0]))
    with pytest.raises(RuntimeError, match="(?s)did not write .*no display"):
        render.screenshot(page, tmp_path / "page.png", chromium=binary)


def _chromium_or_skip():
    try:
        return render.find_chromium()
    except FileNotFoundError:
        if shutil.which("apt-get") is None:
            pytest.skip("Chromium is not installed and this OS has no apt-get to install the chromium asset with")
        raise


def _runs(labels):
    """The runs of equal labels in a sequence, as (label, start, stop), leaving out `None` (uncoloured)."""
    runs, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            if labels[start] is not None:
                runs.append((labels[start], start, i))
            start = i
    return runs


def test_screenshot_of_a_heatmap_shows_red_blue_red_boxes_in_order(tmp_path):
    binary = _chromium_or_skip()
    tokens = ["Wonderful", "the", "dreadful", "and", "brilliant"]
    page = render.write_html(
        tmp_path / "heatmap.html", render.heatmap_html(tokens, [1.0, 0.0, -1.0, 0.0, 0.9], font_size=40)
    )
    png = render.screenshot(page, tmp_path / "heatmap.png", width=1200, height=300, chromium=binary)
    image = Image.open(png).convert("RGB")
    assert image.size == (1200, 300)
    hsv = np.asarray(image.convert("HSV")).astype(int)  # hue, saturation and value on 0..255
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    strong = (saturation > 128) & (value > 80)
    red = strong & ((hue < 15) | (hue > 240))  # hue within about 20 degrees of red
    blue = strong & (hue > 130) & (hue < 175)  # about 185 to 245 degrees
    # the rows through the tokens: the first band of rows with many coloured pixels (the legend's swatches are small)
    coloured_rows = np.flatnonzero((red | blue).sum(axis=1) > 60)
    assert coloured_rows.size, "no coloured token boxes in the screenshot"
    band_end = coloured_rows[0]
    while band_end + 1 in coloured_rows:
        band_end += 1
    band = slice(coloured_rows[0], band_end + 1)
    assert band_end + 1 - coloured_rows[0] > 20, "the token boxes should be as tall as a 40 px font"
    columns = [
        "red" if r > 3 else "blue" if b > 3 else None for r, b in zip(red[band].sum(axis=0), blue[band].sum(axis=0))
    ]
    runs = [run for run in _runs(columns) if run[2] - run[1] >= 5]  # at least 5 px wide
    assert [colour for colour, _, _ in runs] == ["red", "blue", "red"], runs
    # the neutral tokens between the boxes are left white: no coloured pixel there, and mostly white background
    for (_, _, gap_start), (_, gap_stop, _) in itertools.pairwise(runs):
        assert gap_stop - gap_start > 30, "a neutral word should lie between the coloured boxes"
        inside = slice(gap_start + 3, gap_stop - 3)  # leaving out the boxes' anti-aliased edges
        gap = np.asarray(image)[band, inside].astype(int)
        assert (saturation[band, inside] < 60).all()
        assert (gap.min(axis=2) > 230).mean() > 0.6
