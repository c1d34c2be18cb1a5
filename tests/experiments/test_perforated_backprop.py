import dataclasses
import json
import os
import pathlib

import pytest

from experiments.perforated_backprop.config import PerforatedBackpropConfig
from experiments.perforated_backprop.run import main

pytestmark = pytest.mark.slow  # an experiment smoke run


def test_perforated_backprop_smoke():
    config = dataclasses.replace(
        PerforatedBackpropConfig.quick(), baseline_widths=(2,), perforated_widths=(2,), neuron_steps=3,
        dendrite_steps=2,
    )  # fmt: skip
    metrics = main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "perforated_backprop"
    record = json.loads((out / "results.json").read_text())
    assert (out / "results.md").stat().st_size > 0 and (out / "accuracy_vs_parameters.png").exists()
    assert record["config"]["neuron_steps"] == 3 and "claim" in record["paper"]
    baselines = metrics["mnist"]["baselines"]
    assert [b["parameters"] for b in baselines] == [784 * 2 + 2 + 2 * 10 + 10]
    (run,) = metrics["mnist"]["perforated"]
    first, grown = run["rounds"]
    assert first["parameters"] == baselines[0]["parameters"]  # no dendrites yet: the same network as the baseline
    assert grown["parameters"] == first["parameters"] + (2 * 784 + 2 * 2) + (10 * 2 + 2 * 10)
    assert all(0.0 <= point["test_accuracy"] <= 1.0 for point in run["rounds"])
    assert record["metrics"]["summary"]["perforated_points_with_dendrites"] == 1
