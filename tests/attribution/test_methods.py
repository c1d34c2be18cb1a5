"""Local attribution methods: analytic answers on a linear model, CD-T span consistency, integrated gradients'
completeness and the faithfulness curves, on models small enough to compile in seconds."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import jaxinterp as ji
from jaxinterp import attribution
from models.sentence_classifier import SentenceClassifier
from models.transformer import Transformer, bert_config


class BagOfWords(eqx.Module):
    """`logits = sum over present positions of E[token] @ W` (no bias), with the embeddings tagged `embed`."""

    embedding: jax.Array
    weight: jax.Array

    def __call__(self, tokens, attention_mask):
        x = ji.tag(self.embedding[tokens], "embed")
        return (attention_mask[:, None] * x).sum(0) @ self.weight


@pytest.fixture(scope="module")
def linear():
    k1, k2, k3 = jr.split(jr.key(0), 3)
    model = BagOfWords(jr.normal(k1, (50, 8)), jr.normal(k2, (8, 3)))
    tokens = np.asarray(jr.randint(k3, (7,), 1, 50))
    return model, attribution.Text.from_tokens(tokens)


@pytest.fixture(scope="module")
def small_bert():
    cfg = bert_config(vocab_size=60, d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64, max_positions=64)
    encoder = Transformer(cfg, key=jr.key(1))
    k1, k2 = jr.split(jr.key(2))
    return SentenceClassifier(encoder, jr.normal(k1, (2, 32)), jr.normal(k2, (2,)) * 0.1)


def _text(tokens, words):
    """A padded Text over `tokens` whose features are the position groups `words` (positions 0 and the last are
    special)."""
    width = 16
    padded = np.zeros(width, np.int32)
    padded[: len(tokens)] = tokens
    mask = np.zeros(width, np.float32)
    mask[: len(tokens)] = 1
    return attribution.Text(padded, mask, tuple(tuple(w) for w in words), tuple(f"w{i}" for i in range(len(words))))


@pytest.mark.parametrize("method", ["cd", "occlusion", "shap", "lime", "ig"])
def test_every_method_gives_the_analytic_answer_on_a_linear_model(linear, method):
    model, text = linear
    logits = np.asarray(model(jnp.asarray(text.tokens), jnp.asarray(text.attention_mask)))
    target = int(np.argmax(logits))
    competitor = attribution.competitor_of(logits, target)
    terms = np.asarray(model.embedding[text.tokens] @ model.weight)  # [position, class]
    expected = terms[:, target] - terms[:, competitor]
    if method == "lime":  # LIME's default ridge shrinks; without the penalty it is exact
        value = attribution.value_function(model, text, target, competitor)
        scores = np.asarray(attribution.lime(value, text.n_features, n_samples=400, key=jr.key(3), ridge=0.0))
    else:
        result = attribution.attribute(model, text, method, budget=200, baseline="zero")
        assert (result.target, result.competitor) == (target, competitor)
        scores = result.scores
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


def test_hierarchical_cd_on_a_linear_model_scores_every_phrase_as_the_sum_of_its_words(linear):
    model, text = linear
    result = attribution.attribute(model, text, "hierarchical")
    terms = np.asarray(model.embedding[text.tokens] @ model.weight)
    expected = terms[:, result.target] - terms[:, result.competitor]
    for level in result.hierarchy:
        for (a, b), score in level:
            np.testing.assert_allclose(score, expected[a:b].sum(), rtol=1e-4, atol=1e-4)


def test_cd_span_scores_match_single_decompositions_and_the_full_text(small_bert):
    tokens = np.array([1, 7, 9, 11, 13, 17, 2])
    text = attribution.Text.from_tokens(tokens)  # every position a feature: the widest span is the whole input
    result = attribution.attribute(small_bert, text, "cd", max_width=len(tokens))
    full = result.spans[(0, len(tokens))]
    np.testing.assert_allclose(full, result.margin, rtol=1e-4)
    for (a, b), score in list(result.spans.items())[::5]:
        mask = ji.position_mask(list(range(a, b)), len(tokens))
        rel, _irr = ji.cd(small_bert, ji.Site("embed", mask))(jnp.asarray(tokens), jnp.ones(len(tokens)))
        np.testing.assert_allclose(score, float(rel[result.target] - rel[result.competitor]), rtol=1e-4, atol=1e-5)


def test_padding_and_word_groups_do_not_change_cd_scores(small_bert):
    tokens = [1, 7, 9, 11, 13, 2]
    words = [(1,), (2, 3), (4,)]
    padded = _text(tokens, words)
    scores = attribution.attribute(small_bert, padded, "cd").scores
    for j, group in enumerate(words):
        mask = ji.position_mask(list(group), len(tokens))
        rel, _ = ji.cd(small_bert, ji.Site("embed", mask))(jnp.asarray(tokens), jnp.ones(len(tokens)))
        logits = small_bert(jnp.asarray(tokens))
        target = int(jnp.argmax(logits))
        np.testing.assert_allclose(scores[j], float(rel[target] - rel[1 - target]), rtol=1e-4, atol=1e-5)


def test_hierarchy_merges_down_to_the_whole_text(small_bert):
    text = _text([1, 7, 9, 11, 13, 17, 2], [(1,), (2,), (3,), (4,), (5,)])
    result = attribution.attribute(small_bert, text, "hierarchical")
    levels = result.hierarchy
    assert [len(level) for level in levels] == [5, 4, 3, 2, 1]
    assert levels[-1][0][0] == (0, 5)
    for level in levels:  # each level is a partition of the words into spans, left to right
        assert next(span for span, _ in level)[0] == 0 and level[-1][0][1] == 5
        assert all(a[0][1] == b[0][0] for a, b in itertools.pairwise(level))
    everything = attribution.cd_spans(small_bert, text, result.target, result.competitor, max_width=5)[(0, 5)]
    np.testing.assert_allclose(levels[-1][0][1], everything, rtol=1e-5)


@pytest.mark.parametrize("baseline", [0, 3])
def test_integrated_gradients_is_complete(small_bert, baseline):
    # (the zero baseline is checked on the linear model: in a post-norm encoder the first layer norm is scale
    # invariant, so the path is constant for every a > 0 and jumps at a = 0, and no quadrature can be complete)
    text = _text([1, 7, 9, 11, 13, 2], [(1,), (2, 3), (4,)])
    scores, gap = attribution.integrated_gradients(small_bert, text, 1, 0, steps=48, baseline=baseline)
    assert scores.shape == (3,)
    assert abs(gap) < 1e-3


def test_curves_start_and_end_where_they_must(small_bert):
    text = _text([1, 7, 9, 11, 13, 17, 19, 2], [(1,), (2,), (3,), (4,), (5,), (6,)])
    logits = small_bert(jnp.asarray(text.tokens), jnp.asarray(text.attention_mask))
    target = int(jnp.argmax(logits))
    result = attribution.curves(small_bert, text, np.arange(6.0), target)
    p = float(jax.nn.softmax(logits)[target])
    np.testing.assert_allclose([result.deletion[0], result.insertion[-1]], [p, p], rtol=1e-5)
    np.testing.assert_allclose(result.deletion[-1], result.insertion[0], rtol=1e-5)
    deletion, insertion = attribution.faithfulness.ranked_masks(np.array([0.1, 3.0, -1.0, 2.0]), np.array([0, 0.5, 1]))
    np.testing.assert_array_equal(deletion, [[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(insertion, 1 - deletion)


def test_bad_input_is_refused_with_a_reason(small_bert, linear):
    model, text = linear
    with pytest.raises(ValueError, match="did you mean 'lime'"):
        attribution.attribute(model, text, "lim")
    with pytest.raises(ValueError, match="out of range"):
        attribution.attribute(model, text, "cd", target=5)
    with pytest.raises(ValueError, match="outside the"):
        attribution.Text(np.array([1, 2, 3]), np.ones(3), ((0, 3),), ("x",))
    with pytest.raises(ValueError, match="NaN"):
        attribution.curves(model, text, np.full(text.n_features, np.nan), 0)


def test_contrast_mining_ranks_phrases_by_mean_score():
    scored = [(1, {"great": 2.0, "dull": -1.0}), (1, {"great": 1.0, "dull": -3.0, "film": 0.1}), (0, {"dull": 2.0})]
    mined = attribution.mine_phrases(scored, top=1, min_count=2)
    assert mined[1]["positive"] == [("great", 1.5, 2)]
    assert mined[1]["negative"] == [("dull", -2.0, 2)]
    assert mined[0] == {"positive": [], "negative": []}
