"""Model-native skills (P36): an orthonormal basis of sequence-level activations, scores along it, and selecting
data along a direction or for coverage of the basis. See `docs/steering.md`."""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .directions import _rows


class SkillBasis(NamedTuple):
    """What `skill_basis` returns.

    - `mean`: `[d]`, the mean sequence-level activation (the basis describes variation around it).
    - `directions`: `[k, d]`, orthonormal rows, ordered by the variance they carry.
    - `scale`: `[k]`, the standard deviation of the activations along each direction (a natural unit for steering
      with `steer(model, {site: basis.directions[j]}, alpha * basis.scale[j])`).
    - `explained`: `[k]`, the fraction of the total variance along each direction.
    """

    mean: Float[Array, " d"]
    directions: Float[Array, "k d"]
    scale: Float[Array, " k"]
    explained: Float[Array, " k"]

    def scores(self, pooled: Float[ArrayLike, "n d"]) -> Float[Array, "n k"]:
        """Each example's coordinates along the directions: `(x - mean) @ directions.T`."""
        pooled = jnp.asarray(pooled)
        if pooled.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"SkillBasis.scores: inputs have width {pooled.shape[-1]}, the basis {self.mean.shape[0]}")
        return (pooled - self.mean) @ self.directions.T


def skill_basis(pooled: Float[ArrayLike, "n d"], k: int) -> SkillBasis:
    """The `k` orthonormal directions of largest variance of sequence-level activations (mean-pooled over each
    sequence, one row per example): the top right singular vectors of the centred matrix, each signed so that its
    largest-magnitude coefficient is positive (a deterministic sign).

    **Returns:** a `SkillBasis`.
    """
    pooled = _rows(pooled, "pooled", "skill_basis")
    n, d = pooled.shape
    if not 1 <= k <= min(n, d):
        raise ValueError(f"skill_basis: k must be between 1 and min(n, d) = {min(n, d)}; got {k}")
    mean = pooled.mean(0)
    _, singular, vt = jnp.linalg.svd(pooled - mean, full_matrices=False)
    directions = vt[:k]
    signs = jnp.sign(directions[jnp.arange(k), jnp.argmax(jnp.abs(directions), 1)])
    directions = directions * signs[:, None]
    variance = singular**2
    return SkillBasis(mean, directions, singular[:k] / np.sqrt(max(n - 1, 1)), variance[:k] / variance.sum())


def select_along(scores: Float[ArrayLike, " n"], size: int, *, sign: int = 1) -> Int[np.ndarray, " size"]:
    """The `size` examples furthest along a direction (`sign = 1`) or against it (`sign = -1`), by their scores.

    **Returns:** int indices `[size]`, from the most extreme.
    """
    scores = np.asarray(scores)
    if scores.ndim != 1 or not 1 <= size <= scores.shape[0]:
        raise ValueError(f"select_along: need scores [n] and 1 <= size <= n; got {scores.shape} and {size}")
    if sign not in (1, -1):
        raise ValueError(f"select_along: sign must be 1 or -1; got {sign}")
    return np.argsort(-sign * scores, kind="stable")[:size]


def select_for_coverage(scores: Float[ArrayLike, "n k"], size: int) -> Int[np.ndarray, " size"]:
    """`size` examples covering every direction of a basis: in turn, for each direction and each of its two ends,
    the most extreme example not yet chosen (so each skill's both poles are represented equally).

    **Returns:** int indices `[size]`, distinct.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or not 1 <= size <= scores.shape[0]:
        raise ValueError(f"select_for_coverage: need scores [n, k] and 1 <= size <= n; got {scores.shape}, {size}")
    orders = [np.argsort(sign * scores[:, j], kind="stable") for j in range(scores.shape[1]) for sign in (-1, 1)]
    cursors = [0] * len(orders)
    chosen: list[int] = []
    taken = np.zeros(scores.shape[0], bool)
    while len(chosen) < size:
        for i, order in enumerate(orders):
            while taken[order[cursors[i]]]:
                cursors[i] += 1
            taken[order[cursors[i]]] = True
            chosen.append(int(order[cursors[i]]))
            if len(chosen) == size:
                break
    return np.asarray(chosen)
