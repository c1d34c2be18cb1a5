"""k-means clustering in JAX: k-means++ seeding and Lloyd iterations, one compiled loop."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray


class Clusters(NamedTuple):
    """What `kmeans` returns.

    - `centroids`: `[k, d]`, the mean of each cluster's points (a cluster that loses every point keeps its last
      centroid).
    - `labels`: int `[n]`, the nearest centroid of each point.
    - `inertia`: the sum of squared distances of the points to their centroids.
    """

    centroids: Float[Array, "k d"]
    labels: Int[Array, " n"]
    inertia: Float[Array, ""]


def _squared_distances(x, centroids):
    return jnp.sum(x**2, 1)[:, None] - 2 * x @ centroids.T + jnp.sum(centroids**2, 1)[None, :]


def _seed(x, k, key):
    """k-means++: the first centroid uniformly, each next one with probability proportional to the squared
    distance to the nearest centroid chosen so far."""
    n = x.shape[0]
    keys = jax.random.split(key, k)
    first = jax.random.randint(keys[0], (), 0, n)
    centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
    nearest = jnp.sum((x - x[first]) ** 2, 1)

    def add(i, state):
        centroids, nearest = state
        weights = jnp.maximum(nearest, 0.0)
        logits = jnp.where(weights.sum() > 0, jnp.log(weights + 1e-30), jnp.zeros_like(weights))
        pick = jax.random.categorical(keys[i], logits)
        centroids = centroids.at[i].set(x[pick])
        return centroids, jnp.minimum(nearest, jnp.sum((x - x[pick]) ** 2, 1))

    centroids, _ = lax.fori_loop(1, k, add, (centroids, nearest))
    return centroids


@functools.partial(jax.jit, static_argnames=("k", "iterations"))
def _kmeans(x, key, k, iterations):
    def step(_, centroids):
        labels = jnp.argmin(_squared_distances(x, centroids), 1)
        one_hot = jax.nn.one_hot(labels, k, dtype=x.dtype)
        counts = one_hot.sum(0)
        sums = one_hot.T @ x
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centroids)

    centroids = lax.fori_loop(0, iterations, step, _seed(x, k, key))
    distances = _squared_distances(x, centroids)
    labels = jnp.argmin(distances, 1)
    inertia = jnp.maximum(jnp.take_along_axis(distances, labels[:, None], 1), 0.0).sum()
    return Clusters(centroids, labels, inertia)


def kmeans(x: Float[ArrayLike, "n d"], k: int, *, key: PRNGKeyArray, iterations: int = 50) -> Clusters:
    """Cluster the rows of `x` into `k` groups (Lloyd's algorithm from a k-means++ seeding).

    **Arguments:**

    - `x`: the points, `[n, d]`, finite.
    - `k`: the number of clusters, `1 <= k <= n`.
    - `key`: the seeding's PRNG key (same key, same clusters).
    - `iterations`: Lloyd iterations (assign each point to its nearest centroid, move each centroid to its
      points' mean).

    **Returns:** a `Clusters` (centroids, labels, inertia). With `k = 1` the one centroid is the mean of `x`.
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"kmeans: the points must be [n, d]; got shape {x.shape}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"kmeans: k must be between 1 and the number of points ({x.shape[0]}); got {k}")
    if iterations < 1:
        raise ValueError(f"kmeans: iterations must be at least 1; got {iterations}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("kmeans: the points contain NaN or infinite values")
    return _kmeans(x.astype(jnp.result_type(x.dtype, jnp.float32)), key, k, iterations)
