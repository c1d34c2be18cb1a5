import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest

from experiments.convergent_learning.config import ConvergentLearningConfig
from experiments.convergent_learning.run import main as convergent_learning
from experiments.neural_collapse.config import NeuralCollapseConfig
from experiments.neural_collapse.run import main as neural_collapse
from experiments.relative_representations.config import RelativeRepresentationsConfig
from experiments.relative_representations.run import main as relative_representations

pytestmark = pytest.mark.slow  # experiment smoke runs take tens of seconds each


def _record(slug: str) -> dict:
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / slug
    assert (out / "results.md").stat().st_size > 0
    return json.loads((out / "results.json").read_text())


def test_convergent_learning_smoke():
    config = dataclasses.replace(
        ConvergentLearningConfig.quick(),
        channels=(4, 8),
        train_size=512,
        train_steps=3,
        batch_size=32,
        num_images=16,
        mi_samples=2000,
        prediction_samples=1000,
        l1_penalties=(0.0, 0.5),
        prediction_steps=5,
    )
    metrics = convergent_learning(config)
    record = _record("convergent_learning")
    assert record["config"]["train_steps"] == 3
    assert (pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "convergent_learning" / "matched_correlations.png").exists()
    assert set(metrics["layers"]) == {"convs.0.post", "convs.1.post"}
    for result in metrics["layers"].values():
        matched, semi = np.asarray(result["matched"]["0-1"]), np.asarray(result["semi"]["0-1"])
        assert matched.shape == (result["units"],) and np.all(semi >= matched - 1e-12)  # semi-matching is the max
        sparse = result["alignment_0_1"]["sparse"]
        assert sparse[1]["inputs_per_target"] <= sparse[0]["inputs_per_target"]


def test_relative_representations_smoke():
    config = dataclasses.replace(
        RelativeRepresentationsConfig.quick(),
        latent_width=8,
        mlp_hidden=(16,),
        cnn_channels=(2,),
        decoder_hidden=(8,),
        num_anchors=20,
        train_size=512,
        train_steps=3,
        batch_size=32,
        test_size=100,
    )
    metrics = relative_representations(config)["mnist"]
    record = _record("relative_representations")
    kinds = {(row["kind"], row["representation"]) for row in record["metrics"]["mnist"]["rows"]}
    assert kinds == {
        (kind, representation)
        for kind in ("end-to-end", "stitched across seeds", "stitched across architectures")
        for representation in ("absolute", "relative")
    }
    assert len(metrics["accuracies"]["stitched across seeds|relative"]) == 4  # 2 kinds x 2 ordered seed pairs
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in metrics["rows"])


def test_neural_collapse_smoke():
    config = dataclasses.replace(
        NeuralCollapseConfig.quick(), inputs=("unconstrained", "mnist"), losses=("mse",), steps=20, num_evaluations=2
    )
    metrics = neural_collapse(config)
    record = _record("neural_collapse")
    assert set(record["metrics"]) == {
        f"{s} mse {b}" for s in ("unconstrained", "mnist") for b in ("balanced", "imbalanced")
    }
    imbalanced = metrics["unconstrained mse imbalanced"]
    assert [t["step"] for t in imbalanced["trajectory"]] == [10, 20]
    assert imbalanced["counts"] == [200, 100, 50, 25] and -1.0 <= imbalanced["norm_vs_count_spearman"] <= 1.0
    assert len(imbalanced["final"]["nc1_per_layer"]) == config.depth
