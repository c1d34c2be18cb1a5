import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest

from experiments.cerebellar_dni.config import CerebellarDNIConfig
from experiments.cerebellar_dni.run import digit_templates, main, trace_pen_path

pytestmark = pytest.mark.slow  # trains two small networks


def test_pen_paths_follow_the_ink():
    image = np.zeros((28, 28), np.float32)
    image[4:24, 13:15] = 1.0  # a vertical bar: a "1"
    path = trace_pen_path(image, 28)
    assert path.shape == (28, 2)
    np.testing.assert_allclose(path[:, 0], 13.5 / 27, atol=0.02)
    assert path[0, 1] == pytest.approx(1 - 4 / 27) and path[-1, 1] == pytest.approx(1 - 23 / 27)


def test_cerebellar_dni_smoke():
    config = dataclasses.replace(
        CerebellarDNIConfig.quick(), tasks=("line_drawing",), methods=("bptt", "ccrnn"), line_steps=3, hidden_size=8,
        cerebellum_hidden=(8,), curve_smoothing=2, line_window=5, diagnostic_every=2,
        diagnostic_size=6,
    )  # fmt: skip
    metrics = main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "cerebellar_dni"
    record = json.loads((out / "results.json").read_text())
    assert (out / "results.md").stat().st_size > 0
    assert (out / "learning_curves.png").exists() and (out / "drawings.png").exists()
    assert (out / "gradient_diagnostics.png").exists()
    assert record["paper"]["claim"] and record["config"]["line_steps"] == 3
    assert set(record["metrics"]["tasks"]) == {"line_drawing"}
    for method in ("bptt", "ccrnn"):
        summary = metrics["tasks"]["line_drawing"][method]
        assert len(summary["runs"][0]["curve"]) == 3 and summary["ataxia"] >= 0 and summary["test_error"] > 0
    ccrnn = metrics["tasks"]["line_drawing"]["ccrnn"]["runs"][0]
    assert "final_synthesiser_loss" in ccrnn
    assert [entry["step"] for entry in ccrnn["diagnostics"]] == [0, 2, 3]
    first = ccrnn["diagnostics"][0]  # the cerebellum starts at zero: no prediction, ccRNN's update is truncated BPTT's
    assert len(first["cosine"]) == 1 and first["cosine"] == [0.0] and first["relative_error"] == [pytest.approx(1.0)]
    assert first["ccrnn_update_cosine"] == pytest.approx(first["truncated_update_cosine"], abs=1e-5)
    assert -1 <= ccrnn["final_boundary_cosine"] <= 1
    assert "digit_templates" not in record["metrics"]


def test_digit_templates_trace_each_digits_mean_image():
    config = CerebellarDNIConfig(template_examples=2)
    images = np.zeros((20, 28, 28), np.float32)
    labels = np.repeat(np.arange(10), 2)
    for digit in range(10):
        images[labels == digit, 4:24, 2 + 2 * digit : 4 + 2 * digit] = 1.0  # bars further right for larger digits
    templates = digit_templates(config, images, labels)
    assert templates.shape == (10, 28, 2)
    np.testing.assert_allclose(templates[:, :, 0].mean(axis=1), (2.5 + 2 * np.arange(10)) / 27, atol=0.02)
