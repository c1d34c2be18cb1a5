import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from jaxinterp import demo
from models.sentence_classifier import SentenceClassifier


@pytest.fixture(scope="module")
def classifier_and_tokenizer():
    encoder, tokenizer = models.load("minilm-l6")
    key_w, key_b = jax.random.split(jax.random.key(0))
    head = SentenceClassifier(encoder, jax.random.normal(key_w, (2, 384)), jax.random.normal(key_b, (2,)))
    return head, tokenizer


def test_spans_group_word_pieces_and_list_every_phrase(classifier_and_tokenizer):
    _, tokenizer = classifier_and_tokenizer
    words, phrases = demo.spans_of(tokenizer.encode("an unwatchable mess"))
    assert [w for w, _ in words] == ["an", "unwatchable", "mess"]
    assert len(words[1][1]) > 1
    assert [p for p, _ in phrases] == ["an unwatchable", "unwatchable mess", "an unwatchable mess"]


def test_explain_scores_words_and_phrases_with_cd(classifier_and_tokenizer):
    classifier, tokenizer = classifier_and_tokenizer
    text = "a gripping and beautifully shot film"
    result = demo.explain(classifier, tokenizer, text)
    assert [w for w, _ in result["words"]] == text.split()
    assert len(result["phrases"]) == 5 + 4
    assert all(np.isfinite(s) for _, s in result["words"] + result["phrases"])
    # the whole sentence as source: rel carries everything but the [CLS]/[SEP] tokens' share
    logits = classifier(jnp.asarray(tokenizer.encode(text).ids))
    assert result["prediction"] == demo.LABELS[int(jnp.argmax(logits))]


def test_write_html(tmp_path, classifier_and_tokenizer):
    result = {"prediction": "positive", "probability": 0.9, "words": [("good", 1.0), ("<b>", -0.5)],
              "phrases": [("good <b>", 0.5)]}
    demo.write_html(tmp_path / "out.html", "good <b>", result)
    page = (tmp_path / "out.html").read_text()
    assert "&lt;b&gt;" in page and "positive" in page
