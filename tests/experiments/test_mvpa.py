import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest

from experiments.mvpa.config import MVPAConfig
from experiments.mvpa.run import MODELS, SAME, SCENARIOS, channel_configurations, main


def test_channel_configurations_differ_from_training():
    configurations = channel_configurations(6, 0.67, np.random.default_rng(0))
    seen = configurations[SAME]
    assert len(seen) == 5 and sorted(configurations["permuted"]) == sorted(seen) and configurations["permuted"] != seen
    assert set(configurations["unseen only"]).isdisjoint(seen) and len(configurations["half of them"]) == 2
    assert len(set(configurations["half swapped for unseen"]) - set(seen)) == 1


@pytest.mark.slow  # compiles both classifiers and their evaluation at three channel counts
def test_mvpa_smoke():
    config = dataclasses.replace(
        MVPAConfig.quick(), datasets=(("basic-motions", 25),), steps=2, d_model=8, n_heads=2, batch_size=4
    )
    metrics = main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "mvpa"
    record = json.loads((out / "results.json").read_text())
    assert (out / "accuracy_by_channels.png").exists() and record["paper"]["target_here"]
    summary = metrics["datasets"]["basic-motions"]["mean_accuracy"]
    for name in MODELS:
        assert set(summary[name]) == set(SCENARIOS) and all(0.0 <= a <= 1.0 for a in summary[name].values())
    assert metrics["comparisons"] == len(SCENARIOS) - 1 and isinstance(metrics["target_met"], bool)
