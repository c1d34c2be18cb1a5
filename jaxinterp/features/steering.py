"""Activation steering: adding a direction at a site (static activation steering, ACT), G-ACT's clustered
directions chosen per prompt by a probe and refined online (P25), and choosing a strength by the divergence it
causes. See `docs/steering.md`."""

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..intervene import Intervened, intervene
from .clustering import kmeans
from .directions import _rows, diff_in_means
from .probes import Probe, fit_probe, refine_probe


def _adder(vector, alpha, positions):
    def add(value):
        if value.shape[-1] != vector.shape[-1]:
            raise ValueError(f"steer: the direction has width {vector.shape[-1]}, the site has shape {value.shape}")
        shift = (alpha * vector).astype(value.dtype)
        if positions is None:
            return value + shift
        if value.ndim < 2:
            raise ValueError(f"steer: positions need a site with a sequence axis; the site has shape {value.shape}")
        return value.at[jnp.asarray(positions)].add(shift)

    return add


def steer(
    f: Callable,
    directions: Mapping[str, Float[ArrayLike, " d"]],
    alpha: float | Float[ArrayLike, ""] = 1.0,
    *,
    positions=None,
) -> Intervened:
    """`f` with `alpha * direction` added to the value of each named site (on the last axis; at every position,
    or at the sequence positions `positions` of the site's first axis).

    **Arguments:**

    - `f`: the function to steer (a model), with sites tagged by `jaxinterp.tag`.
    - `directions`: site name (or pattern) -> direction `[d]` (e.g. `diff_in_means`, `act_direction`,
      `GACT.direction`).
    - `alpha`: the strength; a traced scalar is fine (one compilation for every strength).
    - `positions`: an index array of positions to steer, or `None` for all.

    **Returns:** an `Intervened` function with `f`'s signature. A zero direction returns `f`'s output unchanged.
    """
    if not directions:
        raise ValueError("steer: no site to steer; pass {site_name: direction}")
    edits = {}
    for site, vector in directions.items():
        vector = jnp.asarray(vector)
        if vector.ndim != 1:
            raise ValueError(f"steer: the direction for {site!r} must be [d]; got shape {vector.shape}")
        edits[site] = _adder(vector, alpha, positions)
    return intervene(f, edits)


def act_direction(concept: Float[ArrayLike, "n d"], baseline: Float[ArrayLike, "m d"]) -> Float[Array, " d"]:
    """Static activation steering (ACT): one fixed vector, the mean activation of the concept's examples minus the
    baseline examples' (`diff_in_means`), added at a site for every prompt."""
    return diff_in_means(concept, baseline)


class GACT(NamedTuple):
    """G-ACT steering at one site (P25): `k` steering directions, the centroids of the clustered per-prompt
    differences, and a probe that reads a prompt's activation and weighs the directions.

    - `directions`: `[k, d]`.
    - `counts`: `[k]`, the examples behind each direction (online refinement moves a direction by a running mean).
    - `probe`: a `k`-class `Probe` on the site's (pooled) activation.
    """

    directions: Float[Array, "k d"]
    counts: Float[Array, " k"]
    probe: Probe

    @property
    def k(self) -> int:
        return self.directions.shape[0]

    def weights(self, activation: Float[ArrayLike, "*batch d"]) -> Float[Array, "*batch k"]:
        """The probe's probabilities of the `k` directions for a prompt's activation."""
        return self.probe.probabilities(activation)

    def direction(self, activation: Float[ArrayLike, "*batch d"]) -> Float[Array, "*batch d"]:
        """The steering vector for a prompt: the directions weighted by the probe's probabilities (with `k = 1`,
        the one direction, which is ACT's vector)."""
        return self.weights(activation) @ self.directions


def fit_gact(
    concept: Float[ArrayLike, "n d"],
    baseline: Float[ArrayLike, "m d"],
    k: int,
    *,
    key: PRNGKeyArray,
    probe_steps: int = 300,
    probe_learning_rate: float = 0.05,
    probe_l2: float = 1e-3,
) -> GACT:
    """Fit G-ACT at one site: each concept example's difference from the baseline mean,
    `delta_i = x_i - mean(baseline)`, clustered by k-means into `k` directions; a probe trained to tell, from
    `x_i`, which cluster `delta_i` fell in.

    **Arguments:** `concept`, activations of examples showing the concept `[n, d]` (mean-pooled over each
    prompt); `baseline`, activations of examples that do not `[m, d]`; `k`, the number of directions
    (`1 <= k <= n`); `key`, the clustering's PRNG key; the probe's fit settings.

    **Returns:** a `GACT`. With `k = 1` its one direction equals `act_direction(concept, baseline)`.
    """
    concept = _rows(concept, "concept", "fit_gact")
    baseline = _rows(baseline, "baseline", "fit_gact")
    if concept.shape[1] != baseline.shape[1]:
        raise ValueError(f"fit_gact: widths differ: concept {concept.shape}, baseline {baseline.shape}")
    differences = concept - baseline.mean(0)
    clusters = kmeans(differences, k, key=key)
    probe = fit_probe(concept, clusters.labels, k, steps=probe_steps, learning_rate=probe_learning_rate, l2=probe_l2)
    counts = jnp.bincount(clusters.labels, length=k).astype(differences.dtype)
    return GACT(clusters.centroids, counts, probe)


