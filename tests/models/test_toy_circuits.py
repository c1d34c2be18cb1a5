"""The trained toy models with known circuits (`models/toy_circuits.py`): their task data, their accuracy, the
true circuit by exhaustive ablation, the cache and reproducibility."""

import io

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from models import toy_circuits as tc


def weight_bytes(model) -> bytes:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def induction():
    """The default induction model, trained once and cached (`load_or_train`)."""
    model, info = tc.load_or_train("induction")
    clean = tc.induction_batch(jr.key(101), 128)
    corrupted = tc.induction_batch(jr.key(102), 128)
    return model, info, clean, corrupted


@pytest.fixture(scope="module")
def ioi():
    """The default IOI model, trained once and cached (`load_or_train`)."""
    model, info = tc.load_or_train("ioi")
    return model, info, tc.ioi_batch(jr.key(103), 256)


def normalised(value, full, empty):
    return (value - empty) / (full - empty)


# --- task data ---------------------------------------------------------------------------------------------------


def test_induction_batch_repeats_its_first_half():
    batch = tc.induction_batch(jr.key(0), 16, seq_len=17, vocab=32)
    tokens = np.asarray(batch.tokens)
    assert tokens.shape == (16, 17) and tokens.dtype == np.int32
    assert np.all(tokens[:, 0] == tc.BOS)
    np.testing.assert_array_equal(tokens[:, 1:9], tokens[:, 9:])
    assert all(len(set(row[1:9])) == 8 and tc.BOS not in row[1:] for row in tokens)
    np.testing.assert_array_equal(np.asarray(batch.targets)[:, :-1], tokens[:, 1:])
    expected = np.zeros(17, bool)
    expected[9:16] = True  # the first repeated token (position 9) to the second last
    assert np.all(np.asarray(batch.mask) == expected)
    assert np.all(np.asarray(batch.repeat) == 8)


def test_induction_batch_with_a_random_period():
    batch = tc.induction_batch(jr.key(1), 64, seq_len=17, vocab=32, min_repeat=3)
    tokens, mask, period = np.asarray(batch.tokens), np.asarray(batch.mask), np.asarray(batch.repeat)
    assert set(period.tolist()) == set(range(3, 9))
    for row, m, n in zip(tokens, mask, period):
        np.testing.assert_array_equal(row[1 + n :], row[1:-n])  # periodic with period n
        assert len(set(row[1 : 1 + n])) == n
        assert np.flatnonzero(m).tolist() == list(range(n + 1, 16))


def test_induction_batch_is_a_function_of_the_key():
    a, b = tc.induction_batch(jr.key(2), 8), tc.induction_batch(jr.key(2), 8)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, tc.induction_batch(jr.key(3), 8).tokens)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch=0), "batch"),
        (dict(seq_len=16), "odd"),
        (dict(seq_len=3), "seq_len"),
        (dict(vocab=8), "vocab"),
        (dict(min_repeat=1), "min_repeat"),
        (dict(min_repeat=9), "min_repeat"),
    ],
)
def test_induction_batch_rejects_bad_sizes(kwargs, match):
    arguments = dict(batch=4, seq_len=17, vocab=32) | kwargs
    with pytest.raises(ValueError, match=match):
        tc.induction_batch(jr.key(0), **arguments)


def test_ioi_batch_names_the_indirect_object_once_and_the_subject_twice():
    batch = tc.IOIBatch(*(np.asarray(field) for field in tc.ioi_batch(jr.key(4), 64)))
    tokens, corrupted = batch.tokens, batch.corrupted
    assert tokens.shape == corrupted.shape == (64, tc.IOI_SEQ_LEN)
    first_name = len(tc.IOI_WORDS)
    is_name = (tokens >= first_name) & (tokens < first_name + tc.IOI_NAMES)
    for i in range(64):
        io, s = int(batch.answer[i]), int(batch.wrong[i])
        assert io != s
        assert (tokens[i] == io).sum() == 1 and (tokens[i] == s).sum() == 2
        assert tokens[i, batch.io_position[i]] == io
        assert tokens[i, batch.s1_position[i]] == s and tokens[i, batch.s2_position[i]] == s
        assert batch.s2_position[i] > max(batch.io_position[i], batch.s1_position[i])
        assert bool(batch.abba[i]) == (batch.io_position[i] < batch.s1_position[i])
        assert tokens[i, 0] == tc.BOS and tc.IOI_WORDS[tokens[i, -1]] == "to"
        # ABC corruption: the same template and fillers, three distinct names in the name slots
        names = np.flatnonzero(is_name[i])
        assert len(names) == 3
        assert len(set(corrupted[i, names].tolist())) == 3
        others = np.setdiff1d(np.arange(tc.IOI_SEQ_LEN), names)
        np.testing.assert_array_equal(corrupted[i, others], tokens[i, others])
    assert 0 < np.mean(np.asarray(batch.abba)) < 1
    assert len(set(np.asarray(batch.template).tolist())) == len(tc.IOI_TEMPLATES)
    text = tc.ioi_decode(tokens[0])
    assert text.startswith("<bos> ") and text.endswith(" to")


