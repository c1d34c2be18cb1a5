import dataclasses
import json

import numpy as np
import pytest

from experiments.latent_steering.config import NEUTRAL_PROMPTS
from experiments.record import results_dir
from experiments.snmf_vs_sae.config import SNMFvsSAEConfig
from experiments.snmf_vs_sae.run import SLUG, main
from tests.helpers import small_fine_tuning


@pytest.mark.slow
@pytest.mark.pretrained
def test_snmf_vs_sae_smoke(monkeypatch, text_classifier_cache):
    """A tiny run (SmolLM2's first two blocks, two prompts, three new tokens, the tests' small judge) writes its
    record, table and figure; every method gets a concept feature and a held-out AUROC, and every steered condition
    reached its KL."""
    monkeypatch.setenv("JAXINTERP_CACHE", str(text_classifier_cache))
    config = dataclasses.replace(
        SNMFvsSAEConfig.quick(),
        layer=1,
        blocks=2,
        train_per_class=8,
        test_per_class=6,
        max_tokens=12,
        snmf_rank=6,
        snmf_iterations=20,
        sae_width=32,
        sae_k=4,
        sae_steps=10,
        sae_batch=32,
        l0s=(2,),
        prompts=NEUTRAL_PROMPTS[:2],
        new_tokens=3,
        classifiers=small_fine_tuning(),
        bootstrap=20,
        examples=2,
    )
    metrics = main(config)
    record = json.loads((results_dir(SLUG) / "results.json").read_text())
    assert record["metrics"]["methods"] == metrics["methods"]
    assert (results_dir(SLUG) / "steering.png").stat().st_size > 0
    detection = metrics["detection_auroc"]
    assert [row["target"] for row in detection] == ["sst2: negative", "sst2: positive"]
    for row in detection:
        for method in metrics["methods"]:
            assert 0.0 <= row[method] <= 1.0
    steered = [r for r in metrics["steering"]["rows"] if r["method"] != "none"]
    assert {r["method"] for r in steered} == set(metrics["methods"])
    for row in steered:
        assert abs(row["KL"] - row["target KL"]) <= 0.02 * row["target KL"] + 1e-9
        assert 0.0 <= row["combined"] <= 1.0
    assert np.isfinite(metrics["reconstruction_explained_variance"][0]["SNMF"])
