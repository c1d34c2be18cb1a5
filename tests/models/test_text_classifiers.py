import json

import numpy as np
import pytest

from models import text_classifiers
from tests.helpers import small_fine_tuning


def test_encode_drops_padding_and_keeps_the_closing_token_when_cutting(minilm):
    _, tokenizer = minilm
    short, long = text_classifiers.encode(tokenizer, ["a film", "one two three four five six seven"], max_tokens=5)
    assert tokenizer.decode(short.tolist()) == "a film" and len(short) == 4  # [CLS] a film [SEP], no [PAD]
    assert len(long) == 5 and long[-1] == tokenizer.token_to_id("[SEP]")


def test_a_missing_or_corrupt_cache_is_reported_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXINTERP_CACHE", str(tmp_path))
    config = small_fine_tuning()
    with pytest.raises(FileNotFoundError, match="fine_tune --task sst2"):
        text_classifiers.text_classifier("sst2", config, train=False)
    path = text_classifiers.cache_path("sst2", config)
    path.write_bytes(b"not a checkpoint")
    path.with_suffix(".json").write_text(json.dumps({"heldout_accuracy": 0.5}))
    with pytest.raises(ValueError, match="unreadable"):
        text_classifiers.text_classifier("sst2", config)
    with pytest.raises(ValueError, match="unknown task 'imdb'"):
        text_classifiers.text_classifier("imdb")


def test_settings_have_distinct_cache_names():
    a, b = small_fine_tuning(), text_classifiers.DEFAULTS["sst2"]
    assert text_classifiers.cache_path("sst2", a) != text_classifiers.cache_path("sst2", b)
    assert text_classifiers.cache_path("sst2", a) != text_classifiers.cache_path("agnews", a)
    assert a.fingerprint("sst2") == small_fine_tuning().fingerprint("sst2")


def test_the_agnews_split_is_stratified_and_disjoint():
    (train, _), (held, held_labels) = text_classifiers.task_data("agnews")
    assert (len(train), len(held)) == (6000, 1600)
    assert np.bincount(held_labels).tolist() == [400] * 4
    assert not set(train) & set(held)