def refine_gact(
    gact: GACT,
    concept: Float[ArrayLike, "n d"],
    baseline_mean: Float[ArrayLike, " d"],
    *,
    learning_rate: float = 0.1,
    l2: float = 1e-3,
) -> GACT:
    """Online refinement with a new batch of concept examples: each new difference joins its nearest direction
    (which moves to the running mean of its examples), and the probe takes one gradient step toward those
    assignments.

    **Returns:** the refined `GACT`.
    """
    concept = _rows(concept, "concept", "refine_gact")
    differences = concept - jnp.asarray(baseline_mean)
    distances = jnp.sum((differences[:, None, :] - gact.directions[None]) ** 2, -1)
    labels = jnp.argmin(distances, 1)
    one_hot = jax.nn.one_hot(labels, gact.k, dtype=differences.dtype)
    added = one_hot.sum(0)
    counts = gact.counts + added
    sums = gact.directions * gact.counts[:, None] + one_hot.T @ differences
    directions = jnp.where(added[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], gact.directions)
    probe = refine_probe(gact.probe, concept, labels, learning_rate=learning_rate, l2=l2)
    return GACT(directions, counts, probe)


def kl_divergence(reference_logits: Float[ArrayLike, "*batch v"], logits: Float[ArrayLike, "*batch v"]) -> Array:
    """`KL(softmax(reference) || softmax(logits))` over the last axis, averaged over the rest (natural log)."""
    p = jax.nn.log_softmax(jnp.asarray(reference_logits), -1)
    q = jax.nn.log_softmax(jnp.asarray(logits), -1)
    return jnp.mean(jnp.sum(jnp.exp(p) * (p - q), -1))


class Strength(NamedTuple):
    """What `strength_for_divergence` returns: `alpha`, the divergence it causes, and the bisection's steps."""

    alpha: float
    divergence: float
    evaluations: int


def strength_for_divergence(
    divergence: Callable[[float], float],
    target: float,
    *,
    initial: float = 1.0,
    relative_tolerance: float = 0.02,
    max_evaluations: int = 40,
) -> Strength:
    """The strength `alpha >= 0` at which `divergence(alpha)` (a measure that grows with `alpha`, such as the KL
    of the next-token distribution after neutral prompts, steered against unsteered) reaches `target`: the upper
    end is doubled from `initial` until it passes the target, then the interval is bisected until the divergence
    is within `relative_tolerance` of the target.

    **Raises:** `ValueError` when the target is not positive, `RuntimeError` when `max_evaluations` do not reach it
    (saying the best strength found).
    """
    if not target > 0:
        raise ValueError(f"strength_for_divergence: the target must be positive; got {target}")
    low, high = 0.0, float(initial)
    evaluations = 0
    best = (np.inf, 0.0, 0.0)

    def measure(alpha):
        nonlocal evaluations, best
        evaluations += 1
        value = float(divergence(alpha))
        if not np.isfinite(value):
            raise ValueError(f"strength_for_divergence: the divergence at alpha = {alpha:g} is {value}")
        if abs(value - target) < best[0]:
            best = (abs(value - target), alpha, value)
        return value

    value = measure(high)
    while value < target:
        if evaluations >= max_evaluations:
            raise RuntimeError(
                f"strength_for_divergence: the divergence stays below {target} up to alpha = {high:g} "
                f"(reached {value:.4g})"
            )
        low, high = high, 2 * high
        value = measure(high)
    while abs(value - target) > relative_tolerance * target:
        if evaluations >= max_evaluations:
            raise RuntimeError(
                f"strength_for_divergence: no alpha within {relative_tolerance:.0%} of {target} after "
                f"{evaluations} evaluations; closest alpha = {best[1]:g} with divergence {best[2]:.4g}"
            )
        alpha = 0.5 * (low + high)
        value = measure(alpha)
        if value < target:
            low = alpha
        else:
            high = alpha
    _, alpha, value = best
    return Strength(alpha, value, evaluations)


def direction_accuracy(
    direction: Float[ArrayLike, " d"],
    concept: Float[ArrayLike, "n d"],
    baseline: Float[ArrayLike, "m d"],
    test_concept: Float[ArrayLike, "p d"],
    test_baseline: Float[ArrayLike, "q d"],
) -> float:
    """ACT's implicit probe: classify an activation as showing the concept when its projection on `direction`
    exceeds the midpoint of the two training means' projections. **Returns:** the balanced accuracy on the test
    examples."""
    direction = jnp.asarray(direction)
    threshold = 0.5 * (jnp.asarray(concept).mean(0) + jnp.asarray(baseline).mean(0)) @ direction
    hits = jnp.mean(jnp.asarray(test_concept) @ direction > threshold)
    rejections = jnp.mean(jnp.asarray(test_baseline) @ direction <= threshold)
    return float(0.5 * (hits + rejections))
