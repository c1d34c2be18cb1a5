"""CD-T scores of words, spans and a hierarchy of phrases (paper P1's local importance; `docs/attribution.md`).

A feature's score is the relevant part of the margin when the feature's token positions at the `embed` site are the
source of a contextual decomposition (`jaxinterp.cd`): `rel[target] - rel[competitor]`. Every span of up to
`max_width` consecutive words is one source set of a single `jaxinterp.cd_sweep`, so all spans cost one compiled,
batched decomposition. The hierarchy merges adjacent groups of words step by step, as agglomerative contextual
decomposition does (ACD; Singh, Murdoch and Yu 2019), each step one sweep over the candidate merges.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ..cdt.rules import Rules
from ..cdt.sweep import SourceStack, cd_sweep
from .text import WIDTH_MULTIPLE, Classifier, Text, arrays, margin

SITE = "embed"


@eqx.filter_jit
def _source_margins(f, tokens, attention_mask, sources, target, competitor, rules):
    stack = SourceStack.at(SITE, sources[:, :, None])
    rel, _ = cd_sweep(f, stack, rules=rules)(tokens, attention_mask)
    return margin(rel, target, competitor)


def source_margins(
    f: Classifier, text: Text, position_sets: np.ndarray, target: int, competitor: int, rules: Rules = Rules()
) -> np.ndarray:
    """CD-T margins for source sets given as 0/1 position masks `[k, width]`, in one sweep.

    The sets are padded with empty ones to a multiple of `WIDTH_MULTIPLE`, so calls with similar `k` share a
    compilation. **Returns:** `[k]`.
    """
    position_sets = np.asarray(position_sets, np.float32)
    k = position_sets.shape[0]
    padded = np.zeros((-(-k // WIDTH_MULTIPLE) * WIDTH_MULTIPLE, text.width), np.float32)
    padded[:k] = position_sets
    tokens, attention_mask, _ = arrays(text)
    scores = _source_margins(
        f, tokens, attention_mask, jnp.asarray(padded), jnp.asarray(target), jnp.asarray(competitor), rules
    )
    return np.asarray(scores)[:k]


def word_spans(n_words: int, max_width: int) -> list[tuple[int, int]]:
    """Every span `(start, stop)` of `1..max_width` consecutive words, by width, then start."""
    if max_width < 1:
        raise ValueError(f"max_width must be at least 1, got {max_width}")
    return [(a, a + w) for w in range(1, min(max_width, n_words) + 1) for a in range(n_words - w + 1)]


def span_position_sets(text: Text, spans) -> np.ndarray:
    """0/1 position masks `[len(spans), width]` of word spans `(start, stop)`."""
    matrix = text.feature_matrix()
    return np.stack([matrix[a:b].max(0) for a, b in spans]) if spans else np.zeros((0, text.width), np.float32)


def cd_spans(
    f: Classifier, text: Text, target: int, competitor: int, max_width: int = 1, rules: Rules = Rules()
) -> dict[tuple[int, int], float]:
    """CD-T score of every span of up to `max_width` words of `text`, in one sweep.

    **Returns:** `{(start, stop): score}` over word indices (`stop` excluded); the width-1 spans are the word
    scores.
    """
    spans = word_spans(text.n_features, max_width)
    scores = source_margins(f, text, span_position_sets(text, spans), target, competitor, rules)
    return {span: float(s) for span, s in zip(spans, scores)}


def cd_hierarchy(
    f: Classifier, text: Text, target: int, competitor: int, rules: Rules = Rules()
) -> list[list[tuple[tuple[int, int], float]]]:
    """Agglomerative CD-T: a hierarchy of phrases, from single words to the whole text.

    Level 0 holds every word with its score. At each step every pair of adjacent groups is scored as one source
    (one sweep), and the pair whose union has the score of largest magnitude is merged; the next level is the new
    partition. Groups are spans of words, so the hierarchy is a binary tree over the sentence.

    **Returns:** one list per level of `((start, stop), score)`, left to right; `n_words` levels in all.
    """
    n = text.n_features
    word_scores = cd_spans(f, text, target, competitor, 1, rules)
    groups = [((i, i + 1), word_scores[(i, i + 1)]) for i in range(n)]
    levels = [list(groups)]
    while len(groups) > 1:
        candidates = [(groups[i][0][0], groups[i + 1][0][1]) for i in range(len(groups) - 1)]
        scores = source_margins(f, text, span_position_sets(text, candidates), target, competitor, rules)
        best = int(np.argmax(np.abs(scores)))
        groups = groups[:best] + [(candidates[best], float(scores[best]))] + groups[best + 2 :]
        levels.append(list(groups))
    return levels
