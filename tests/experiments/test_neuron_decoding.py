import dataclasses
import json
import os
import pathlib

import pytest

from experiments.neuron_decoding.config import NeuronDecodingConfig
from experiments.neuron_decoding.run import main

pytestmark = pytest.mark.slow  # loads SmolLM2 and MiniLM and trains two tiny models


def test_neuron_decoding_smoke():
    """A tiny run (SmolLM2's last layer decoded, no clamping, three training steps, one layer labelled over eight
    texts) writes its record, table and figure, with fractions in [0, 1] and scores in their ranges."""
    config = dataclasses.replace(
        NeuronDecodingConfig.quick(), prompts=(), generate_steps=0, vocab_size=256, d_model=32, n_heads=2, d_mlp=64,
        seq_len=16, sst2_sentences=200, base_steps=3, tune_steps=2, batch_size=4, match_windows=32, lens_layers=(0,),
        lens_texts=4, lens_tokens=8, lens_k=3, polysemanticity_units=3, baseline_sets=5,
    )  # fmt: skip
    metrics = main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "neuron_decoding"
    record = json.loads((out / "results.json").read_text())
    assert (out / "results.md").stat().st_size > 0 and (out / "neuron_decoding.png").exists()
    assert record["paper"] and record["metrics"]["decoding"]["neurons_decoded"] == 1536
    assert metrics["decoding"]["concepts"][0]["layer"] == 29
    for entry in metrics["small_models"]["comparisons"].values():
        assert 0.0 <= entry["same_top_token"] <= 1.0 and 0.0 <= entry["top10_overlap"] <= 1.0
    layer = metrics["semantic_lens"]["layers"]["0"]
    assert layer["neurons"] == 1536 and sum(layer["label_counts"].values()) == 1536
    assert all(-0.5 - 1e-9 <= c <= 1 + 1e-9 for c in layer["clarity"]) and len(layer["polysemanticity"]) == 3
