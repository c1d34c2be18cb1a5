import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.demo import run as demo
from jaxinterp import cli
from models import text_classifiers
from models.sentence_classifier import SentenceClassifier
from tests.helpers import small_fine_tuning


@pytest.fixture(scope="module")
def classifier_and_tokenizer(minilm):
    encoder, tokenizer = minilm
    key_w, key_b = jax.random.split(jax.random.key(0))
    head = SentenceClassifier(encoder, jax.random.normal(key_w, (2, 384)), jax.random.normal(key_b, (2,)))
    return head, tokenizer


@pytest.mark.pretrained
def test_explain_scores_words_and_phrases_with_cd(classifier_and_tokenizer):
    classifier, tokenizer = classifier_and_tokenizer
    text = "a gripping and beautifully shot film"
    result = demo.explain(classifier, tokenizer, text)
    assert [w for w, _ in result["words"]] == text.split()
    assert [p for p, _ in result["phrases"]][:2] == ["a gripping", "gripping and"]
    assert len(result["phrases"]) == 5 + 4
    assert all(np.isfinite(s) for _, s in result["words"] + result["phrases"])
    logits = classifier(jnp.asarray(tokenizer.encode(text).ids))
    assert result["prediction"] == text_classifiers.TASK_LABELS["sst2"][int(jnp.argmax(logits))]


@pytest.mark.pretrained
def test_explain_groups_word_pieces_into_words(classifier_and_tokenizer):
    classifier, tokenizer = classifier_and_tokenizer
    result = demo.explain(classifier, tokenizer, "an unwatchable mess", method="occlusion")
    assert [w for w, _ in result["words"]] == ["an", "unwatchable", "mess"]
    assert result["phrases"] == []


@pytest.mark.slow
@pytest.mark.pretrained
def test_the_explain_command_fine_tunes_the_stand_in_once_and_writes_a_heatmap(
    tmp_path, monkeypatch, capsys, text_classifier_cache
):
    """`jaxinterp explain` without the full classifier: the stand-in is fine-tuned (here on fewer texts), cached and
    reused; the attributions are printed and written as an HTML heatmap and results/demo/results.json."""
    monkeypatch.setenv("JAXINTERP_CACHE", str(text_classifier_cache))
    small = small_fine_tuning()
    monkeypatch.setattr(text_classifiers.FineTuning, "quick", classmethod(lambda cls: small))
    page = tmp_path / "page.html"
    assert cli.main(["explain", "a wonderful , moving film", "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "stand-in" in out and "Strongest phrases" in out
    assert text_classifiers.cache_path("sst2", small).is_file()
    assert page.read_text().count('class="token"') == 5
    record = json.loads((tmp_path / "results" / "demo" / "results.json").read_text())
    assert [w for w, _ in record["metrics"]["words"]] == ["a", "wonderful", ",", "moving", "film"]
    assert 0.5 < record["metrics"]["heldout_accuracy"] <= 1.0
    assert cli.main(["explain", "a wonderful , moving film", "--method", "lime", "--html", str(page)]) == 0
    assert "fine-tune" not in capsys.readouterr().err  # the cached stand-in, no second training run
