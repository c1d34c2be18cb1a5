import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest

from experiments.cerebellar_dni.config import CerebellarDNIConfig
from experiments.cerebellar_dni.run import main, trace_pen_path

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
        CerebellarDNIConfig.quick(), tasks=("digit_drawing",), methods=("truncated", "ccrnn"), digit_steps=3, hidden_size=8,
        cerebellum_hidden=(8,), train_size=300, eval_size=20, template_examples=5, curve_smoothing=2,
    )  # fmt: skip
    metrics = main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "cerebellar_dni"
    record = json.loads((out / "results.json").read_text())
    assert (out / "results.md").stat().st_size > 0
    assert (out / "learning_curves.png").exists() and (out / "drawings.png").exists()
    assert record["paper"]["claim"] and record["config"]["digit_steps"] == 3
    assert set(record["metrics"]["tasks"]) == {"digit_drawing"}
    for method in ("truncated", "ccrnn"):
        summary = metrics["tasks"]["digit_drawing"][method]
        assert len(summary["runs"][0]["curve"]) == 3 and summary["ataxia"] >= 0 and summary["test_error"] > 0
    assert "final_synthesiser_loss" in metrics["tasks"]["digit_drawing"]["ccrnn"]["runs"][0]
    assert np.asarray(record["metrics"]["digit_templates"]).shape == (10, 28, 2)
