"""SemanticLens component labels (P23, Dreyer et al. 2025): each component (a neuron, a feature) is represented in a
foundation model's embedding space by the embeddings of the examples that activate it most (its concept database);
components are searched by text, labelled against concept descriptions, and scored for clarity, redundancy and
polysemanticity with the definitions of the paper's code. The foundation model is passed in as a function from
strings to embeddings, so that this module depends on none. See `docs/neurons.md#semanticlens-component-labels`."""

import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from jaxtyping import ArrayLike, Float
from tqdm.auto import tqdm

Embed = Callable[[list[str]], Float[ArrayLike, "n d"]]
"""A foundation model's text encoder: a list of strings to `[len(strings), d]` embeddings."""


class ComponentLabels(NamedTuple):
    """Each component's best-matching concept.

    - `concepts`: the concept names, in the order of the similarity's columns.
    - `label_ids`: int `[components]`, the index of each component's best concept.
    - `scores`: `[components]`, its cosine similarity.
    - `margins`: `[components]`, how far it is above the second best concept's (0 with one concept).
    - `similarity`: `[components, concepts]`, every cosine similarity.
    """

    concepts: tuple[str, ...]
    label_ids: np.ndarray
    scores: np.ndarray
    margins: np.ndarray
    similarity: np.ndarray

    @property
    def labels(self) -> list[str]:
        """Each component's concept name."""
        return [self.concepts[i] for i in self.label_ids]


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _matrix(x, name: str, where: str, ndim: int = 2) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != ndim or 0 in x.shape:
        axes = "[components, samples, d]" if ndim == 3 else "[n, d]"
        raise ValueError(f"{where}: {name} must be a non-empty {axes} array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{where}: {name} has NaN or infinite entries")
    return x


def _embedded(embed: Embed, texts: list[str], where: str, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    out = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="embedding", disable=not progress, leave=False):
        chunk = texts[start : start + batch_size]
        vectors = np.asarray(embed(chunk), np.float64)
        if vectors.ndim != 2 or vectors.shape[0] != len(chunk):
            raise ValueError(f"{where}: embed must map {len(chunk)} strings to [{len(chunk)}, d], got {vectors.shape}")
        out.append(vectors)
    return np.concatenate(out)


def concept_database(
    embed: Embed,
    examples: Sequence[Sequence[str]],
    *,
    batch_size: int = 64,
    progress: bool = True,
) -> Float[np.ndarray, "components samples d"]:
    """The concept database: every component's top-activating examples embedded by the foundation model.

    Each distinct string is embedded once, however many components share it.

    **Arguments:**

    - `embed`: the foundation model's text encoder (`Embed`).
    - `examples`: one sequence of strings per component, all of the same length (its top-activating texts, e.g.
      from `top_contexts(..., per_text=True)`).
    - `batch_size`: strings per call of `embed`; `progress`: a progress bar over the calls.

    **Returns:** `[components, samples, d]`.
    """
    where = "concept_database"
    examples = [list(texts) for texts in examples]
    lengths = {len(texts) for texts in examples}
    if not examples or len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"{where}: needs the same, non-zero number of examples for every component, got {lengths}")
    if not all(isinstance(text, str) for texts in examples for text in texts):
        raise ValueError(f"{where}: examples must be strings")
    distinct = list(dict.fromkeys(text for texts in examples for text in texts))
    vectors = _embedded(embed, distinct, where, batch_size, progress)
    index = {text: i for i, text in enumerate(distinct)}
    return vectors[np.asarray([[index[text] for text in texts] for texts in examples])]


def embed_queries(embed: Embed, queries: Sequence[str], *, templates: Sequence[str] | None = None) -> np.ndarray:
    """Text queries (or concept descriptions) in the foundation model's space.

    With `templates` (such as `"a text about {}"`), a query's vector is the mean over templates of
    `embed(template.format(query)) - embed(template.format(""))`: the template's own direction is removed, as in
    the paper's code.

    **Arguments:** `embed` (`Embed`), `queries` (strings), `templates` (format strings with one `{}`).

    **Returns:** `[len(queries), d]`.
    """
    where = "embed_queries"
    queries = [queries] if isinstance(queries, str) else list(queries)
    if not queries or not all(isinstance(q, str) for q in queries):
        raise ValueError(f"{where}: queries must be a non-empty sequence of strings")
    if not templates:
        return _embedded(embed, queries, where)
    templates = list(templates)
    if not all(isinstance(t, str) and "{}" in t for t in templates):
        raise ValueError(f"{where}: every template must be a string with one '{{}}', got {templates!r}")
    filled = _embedded(embed, [t.format(q) for q in queries for t in templates], where)
    empty = _embedded(embed, [t.format("") for t in templates], where)
    return (filled.reshape(len(queries), len(templates), -1) - empty[None]).mean(axis=1)


