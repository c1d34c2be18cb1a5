"""Relative representations (Moschella et al. 2023): each example as its cosine similarities to a fixed set of
anchor examples, anchor selection, and zero-shot stitching of one network's encoder to another's decoder. See
`docs/compare.md#relative-representations`."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._checks import as_matrix, check_finite

ANCHOR_STRATEGIES = ("random", "by_class", "farthest_point")


def relative_representation(
    x: Float[ArrayLike, "n d"], anchors: Float[ArrayLike, "k da"], *, eps: float = 1e-8
) -> Float[Array, "n k"]:
    """The cosine similarity of every row of `x` to every anchor: normalise both to unit length, then
    `x a^T`. Invariant to any rotation or reflection of the latent space and to rescaling it.

    **Arguments:**

    - `x`: `[examples, d]` latent vectors.
    - `anchors`: `[anchors, d]`, the anchors' latent vectors in the same space.
    - `eps`: added to the norms (a zero vector has similarity 0 to everything).

    **Returns:** `[examples, anchors]`. Works under `jit`, `vmap` and `grad`.
    """
    x, anchors = jnp.asarray(x), jnp.asarray(anchors)
    if x.ndim != 2 or anchors.ndim != 2 or x.shape[1] != anchors.shape[1]:
        raise ValueError(
            "relative_representation: x [examples, d] and anchors [anchors, d] must share the latent width d, got "
            f"shapes {x.shape} and {anchors.shape}"
        )
    check_finite(x, "x", "relative_representation")
    check_finite(anchors, "anchors", "relative_representation")
    x = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)
    anchors = anchors / (jnp.linalg.norm(anchors, axis=-1, keepdims=True) + eps)
    return x @ anchors.T


def select_anchors(
    x: Float[ArrayLike, "n ..."],
    num: int,
    *,
    strategy: str = "random",
    labels: Int[ArrayLike, " n_labels"] | None = None,
    key: PRNGKeyArray,
) -> np.ndarray:
    """Choose `num` anchors among the examples `x`.

    **Arguments:**

    - `x`: `[examples, ...]`, inputs or latent vectors (flattened per example for distances).
    - `num`: how many anchors.
    - `strategy`: `"random"` (uniform, without replacement), `"by_class"` (the same number from every class,
      within a class at random; the first `num % classes` classes, in sorted order, get one more; needs
      `labels`) or `"farthest_point"` (greedy farthest-point sampling in Euclidean distance, from a random
      first anchor: each next anchor is the example farthest from those chosen).
    - `labels`: `[examples]` integer classes, for `"by_class"`.
    - `key`: a PRNG key.

    **Returns:** `[num]` indices into `x`, without repeats.
    """
    where = "select_anchors"
    x = np.asarray(x)
    n = x.shape[0] if x.ndim else 0
    if not (isinstance(num, int) and 1 <= num <= n):
        raise ValueError(f"{where}: num must be an integer from 1 to the {n} examples, got {num!r}")
    if strategy not in ANCHOR_STRATEGIES:
        raise ValueError(f"{where}: strategy must be one of {ANCHOR_STRATEGIES}, got {strategy!r}")
    if strategy == "random":
        return np.asarray(jr.choice(key, n, (num,), replace=False))
    if strategy == "by_class":
        if labels is None:
            raise ValueError(f"{where}: strategy 'by_class' needs labels")
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"{where}: labels must be [examples] = [{n}], got shape {labels.shape}")
        classes = np.unique(labels)
        chosen = []
        for i, (label, class_key) in enumerate(zip(classes, jr.split(key, len(classes)))):
            members = np.flatnonzero(labels == label)
            want = num // len(classes) + (1 if i < num % len(classes) else 0)
            if want > len(members):
                raise ValueError(f"{where}: class {label} has {len(members)} examples, fewer than the {want} asked")
            chosen.append(members[np.asarray(jr.choice(class_key, len(members), (want,), replace=False))])
        return np.concatenate(chosen)
    points = as_matrix(x.reshape(n, -1), "x", where)
    first = int(jr.randint(key, (), 0, n))
    chosen = [first]
    distance = np.sum((points - points[first]) ** 2, axis=1)
    for _ in range(num - 1):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.sum((points - points[chosen[-1]]) ** 2, axis=1))
    return np.asarray(chosen)


class Stitched(eqx.Module):
    """`decoder(encoder(x))`, or with `anchors`, `decoder(relative_representation(encoder(x), encoder(anchors)))`:
    a network, or an encoder of one network stitched to the decoder of another (made by `stitch`). For one
    example; batch with `jax.vmap` (the anchors' encoding does not depend on the example, so it is computed once
    per batch).

    - `encoder`: one example to a latent vector `[d]`.
    - `decoder`: a latent vector (`[d]`, or `[anchors]` when relative) to the output.
    - `anchors`: `[anchors, ...]` anchor inputs, encoded by this `encoder`; `None` for absolute latents.

    The anchors are an array field: to train a relative network with `jaxinterp.train`, pass them in the batch and
    build the `Stitched` inside the loss, so they are not trained.
    """

    encoder: Callable
    decoder: Callable
    anchors: Array | None

    def latent(self, x: Array) -> Array:
        """The decoder's input for one example: the latent vector, or its relative representation."""
        z = self.encoder(x)
        if self.anchors is None:
            return z
        return relative_representation(z[None], jax.vmap(self.encoder)(self.anchors))[0]

    def __call__(self, x: Array) -> Array:
        return self.decoder(self.latent(x))


def stitch(encoder: Callable, decoder: Callable, anchors: ArrayLike | None = None) -> Stitched:
    """Zero-shot stitching: `encoder` (of network A) feeding `decoder` (trained in network B), with no training.

    **Arguments:**

    - `encoder`: A's encoder, one example to `[d]`.
    - `decoder`: B's decoder. With `anchors`, B was trained on relative representations to the same anchor
      inputs, and A's encoder embeds them, so the decoder sees A's relative representation; without, the
      decoder reads A's absolute latent vectors (which needs A's and B's widths to agree).
    - `anchors`: `[anchors, ...]` anchor inputs shared by both networks, or `None`.

    **Returns:** a `Stitched` network of one example.
    """
    if anchors is not None:
        anchors = jnp.asarray(anchors)
        if anchors.ndim < 1 or anchors.shape[0] < 1:
            raise ValueError(f"stitch: anchors must be a non-empty batch of inputs, got shape {anchors.shape}")
        check_finite(anchors, "anchors", "stitch")
    return Stitched(encoder, decoder, anchors)
