import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.cdt_circuits import real_tasks


@pytest.mark.slow
def test_smollm2_ioi_prefers_the_indirect_object_and_the_metric_is_the_logit_difference(smollm2):
    model, _ = smollm2
    task = real_tasks.smollm2_ioi(n_prompts=4, loaded=smollm2)
    (tokens,), (corrupted,) = task.inputs, task.corrupted_inputs
    assert tokens.shape == corrupted.shape == (4, task.info["seq_len"])
    assert not np.array_equal(tokens, corrupted)
    full = eqx.filter_jit(jax.vmap(lambda m, t: m(t), in_axes=(None, 0)))(model, tokens)
    rows = np.arange(4)
    by_hand = np.mean(
        np.asarray(full[rows, -1, task.info["io_tokens"]]) - np.asarray(full[rows, -1, task.info["s_tokens"]])
    )
    assert by_hand > 0
    assert float(task.metric(full[:, -1:])) == pytest.approx(by_hand, rel=1e-5, abs=1e-5)
    assert task.info["clean_logit_diff"] == pytest.approx(by_hand, rel=1e-3, abs=1e-3)
    assert task.info["corrupted_logit_diff"] < task.info["clean_logit_diff"]
    assert task.model.graph_layout() == model.graph_layout()


def test_smollm2_ioi_rejects_no_prompts():
    with pytest.raises(ValueError, match="n_prompts must be at least 1"):
        real_tasks.smollm2_ioi(n_prompts=0)


def test_minilm_sentiment_task(minilm):
    task = real_tasks.minilm_sentiment(n=8)
    tokens, mask = task.inputs
    assert tokens.shape == mask.shape == task.corrupted_inputs[0].shape == (8, task.info["seq_len"])
    assert task.info["labels"] == [0, 1] * 4
    assert task.info["corrupted_labels"] == [1, 0] * 4
    logits = eqx.filter_jit(jax.vmap(lambda m, t, a: m(t, a), in_axes=(None, 0, 0)))(task.model, tokens, mask)
    assert logits.shape == (8, 2)
    assert np.isfinite(float(task.metric(logits)))
    assert float(task.metric(logits)) == pytest.approx(task.info["clean_margin"], rel=1e-4, abs=1e-4)
    assert float(task.score(logits)) == pytest.approx(task.info["clean_margin"], rel=1e-4, abs=1e-4)
    assert task.info["accuracy"] > 0.5
    assert task.info["accuracy"] == np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(task.info["labels"]))
    assert float(jnp.mean(mask.sum(-1))) <= task.info["max_tokens"]