# --- the models ----------------------------------------------------------------------------------------------------


def test_induction_model_predicts_the_repeated_half(induction):
    model, info, clean, _ = induction
    assert model.cfg.n_layers == 2 and model.cfg.d_mlp == 0 and model.cfg.causal
    logits = jax.vmap(model)(clean.tokens)
    correct = np.asarray(jnp.argmax(logits, -1) == clean.targets)[np.asarray(clean.mask)]
    assert correct.mean() > 0.9
    assert info["accuracy"] > 0.9


def test_ioi_model_prefers_the_indirect_object(ioi):
    model, info, batch = ioi
    assert model.cfg.d_mlp == 0
    logits = jax.vmap(model)(batch.tokens)[:, -1]
    rows = np.arange(len(batch.answer))
    difference = np.asarray(logits)[rows, batch.answer] - np.asarray(logits)[rows, batch.wrong]
    assert np.mean(difference > 0) > 0.9
    assert info["positive_logit_difference"] > 0.9


# --- the true circuit ----------------------------------------------------------------------------------------------


def test_attention_patterns_locate_the_induction_mechanism(induction):
    model, _, clean, _ = induction
    scores = tc.induction_head_scores(model, clean.tokens)
    assert scores["previous_token"].shape == scores["induction"].shape == (2, model.cfg.n_heads)
    previous, head = tc.induction_circuit_heads(model, clean.tokens)
    assert previous.startswith("blocks.0.attn.") and head.startswith("blocks.1.attn.")
    p, h = int(previous.rsplit(".", 1)[1]), int(head.rsplit(".", 1)[1])
    assert scores["previous_token"][0, p] > 0.3 > scores["induction"][0, p]
    assert scores["induction"][1, h] > 0.5 > scores["previous_token"][1, h]
    # no layer-0 head can do induction (it sees no earlier head's output)
    assert scores["induction"][0].max() < 0.2


@pytest.mark.parametrize("ablation", ["mean", "resample", "zero"])
def test_true_induction_circuit_holds_the_known_mechanism(induction, ablation):
    model, _, clean, corrupted = induction
    metric = tc.induction_metric(clean)
    nodes, effects = tc.true_circuit_by_ablation(model, clean.tokens, corrupted.tokens, metric, ablation=ablation)
    previous, head = tc.induction_circuit_heads(model, clean.tokens)
    assert {previous, head, "embed"} <= nodes
    assert set(effects) == set(tc.circuit_nodes(model))
    assert effects[head] < -1.0 and effects[previous] < -0.1  # each alone matters
    assert min(effects[n] for n in nodes if n.startswith("blocks.0.")) < -1.0  # the main previous-token head
    everything = tc.circuit_nodes(model)
    full = tc.ablated_metric(model, clean.tokens, corrupted.tokens, metric, [], ablation)
    empty = tc.ablated_metric(model, clean.tokens, corrupted.tokens, metric, everything, ablation)
    only = tc.ablated_metric(model, clean.tokens, corrupted.tokens, metric, set(everything) - nodes, ablation)
    without = tc.ablated_metric(model, clean.tokens, corrupted.tokens, metric, nodes - {"embed"}, ablation)
    assert normalised(only, full, empty) > 0.9  # the circuit alone keeps the behaviour
    assert normalised(without, full, empty) < 0.2  # ablating its heads destroys it


def test_true_ioi_circuit_is_sufficient_and_necessary(ioi):
    model, _, batch = ioi
    metric = tc.ioi_metric(batch)
    nodes, effects = tc.true_circuit_by_ablation(model, batch.tokens, batch.corrupted, metric, ablation="mean")
    everything = tc.circuit_nodes(model)
    full = tc.ablated_metric(model, batch.tokens, batch.corrupted, metric, [])
    empty = tc.ablated_metric(model, batch.tokens, batch.corrupted, metric, everything)
    only = tc.ablated_metric(model, batch.tokens, batch.corrupted, metric, set(everything) - nodes)
    without = tc.ablated_metric(model, batch.tokens, batch.corrupted, metric, nodes - {"embed"})
    assert full > 2.0 and abs(empty) < 1.0
    assert normalised(only, full, empty) > 0.9
    assert normalised(without, full, empty) < 0.2
    assert len(nodes) < len(everything) / 2
    heads = nodes - {"embed"}
    assert heads and all(effects[h] < 0 for h in heads)
    # the circuit's heads attend from the last position to a name and push logit(IO) - logit(S) up directly
    scores = tc.ioi_head_scores(model, batch)
    for h in heads:
        layer, head = int(h.split(".")[1]), int(h.split(".")[3])
        assert scores["direct_logit_difference"][layer, head] > 0
        names = scores["end_to_io"] + scores["end_to_s1"] + scores["end_to_s2"]
        assert names[layer, head] > 0.5


