"""Faithfulness of an attribution: deletion and insertion curves and their AOPC.

Rank the features by score (most supportive first). The *deletion* curve is the target's probability as the top
`ceil(q n)` features are removed, for fractions `q` in `FRACTIONS`; the *insertion* curve is the probability when
only they are present. AOPC (area over the perturbation curve; Samek et al. 2017, as used by DeYoung et al. 2020)
averages over the fractions after 0:

    AOPC_deletion  = mean_q [p(text) - p(text without the top q)]          (higher: the top features mattered)
    AOPC_insertion = mean_q [p(only the top q) - p(no features)]           (higher: they suffice)

Both curves of one text take `2 len(FRACTIONS)` evaluations, in one batch.
"""

import dataclasses
import math

import jax
import numpy as np

from .perturbation import logits_with
from .text import Classifier, Text

FRACTIONS = np.linspace(0.0, 1.0, 11)


@dataclasses.dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves of one attribution. **Fields:** `fractions` `[m]`, `deletion` `[m]`,
    `insertion` `[m]` (target probabilities), `aopc_deletion`, `aopc_insertion`."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    aopc_deletion: float
    aopc_insertion: float


def ranked_masks(scores: np.ndarray, fractions: np.ndarray = FRACTIONS) -> tuple[np.ndarray, np.ndarray]:
    """`(deletion_keeps, insertion_keeps)`, each `[len(fractions), n]`: the top `ceil(q n)` features (by score,
    ties broken by position) removed, or alone present."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 1 or not scores.size:
        raise ValueError(f"scores must be a non-empty vector, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores contain NaN or infinity at features {np.flatnonzero(~np.isfinite(scores)).tolist()}")
    n = scores.size
    order = np.argsort(-scores, kind="stable")
    top = np.zeros((len(fractions), n), np.float32)
    for row, q in enumerate(fractions):
        top[row, order[: math.ceil(q * n - 1e-9)]] = 1.0
    return 1.0 - top, top


def curves(
    f: Classifier,
    text: Text,
    scores: np.ndarray,
    target: int,
    *,
    removal: str | int = "drop",
    fractions: np.ndarray = FRACTIONS,
) -> Curves:
    """Deletion and insertion curves of `scores` (`[n_features]`) for `text` and the target class."""
    fractions = np.asarray(fractions, np.float64)
    if fractions[0] != 0.0 or np.any(np.diff(fractions) <= 0) or fractions[-1] > 1.0:
        raise ValueError("fractions must rise from 0 to at most 1")
    deletion_keeps, insertion_keeps = ranked_masks(scores, fractions)
    logits = logits_with(f, text, np.concatenate([deletion_keeps, insertion_keeps]), removal=removal)
    probabilities = np.asarray(jax.nn.softmax(logits, -1)[:, target])
    deletion, insertion = probabilities[: len(fractions)], probabilities[len(fractions) :]
    return Curves(
        fractions,
        deletion,
        insertion,
        float(np.mean(deletion[0] - deletion[1:])),
        float(np.mean(insertion[1:] - insertion[0])),
    )