def _components(components, where: str) -> np.ndarray:
    """`[components, d]`: the aggregated vectors, or the mean over samples of a concept database."""
    components = np.asarray(components, np.float64)
    if components.ndim == 3:
        components = components.mean(axis=1)
    return _matrix(components, "components", where)


def similarity(a: Float[ArrayLike, "na d"], b: Float[ArrayLike, "nb d"]) -> np.ndarray:
    """Cosine similarities between two sets of vectors.

    **Arguments:** `a` `[na, d]`, `b` `[nb, d]`.

    **Returns:** `[na, nb]`.
    """
    a, b = _matrix(a, "a", "similarity"), _matrix(b, "b", "similarity")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"similarity: a and b must have the same width, got {a.shape[1]} and {b.shape[1]}")
    return _normalised(a) @ _normalised(b).T


def _vectors(queries, embed, templates, where: str) -> np.ndarray:
    if isinstance(queries, str) or (isinstance(queries, Sequence) and queries and isinstance(queries[0], str)):
        if embed is None:
            raise ValueError(f"{where}: text queries need `embed`, the foundation model's text encoder")
        return embed_queries(embed, queries, templates=templates)
    vectors = np.asarray(queries, np.float64)
    return _matrix(vectors[None] if vectors.ndim == 1 else vectors, "queries", where)


