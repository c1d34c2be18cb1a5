import dataclasses
import json
import os
import pathlib

import pytest

from experiments.counter_current.config import CounterCurrentConfig
from experiments.counter_current.run import main

pytestmark = pytest.mark.slow  # an experiment smoke run


def test_counter_current_smoke():
    config = dataclasses.replace(
        CounterCurrentConfig.quick(),
        datasets=("mnist",),
        train_size=256,
        mlp_hidden=(16,),
        mlp_epochs=1,
        cnn_channels=(2,),
        cnn_epochs=1,
        batch_size=64,
        autoencoder_channels=(2,),
        autoencoder_steps=2,
        autoencoder_batch_size=8,
    )
    metrics = main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "counter_current"
    record = json.loads((out / "results.json").read_text())
    assert record["config"]["train_size"] == 256 and "target_here" in record["paper"]
    assert (out / "results.md").stat().st_size > 0
    assert (out / "accuracy.png").exists() and (out / "reconstructions.png").exists()
    assert set(record["metrics"]["classifiers"]) == {
        "mnist mlp backprop", "mnist mlp feedback_alignment", "mnist mlp counter_current",
        "mnist cnn backprop", "mnist cnn counter_current",
    }  # fmt: skip
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in metrics["classifiers"].values())
    assert metrics["classifiers"]["mnist mlp counter_current"]["steps"] == 4
    assert set(metrics["autoencoder"]) == {"backprop", "counter_current"}
    assert isinstance(metrics["mlp_within_2_points"], bool)
