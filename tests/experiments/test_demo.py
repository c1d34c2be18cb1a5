import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.demo import run as demo
from models.sentence_classifier import SentenceClassifier


@pytest.fixture(scope="module")
def classifier_and_tokenizer(minilm):
    encoder, tokenizer = minilm
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
    result = {
        "prediction": "positive",
        "probability": 0.9,
        "words": [("good", 1.0), ("<b>", -0.5)],
        "phrases": [("good <b>", 0.5)],
    }
    demo.write_html(tmp_path / "out.html", "good <b>", result)
    page = (tmp_path / "out.html").read_text()
    assert "&lt;b&gt;" in page and "positive" in page


@pytest.mark.slow
@pytest.mark.pretrained
def test_demo_runs_end_to_end_and_writes_its_results(tmp_path, monkeypatch, capsys):
    """The whole demo on a small head (the full one trains on 4,000 sentences): the head is trained, cached and
    reused, the attributions printed and written to results/demo/."""
    import json

    import jaxinterp

    monkeypatch.setenv("JAXINTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "TRAIN_SENTENCES", 120)
    full_sst2 = jaxinterp.data.sst2

    def small_sst2(split):
        sentences, labels = full_sst2(split)
        keep = 2000 if split == "train" else 160
        return sentences[:keep], labels[:keep]

    monkeypatch.setattr(jaxinterp.data, "sst2", small_sst2)
    result = demo.main("a wonderful , moving film")
    assert (tmp_path / "cache" / demo.HEAD_FILE).is_file()
    assert [w for w, _ in result["words"]] == ["a", "wonderful", ",", "moving", "film"]
    assert 0.5 < result["dev_accuracy"] <= 1.0
    record = json.loads((tmp_path / "results" / "demo" / "results.json").read_text())
    assert record["metrics"]["prediction"] == result["prediction"]
    assert (tmp_path / "results" / "demo" / "demo.html").is_file()
    assert "Strongest phrases" in capsys.readouterr().out
    again = demo.main("a wonderful , moving film")
    assert again["words"] == result["words"]
