import dataclasses
import json
import os
import pathlib

import pytest

from experiments.latent_steering.config import NEUTRAL_PROMPTS, LatentSteeringConfig
from experiments.latent_steering.run import METHODS, main
from tests.helpers import small_fine_tuning


@pytest.mark.slow
@pytest.mark.pretrained
def test_latent_steering_smoke(monkeypatch, text_classifier_cache):
    """A tiny run (SmolLM2's first two blocks, two prompts, three new tokens, the tests' small judge) writes its record,
    table and figure; every method is steered to the KL target, and the skill basis is orthonormal."""
    monkeypatch.setenv("JAXINTERP_CACHE", str(text_classifier_cache))
    config = dataclasses.replace(
        LatentSteeringConfig.quick(),
        targets=(("sst2", "positive"),),
        layers=(0, 1),
        steer_layer=1,
        train_per_class=8,
        test_per_class=4,
        online_batch=4,
        max_tokens=12,
        prompts=NEUTRAL_PROMPTS[:2],
        new_tokens=3,
        classifiers=small_fine_tuning(),
        pool_size=24,
        skills=2,
        selection_size=8,
        validation_size=16,
        random_draws=2,
        dev_size=32,
        bootstrap=20,
        blocks=2,
    )
    metrics = main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "latent_steering"
    record = json.loads((out / "results.json").read_text())
    assert (out / "results.md").stat().st_size > 0 and (out / "steering.png").exists() and record["paper"]
    rows = metrics["steering"]["rows"]
    assert [row["method"] for row in rows] == ["none", *METHODS]
    for row in rows[1:]:
        assert abs(row["KL"] - config.target_kl) <= 0.02 * config.target_kl and row["alpha"] > 0
    for row in rows:
        assert 0.0 <= row["concept"] <= 1.0 and 0.0 < row["fluency"] <= 1.0 and 0.0 <= row["combined"] <= 1.0
        low, high = row["combined 95% CI"]
        assert low <= row["combined"] <= high
    probes = metrics["probe_accuracy"]["sst2: positive"]
    assert probes["layers"] == [0, 1] and all(0.0 <= a <= 1.0 for a in probes["ACT"] + probes["G-ACT probe"])
    assert metrics["skills"]["orthonormality_error"] < 1e-5