def test_single_node_effects_match_separate_ablations(induction):
    model, _, clean, corrupted = induction
    metric = tc.induction_metric(clean)
    _, effects = tc.true_circuit_by_ablation(model, clean.tokens, corrupted.tokens, metric, ablation="zero")
    full = tc.ablated_metric(model, clean.tokens, corrupted.tokens, metric, [], "zero")
    for node in ["embed", "blocks.0.attn.1", "blocks.1.attn.2"]:
        alone = tc.ablated_metric(model, clean.tokens, corrupted.tokens, metric, [node], "zero")
        assert effects[node] == pytest.approx(alone - full, abs=1e-4)
    # zero ablation of every head by hand, through jaxinterp.intervene
    import jaxinterp

    def zero_heads(z):
        return jnp.zeros_like(z)

    ablated = jaxinterp.intervene(model, {"blocks.*.attn.z": zero_heads})
    by_hand = float(metric(jax.vmap(ablated)(clean.tokens)))
    heads = [n for n in tc.circuit_nodes(model) if n != "embed"]
    assert tc.ablated_metric(model, clean.tokens, corrupted.tokens, metric, heads, "zero") == pytest.approx(
        by_hand, abs=1e-4
    )


def test_true_circuit_rejects_bad_input(induction):
    model, _, clean, corrupted = induction
    metric = tc.induction_metric(clean)
    with pytest.raises(ValueError, match="ablation"):
        tc.true_circuit_by_ablation(model, clean.tokens, corrupted.tokens, metric, ablation="mode")
    with pytest.raises(ValueError, match="threshold"):
        tc.true_circuit_by_ablation(model, clean.tokens, corrupted.tokens, metric, threshold=1.5)
    with pytest.raises(ValueError, match="resample"):
        tc.true_circuit_by_ablation(model, clean.tokens, corrupted.tokens[:10], metric, ablation="resample")
    with pytest.raises(ValueError, match="one length"):
        tc.true_circuit_by_ablation(model, clean.tokens, corrupted.tokens[:, :9], metric)
    with pytest.raises(ValueError, match="integer array"):
        tc.true_circuit_by_ablation(model, clean.tokens[0], corrupted.tokens, metric)
    with pytest.raises(ValueError, match="unknown nodes"):
        tc.ablated_metric(model, clean.tokens, corrupted.tokens, metric, ["blocks.0.attn.9"])
    with pytest.raises(ValueError, match="unknown toy model"):
        tc.load_or_train("parity")


# --- cache and reproducibility -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_same_weights():
    a, info = tc.train_induction_model(seed=3, steps=4)
    b, _ = tc.train_induction_model(seed=3, steps=4)
    c, _ = tc.train_induction_model(seed=4, steps=4)
    assert weight_bytes(a) == weight_bytes(b)
    assert weight_bytes(a) != weight_bytes(c)
    assert info["recipe"]["steps"] == 4 and info["seed"] == 3


@pytest.mark.slow
def test_load_or_train_caches_and_retrains_a_corrupt_file(offline_cache, capsys):
    model, info = tc.load_or_train("ioi", seed=5, steps=3)
    path = tc.cache_path("ioi", seed=5, steps=3)
    assert not info["from_cache"] and info["cache"] == str(path) and path.exists()
    assert path.parent == offline_cache / tc.CACHE_FOLDER and path.suffix == ".eqx"
    assert "Training the ioi toy model" in capsys.readouterr().out
    again, info = tc.load_or_train("ioi", seed=5, steps=3)
    assert info["from_cache"] and weight_bytes(again) == weight_bytes(model)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="corrupt"):
        retrained, info = tc.load_or_train("ioi", seed=5, steps=3)
    assert not info["from_cache"] and weight_bytes(retrained) == weight_bytes(model)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # altered
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="SHA-256"):
        tc.load_or_train("ioi", seed=5, steps=3)


def test_ablation_covers_mlp_nodes():
    """A model with MLPs has `blocks.L.mlp` nodes, ablated at `blocks.L.mlp.out`."""
    import jaxinterp
    from models.transformer import Transformer, gpt2_config

    cfg = gpt2_config(vocab_size=32, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=16, max_positions=17)
    model = Transformer(cfg, key=jr.key(7))
    clean, corrupted = tc.induction_batch(jr.key(8), 8), tc.induction_batch(jr.key(9), 8)
    nodes = tc.circuit_nodes(model)
    assert nodes == (
        "embed",
        "blocks.0.attn.0",
        "blocks.0.attn.1",
        "blocks.0.mlp",
        "blocks.1.attn.0",
        "blocks.1.attn.1",
        "blocks.1.mlp",
    )
    metric = tc.induction_metric(clean)
    ablated = jaxinterp.intervene(model, {"blocks.1.mlp.out": lambda x: jnp.zeros_like(x)})
    by_hand = float(metric(jax.vmap(ablated)(clean.tokens)))
    value = tc.ablated_metric(model, clean.tokens, corrupted.tokens, metric, ["blocks.1.mlp"], "zero")
    assert value == pytest.approx(by_hand, abs=1e-5)
    found, effects = tc.true_circuit_by_ablation(model, clean.tokens, corrupted.tokens, metric, threshold=0.5)
    assert set(effects) == set(nodes) and found <= set(nodes)
