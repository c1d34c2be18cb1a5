import zlib

import numpy as np
import pytest

from jaxinterp import neurons

DIM = 64


def _word_vector(word: str) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(word.encode())).normal(size=DIM)


def embed(texts):
    """A bag-of-words text encoder: the normalised sum of fixed random word vectors."""
    out = np.stack([sum(_word_vector(w) for w in text.lower().split()) for text in texts])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


SPORTS = ["football match goal", "the football team won the match", "a late goal in the match", "match of football"]
FILMS = ["a moving film with great acting", "the film is boring", "acting in this film", "a film to remember"]
MIXED = [SPORTS[0], FILMS[0], "stock market shares fall", "rain and wind tomorrow"]
ANIMALS = ["the cat sat", "a dog ran", "birds sing", "fish swim"]
MARKETS = ["stock market shares", "shares fall", "bank rates rise", "market rates"]


def _database():
    return neurons.concept_database(embed, [ANIMALS, MARKETS, MIXED, SPORTS, FILMS], progress=False)


def test_search_finds_the_planted_component_first():
    """The component whose top texts are all about football ranks first for "football match", the film component
    first for "film acting"; text queries and their vectors give the same ranking."""
    database = _database()
    assert database.shape == (5, 4, DIM)
    ids, scores = neurons.search_components(database, ["football match", "film acting"], embed=embed, top=5)
    assert ids[:, 0].tolist() == [3, 4]
    assert np.all(np.diff(scores, axis=1) <= 0)
    same, _ = neurons.search_components(database.mean(axis=1), embed(["football match"])[0], top=5)
    np.testing.assert_array_equal(same[0], ids[0])


def test_clarity_is_the_mean_pairwise_cosine_and_higher_for_one_concept():
    database = _database()
    scores = neurons.clarity(database)
    assert scores[3] > scores[2] and scores[4] > scores[2]
    unit = database / np.linalg.norm(database, axis=-1, keepdims=True)
    pairwise = np.einsum("csd,ctd->cst", unit, unit)
    n = database.shape[1]
    np.testing.assert_allclose(scores, (pairwise.sum((1, 2)) - n) / (n * (n - 1)), atol=1e-12)
    same = np.repeat(database[:, :1], 3, axis=1)
    np.testing.assert_allclose(neurons.clarity(same), 1.0)


def test_labels_on_a_known_answer():
    """Labelled against concept descriptions, the football component is "sports", the film one "cinema", the
    market one "finance"; labels and similarities agree, and descriptions embedded by `embed` give the same."""
    concepts = ("sports", "cinema", "finance")
    descriptions = ["football goal match", "film acting", "stock market shares"]
    labelled = neurons.label_components(_database(), concepts, concept_vectors=embed(descriptions))
    assert [labelled.labels[i] for i in (1, 3, 4)] == ["finance", "sports", "cinema"]
    np.testing.assert_allclose(labelled.scores, labelled.similarity.max(axis=1))
    assert np.all(labelled.margins >= 0)
    by_text = neurons.label_components(_database(), descriptions, embed=embed)
    np.testing.assert_array_equal(by_text.label_ids, labelled.label_ids)


def test_templates_remove_the_template_direction():
    """With templates, a query's vector is embed(filled) - embed(empty), averaged over the templates."""
    vectors = neurons.embed_queries(embed, ["football"], templates=["a text about {}", "news of {}"])
    filled = embed(["a text about football", "news of football"])
    empty = embed(["a text about ", "news of "])
    np.testing.assert_allclose(vectors[0], (filled - empty).mean(axis=0))


def test_redundancy_and_polysemanticity():
    """A duplicated component makes a set redundant; a component with two tight, distant clusters of examples is
    more polysemantic than one concept; the official formulas' special cases hold."""
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, DIM))
    cos_ab = neurons.similarity(a[None], b[None])[0, 0]
    np.testing.assert_allclose(neurons.redundancy(np.stack([a, a, b])), (1 + 1 + cos_ab) / 3)
    one = a + 0.05 * rng.normal(size=(6, DIM))
    two = np.concatenate([a + 0.05 * rng.normal(size=(3, DIM)), c + 0.05 * rng.normal(size=(3, DIM))])
    scores = neurons.polysemanticity(np.stack([one, two]))
    assert scores[1] > 0.5 and scores[0] < 0.1
    centres = two[:3].mean(0), two[3:].mean(0)
    np.testing.assert_allclose(scores[1], 1 - neurons.similarity(centres[0][None], centres[1][None])[0, 0], atol=1e-6)
    lonely = np.concatenate([a + 0.01 * rng.normal(size=(5, DIM)), 10 * c[None]])  # one example alone in a cluster
    mean = lonely.mean(0)
    expected = 1 - np.mean([neurons.clarity(np.stack([mean, v])[None])[0] for v in lonely])
    np.testing.assert_allclose(neurons.polysemanticity(lonely[None]), [expected], atol=1e-9)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="same, non-zero number"):
        neurons.concept_database(embed, [["a", "b"], ["c"]], progress=False)
    with pytest.raises(ValueError, match="need `embed`"):
        neurons.search_components(_database(), "football")
    with pytest.raises(ValueError, match="top must be"):
        neurons.search_components(_database(), "football", embed=embed, top=9)
    with pytest.raises(ValueError, match="2 concepts but 3"):
        neurons.label_components(_database(), ("x", "y"), concept_vectors=embed(["a", "b", "c"]))
    with pytest.raises(ValueError, match="at least two samples"):
        neurons.clarity(np.ones((2, 1, 3)))