def search_components(
    components: Float[ArrayLike, "components *samples d"],
    queries: str | Sequence[str] | Float[ArrayLike, "*q d"],
    *,
    embed: Embed | None = None,
    templates: Sequence[str] | None = None,
    top: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Text search over components: the components whose aggregated embedding is most similar to each query.

    **Arguments:**

    - `components`: `[components, d]` aggregated vectors, or a concept database `[components, samples, d]`
      (averaged over samples, as the paper's code aggregates it).
    - `queries`: a string or strings (embedded with `embed` and `templates`, `embed_queries`), or their vectors
      `[d]` / `[q, d]`.
    - `top`: components returned per query.

    **Returns:** `(ids, scores)`, int `[q, top]` and `[q, top]`: component indices, the most similar first, and
    their cosine similarities.
    """
    where = "search_components"
    vectors = _components(components, where)
    queries = _vectors(queries, embed, templates, where)
    if not isinstance(top, numbers.Integral) or isinstance(top, bool) or not 1 <= top <= vectors.shape[0]:
        raise ValueError(f"{where}: top must be an integer from 1 to {vectors.shape[0]}, got {top!r}")
    scores = similarity(queries, vectors)
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    return ids, np.take_along_axis(scores, ids, axis=1)


def label_components(
    components: Float[ArrayLike, "components *samples d"],
    concepts: Sequence[str],
    *,
    concept_vectors: Float[ArrayLike, "concepts d"] | None = None,
    embed: Embed | None = None,
    templates: Sequence[str] | None = None,
) -> ComponentLabels:
    """Label every component with the concept description its aggregated embedding is most similar to.

    **Arguments:**

    - `components`: `[components, d]`, or a concept database `[components, samples, d]` (averaged over samples).
    - `concepts`: the concept names (and, without `concept_vectors`, the descriptions embedded with `embed` and
      `templates`).
    - `concept_vectors`: `[concepts, d]`, the concepts' vectors, when already embedded.

    **Returns:** a `ComponentLabels`.
    """
    where = "label_components"
    concepts = tuple(concepts)
    if not concepts or not all(isinstance(c, str) for c in concepts):
        raise ValueError(f"{where}: concepts must be a non-empty sequence of names")
    if concept_vectors is None:
        if embed is None:
            raise ValueError(f"{where}: give concept_vectors, or embed to embed the concept descriptions")
        concept_vectors = embed_queries(embed, concepts, templates=templates)
    concept_vectors = _matrix(concept_vectors, "concept_vectors", where)
    if concept_vectors.shape[0] != len(concepts):
        raise ValueError(f"{where}: {len(concepts)} concepts but {concept_vectors.shape[0]} concept vectors")
    scores = similarity(_components(components, where), concept_vectors)
    ranked = np.sort(scores, axis=1)
    best = np.argmax(scores, axis=1)
    margins = ranked[:, -1] - ranked[:, -2] if len(concepts) > 1 else np.zeros(len(best))
    return ComponentLabels(concepts, best, ranked[:, -1], margins, scores)


def clarity(database: Float[ArrayLike, "components samples d"]) -> np.ndarray:
    """Clarity: how alike a component's examples are, the mean cosine similarity between its distinct examples.

    With `u_1..u_n` the normalised embeddings of one component's `n` examples,
    `clarity = (n ||mean(u)||^2 - 1) / (n - 1)`, which equals the mean of `u_i . u_j` over `i != j` (the paper's
    code). It lies in `[-1 / (n - 1), 1]`; 1 when every example embeds alike.

    **Arguments:** `database`: `[components, samples, d]`, at least two samples.

    **Returns:** `[components]`.
    """
    database = _matrix(database, "database", "clarity", ndim=3)
    n = database.shape[1]
    if n < 2:
        raise ValueError(f"clarity: needs at least two samples per component, got {n}")
    mean = _normalised(database).mean(axis=1)
    return (np.sum(mean**2, axis=-1) - 1 / n) / (n - 1) * n


def redundancy(components: Float[ArrayLike, "components *samples d"]) -> float:
    """Redundancy of a set of components: the mean, over components, of the cosine similarity to the most similar
    other component (the paper's code).

    **Arguments:** `components`: `[components, d]` (at least two), or a concept database (averaged over samples).

    **Returns:** a number in `[-1, 1]`; near 1 when every component has a near-duplicate.
    """
    vectors = _components(components, "redundancy")
    if vectors.shape[0] < 2:
        raise ValueError("redundancy: needs at least two components")
    scores = similarity(vectors, vectors) - 2 * np.eye(vectors.shape[0])
    return float(scores.max(axis=1).mean())


def polysemanticity(
    database: Float[ArrayLike, "components samples d"],
    *,
    clusters: int = 2,
    seed: int = 123,
    replace_empty_clusters: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Polysemanticity: how far apart the sub-concepts of a component's examples are (the paper's code).

    Each component's example embeddings (not normalised) are clustered by k-means (`clusters` clusters, ten
    restarts, `random_state=seed`); the score is `1 - clarity(cluster centres)`, which for two clusters is
    `1 - cos(c_1, c_2)`. Where a cluster has fewer than two examples (with `replace_empty_clusters`), the score is
    instead `1 - mean_i clarity([mean(v), v_i])` over the first `min(10, samples)` examples `v_i`: one minus their
    mean cosine similarity to the examples' mean.

    **Arguments:** `database` (`[components, samples, d]`, at least `clusters` samples), `clusters`, `seed`,
    `replace_empty_clusters`, `progress` (a progress bar over components).

    **Returns:** `[components]`, in `[0, 2]` (near 0: one concept).
    """
    from sklearn.cluster import KMeans  # imported when used, so `import jaxinterp` stays light

    database = _matrix(database, "database", "polysemanticity", ndim=3)
    if not isinstance(clusters, numbers.Integral) or isinstance(clusters, bool) or clusters < 2:
        raise ValueError(f"polysemanticity: clusters must be an integer of at least 2, got {clusters!r}")
    if database.shape[1] < clusters:
        raise ValueError(f"polysemanticity: needs at least {clusters} samples per component, got {database.shape[1]}")
    centres, smallest = [], []
    for examples in tqdm(database, desc="polysemanticity", disable=not progress, leave=False):
        fitted = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit(examples)
        centres.append(fitted.cluster_centers_)
        counts = np.bincount(fitted.labels_, minlength=clusters)
        smallest.append(counts.min())
    scores = 1 - clarity(np.stack(centres))
    if replace_empty_clusters:
        replaced = np.asarray(smallest) < 2
        if replaced.any():
            chosen = database[replaced]
            mean = chosen.mean(axis=1)
            count = min(10, chosen.shape[1])
            pairs = [clarity(np.stack([mean, chosen[:, i]], axis=1)) for i in range(count)]
            scores[replaced] = 1 - np.mean(pairs, axis=0)
    return scores
