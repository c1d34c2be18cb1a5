"""Aligning the units of two networks (convergent learning, Li et al. 2016): correlation matrices streamed over
batches, one-to-one matching, semi-matching, mutual information, sparse prediction (one-to-many) and spectral
clustering (many-to-many). See `docs/compare.md#aligning-units`."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..capture import capture
from ..training import minibatches, train
from ._checks import as_matrix, check_finite, same_rows

_AFFINITY_FLOOR = 1e-6


class Correlations(NamedTuple):
    """Pearson correlations between the units of two networks on the same examples.

    - `cross`: `[units_a, units_b]`, unit `i` of A against unit `j` of B.
    - `within_a`, `within_b`: `[units_a, units_a]` and `[units_b, units_b]`, each network against itself.
    - `count`: the number of examples (samples) the statistics were computed from.

    A unit that is constant on every example has no correlation with anything; its rows and columns are 0 (and
    its diagonal entry in `within_*` is 0 too), so dead units never match.
    """

    cross: np.ndarray
    within_a: np.ndarray
    within_b: np.ndarray
    count: int


class CorrelationStatistics:
    """Running first and second moments of two sets of units, from which `Correlations` follow; memory is
    `O((units_a + units_b)^2)`, independent of the number of examples.

    Sums are kept in float64 about a shift (the first batch's means), so that large means do not cancel the
    variance.
    """

    def __init__(self):
        self.count = 0
        self._shift_a = self._shift_b = None
        self._sum_a = self._sum_b = None
        self._sum_aa = self._sum_bb = self._sum_ab = None

    def update(self, a: Float[ArrayLike, "na units_a"], b: Float[ArrayLike, "nb units_b"]) -> "CorrelationStatistics":
        """Add a batch: `a` and `b` are `[examples, units]` values of networks A and B on the same examples.
        Returns `self`."""
        where = "CorrelationStatistics.update"
        a = as_matrix(a, "a", where)
        b = as_matrix(b, "b", where)
        same_rows(a, b, ("a", "b"), where)
        if self._shift_a is None:
            self._shift_a, self._shift_b = a.mean(axis=0), b.mean(axis=0)
            self._sum_a, self._sum_b = np.zeros(a.shape[1]), np.zeros(b.shape[1])
            self._sum_aa = np.zeros((a.shape[1],) * 2)
            self._sum_bb = np.zeros((b.shape[1],) * 2)
            self._sum_ab = np.zeros((a.shape[1], b.shape[1]))
        elif a.shape[1] != self._sum_a.shape[0] or b.shape[1] != self._sum_b.shape[0]:
            raise ValueError(
                f"{where}: earlier batches had {self._sum_a.shape[0]} and {self._sum_b.shape[0]} units, this one "
                f"has {a.shape[1]} and {b.shape[1]}"
            )
        a = a - self._shift_a
        b = b - self._shift_b
        self.count += a.shape[0]
        self._sum_a += a.sum(axis=0)
        self._sum_b += b.sum(axis=0)
        self._sum_aa += a.T @ a
        self._sum_bb += b.T @ b
        self._sum_ab += a.T @ b
        return self

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean of every unit of A and of B."""
        self._require(1)
        return self._shift_a + self._sum_a / self.count, self._shift_b + self._sum_b / self.count

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(cov_ab, cov_aa, cov_bb)`, normalised by `count` (the maximum-likelihood estimate)."""
        self._require(2)
        n = self.count
        mean_a, mean_b = self._sum_a / n, self._sum_b / n
        return (
            self._sum_ab / n - np.outer(mean_a, mean_b),
            self._sum_aa / n - np.outer(mean_a, mean_a),
            self._sum_bb / n - np.outer(mean_b, mean_b),
        )

    def correlations(self) -> Correlations:
        """The correlation matrices of everything added so far (at least two examples)."""
        cov_ab, cov_aa, cov_bb = self.covariances()
        scale_a = _inverse_scale(np.diag(cov_aa))
        scale_b = _inverse_scale(np.diag(cov_bb))
        return Correlations(
            np.clip(cov_ab * scale_a[:, None] * scale_b[None, :], -1.0, 1.0),
            np.clip(cov_aa * scale_a[:, None] * scale_a[None, :], -1.0, 1.0),
            np.clip(cov_bb * scale_b[:, None] * scale_b[None, :], -1.0, 1.0),
            self.count,
        )

    def _require(self, n: int) -> None:
        if self.count < n:
            raise ValueError(f"CorrelationStatistics: {self.count} examples added; at least {n} are needed")


def _inverse_scale(variance: np.ndarray) -> np.ndarray:
    """`1 / std` where the variance is clearly positive, else 0 (a constant unit)."""
    tiny = 1e-12 * max(float(np.max(variance, initial=0.0)), 1e-30)
    return np.where(variance > tiny, 1.0 / np.sqrt(np.maximum(variance, tiny)), 0.0)


def correlations(a: Float[ArrayLike, "na units_a"], b: Float[ArrayLike, "nb units_b"]) -> Correlations:
    """Correlations between the columns of `a` (`[examples, units_a]`) and of `b` (`[examples, units_b]`), in
    memory: the same numbers as streaming the rows through `CorrelationStatistics`."""
    return CorrelationStatistics().update(a, b).correlations()


def paired_correlations(x: Float[ArrayLike, "nx ux"], y: Float[ArrayLike, "ny uy"]) -> np.ndarray:
    """The correlation of column `j` of `x` with column `j` of `y`, for every `j` (0 for a constant column):
    `[units]`. For a prediction `y` of targets `x`, its square is the explained fraction of variance of the best
    affine rescaling."""
    where = "paired_correlations"
    x = as_matrix(x, "x", where, min_rows=2)
    y = as_matrix(y, "y", where, min_rows=2)
    if x.shape != y.shape:
        raise ValueError(f"{where}: x and y must have the same shape, got {x.shape} and {y.shape}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return (x * y).sum(axis=0) * _inverse_scale((x * x).sum(axis=0)) * _inverse_scale((y * y).sum(axis=0))


def _units_last(value: Array, unit_axis: int) -> Array:
    """A batch of per-example site values `[batch, ...]` as `[samples, units]`: the per-example `unit_axis` holds
    the units, every other axis (batch, positions) becomes samples."""
    value = jnp.moveaxis(value, unit_axis + 1 if unit_axis >= 0 else unit_axis, -1)
    return value.reshape(-1, value.shape[-1])


@eqx.filter_jit
def _site_values(captured, inputs, unit_axis):
    _, sites = jax.vmap(captured)(inputs)
    return {name: _units_last(value, unit_axis) for name, value in sites.items()}


def _as_batches(inputs: Any, batch_size: int) -> Iterable:
    if hasattr(inputs, "shape"):
        return (inputs[i : i + batch_size] for i in range(0, inputs.shape[0], batch_size))
    return inputs


def unit_correlations(
    model_a: Any,
    model_b: Any,
    inputs: Any,
    sites: str | Sequence[str] | Mapping[str, str],
    *,
    unit_axis: int = 0,
    batch_size: int = 256,
) -> dict[str, Correlations]:
    """Correlate the units of two networks at tagged sites on the same inputs, streamed over batches.

    Each model is a function of one example that tags its values with `jaxinterp.tag`; the sites are read with
    `jaxinterp.capture`, one compiled call per batch, and only the running moments are kept (memory does not
    grow with the number of examples). For a site whose per-example value has more axes than the units, the
    other axes (spatial positions of a convolution, token positions) are samples, as in Li et al. (2016).

    **Arguments:**

    - `model_a`, `model_b`: the two networks (equinox Modules or functions of one example).
    - `inputs`: an array of examples (split into `batch_size` rows), or any iterable of input batches.
    - `sites`: a site name or glob pattern, several of them, or a mapping `{site_of_a: site_of_b}` of exact
      names (for networks whose sites are named differently).
    - `unit_axis`: the axis of a site's per-example value that holds its units (0: channels of `[C, H, W]`).
    - `batch_size`: rows per batch when `inputs` is an array.

    **Returns:** `{site_of_a: Correlations}`, with `cross` between A's and B's units.
    """
    where = "unit_correlations"
    if isinstance(sites, Mapping):
        patterns_a, patterns_b = tuple(sites), tuple(sites.values())
    else:
        patterns_a = patterns_b = (sites,) if isinstance(sites, str) else tuple(sites)
    if not patterns_a:
        raise ValueError(f"{where}: no sites given")
    captured_a, captured_b = capture(model_a, *patterns_a), capture(model_b, *patterns_b)
    statistics: dict[str, CorrelationStatistics] = {}
    pairs = None
    for batch in _as_batches(inputs, batch_size):
        values_a = _site_values(captured_a, batch, unit_axis)
        values_b = _site_values(captured_b, batch, unit_axis)
        if pairs is None:
            if isinstance(sites, Mapping):
                pairs = dict(sites)
            else:
                missing = sorted(set(values_a) ^ set(values_b))
                if missing:
                    raise ValueError(f"{where}: the sites {missing} are in one network but not the other")
                pairs = {name: name for name in values_a}
            statistics = {name: CorrelationStatistics() for name in pairs}
        for name_a, name_b in pairs.items():
            a, b = np.asarray(values_a[name_a]), np.asarray(values_b[name_b])
            check_finite(a, f"the values of site {name_a!r} of model_a", where)
            check_finite(b, f"the values of site {name_b!r} of model_b", where)
            statistics[name_a].update(a, b)
    if pairs is None:
        raise ValueError(f"{where}: inputs holds no batches")
    return {name: stats.correlations() for name, stats in statistics.items()}


class Matching(NamedTuple):
    """Pairs of units: unit `rows[k]` of A goes with unit `columns[k]` of B, with similarity `values[k]`."""

    rows: np.ndarray
    columns: np.ndarray
    values: np.ndarray


def _similarity(similarity, where: str) -> np.ndarray:
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2 or 0 in similarity.shape:
        raise ValueError(f"{where}: similarity must be a non-empty matrix [units_a, units_b], got {similarity.shape}")
    check_finite(similarity, "similarity", where)
    return similarity


def match_units(similarity: Float[ArrayLike, "units_a units_b"]) -> Matching:
    """One-to-one matching (bipartite, maximum total similarity; the Hungarian algorithm of
    `scipy.optimize.linear_sum_assignment`).

    **Arguments:**

    - `similarity`: `[units_a, units_b]`, e.g. `Correlations.cross` or a mutual-information matrix.

    **Returns:** a `Matching` of `min(units_a, units_b)` pairs, in the order of A's units; no unit is used twice.
    """
    from scipy.optimize import linear_sum_assignment  # imported when used, so `import jaxinterp` stays light

    similarity = _similarity(similarity, "match_units")
    rows, columns = linear_sum_assignment(similarity, maximize=True)
    return Matching(rows, columns, similarity[rows, columns])


def semi_match(similarity: Float[ArrayLike, "units_a units_b"]) -> Matching:
    """Semi-matching: every unit of A with its most similar unit of B (several units of A may share one).

    **Arguments:**

    - `similarity`: `[units_a, units_b]`.

    **Returns:** a `Matching` with one pair per unit of A.
    """
    similarity = _similarity(similarity, "semi_match")
    rows = np.arange(similarity.shape[0])
    columns = np.argmax(similarity, axis=1)
    return Matching(rows, columns, similarity[rows, columns])


def _discretise(x: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins over each column's range: integer codes in `[0, bins)`."""
    low, high = x.min(axis=0), x.max(axis=0)
    width = np.where(high > low, high - low, 1.0)
    return np.clip(((x - low) / width * bins).astype(np.int64), 0, bins - 1)


def _entropy_of_counts(counts: np.ndarray, n: int, correction: str) -> np.ndarray | np.floating:
    """Entropy in nats of the histograms along the last axis of `counts`."""
    p = counts / n
    with np.errstate(divide="ignore", invalid="ignore"):
        plug_in = -np.sum(np.where(counts > 0, p * np.log(p), 0.0), axis=-1)
    if correction == "miller_madow":
        return plug_in + (np.count_nonzero(counts, axis=-1) - 1) / (2 * n)
    return plug_in


def _check_histogram_arguments(bins: int, correction: str, where: str) -> None:
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
        raise ValueError(f"{where}: bins must be an integer of at least 2, got {bins!r}")
    if correction not in ("miller_madow", "none"):
        raise ValueError(f"{where}: correction must be 'miller_madow' or 'none', got {correction!r}")


def entropy(x: Float[ArrayLike, " n"], *, bins: int = 16, correction: str = "miller_madow") -> float:
    """The entropy (nats) of a sample of one variable, from a histogram of `bins` equal-width bins over its range.

    **Arguments:**

    - `x`: `[examples]`.
    - `bins`: the number of bins.
    - `correction`: `"miller_madow"` adds `(m - 1) / (2 n)` to the plug-in estimate (`m` non-empty bins, `n`
      examples), the first-order correction of its downward bias; `"none"` is the plug-in estimate.

    **Returns:** the estimate, a float.
    """
    _check_histogram_arguments(bins, correction, "entropy")
    x = as_matrix(np.reshape(np.asarray(x, dtype=np.float64), (-1, 1)), "x", "entropy", min_rows=2)
    codes = _discretise(x, bins)[:, 0]
    return float(_entropy_of_counts(np.bincount(codes, minlength=bins), x.shape[0], correction))


def mutual_information_matrix(
    a: Float[ArrayLike, "na units_a"],
    b: Float[ArrayLike, "nb units_b"],
    *,
    bins: int = 16,
    correction: str = "miller_madow",
) -> np.ndarray:
    """Mutual information (nats) between every unit of A and every unit of B, from 2-D histograms.

    Each unit is cut into `bins` equal-width bins over its range; `I = H(A_i) + H(B_j) - H(A_i, B_j)`, each
    entropy estimated as in `entropy` (with `correction="miller_madow"`, `I` is corrected by
    `(m_i + m_j - m_ij - 1) / (2 n)` with `m` the non-empty bins of each histogram).

    **Arguments:**

    - `a`, `b`: `[examples, units_a]` and `[examples, units_b]`, on the same examples.
    - `bins`, `correction`: as for `entropy`.

    **Returns:** `[units_a, units_b]`.
    """
    where = "mutual_information_matrix"
    _check_histogram_arguments(bins, correction, where)
    a = as_matrix(a, "a", where, min_rows=2)
    b = as_matrix(b, "b", where, min_rows=2)
    same_rows(a, b, ("a", "b"), where)
    n = a.shape[0]
    codes_a, codes_b = _discretise(a, bins), _discretise(b, bins)

    def marginal(codes):
        offsets = codes + bins * np.arange(codes.shape[1])
        counts = np.bincount(offsets.ravel(), minlength=bins * codes.shape[1]).reshape(codes.shape[1], bins)
        return _entropy_of_counts(counts, n, correction)

    entropy_a, entropy_b = marginal(codes_a), marginal(codes_b)
    units_b = b.shape[1]
    offsets = bins * bins * np.arange(units_b)
    joint = np.empty((a.shape[1], units_b))
    for i in range(a.shape[1]):
        cells = (codes_a[:, i, None] * bins + codes_b + offsets).ravel()
        counts = np.bincount(cells, minlength=bins * bins * units_b).reshape(units_b, bins * bins)
        joint[i] = _entropy_of_counts(counts, n, correction)
    return entropy_a[:, None] + entropy_b[None, :] - joint


def mutual_information(
    x: Float[ArrayLike, " nx"], y: Float[ArrayLike, " ny"], *, bins: int = 16, correction: str = "miller_madow"
) -> float:
    """Mutual information (nats) of two variables from their 2-D histogram (as `mutual_information_matrix`).

    **Arguments:** `x`, `y`: `[examples]`; `bins`, `correction` as for `entropy`.

    **Returns:** the estimate, a float.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"mutual_information: x and y must be vectors of one length, got {x.shape} and {y.shape}")
    return float(mutual_information_matrix(x[:, None], y[:, None], bins=bins, correction=correction)[0, 0])


class LinearMap(eqx.Module):
    """`y = x W + c` for one example `x` (`[in]` to `[out]`); batch with `jax.vmap`."""

    weight: Float[Array, "in out"]
    bias: Float[Array, " out"]

    def __call__(self, x: Float[Array, " in"]) -> Float[Array, " out"]:
        return x @ self.weight + self.bias


class SparsePrediction(eqx.Module):
    """An L1-regularised linear prediction of net B's units from net A's (made by `sparse_prediction`). The map
    acts on standardised units (each unit's mean 0 and variance 1 on the training examples); `__call__` takes
    and returns raw values of one example.

    - `linear`: the map between standardised units; `linear.weight[i, j]` is how much A's unit `i` enters B's
      unit `j`.
    - `mean_a`, `scale_a`, `mean_b`, `scale_b`: the standardisations.
    """

    linear: LinearMap
    mean_a: Float[Array, " units_a"]
    scale_a: Float[Array, " units_a"]
    mean_b: Float[Array, " units_b"]
    scale_b: Float[Array, " units_b"]

    def __call__(self, a: Float[Array, " units_a"]) -> Float[Array, " units_b"]:
        return self.mean_b + self.scale_b * self.linear((a - self.mean_a) / self.scale_a)

    def inputs_per_target(self, tolerance: float = 0.0) -> np.ndarray:
        """For every unit of B, how many units of A have a weight of magnitude above `tolerance`: `[units_b]`."""
        return np.sum(np.abs(np.asarray(self.linear.weight)) > tolerance, axis=0)


def _soft_threshold(threshold: float) -> optax.GradientTransformation:
    """The proximal step of `threshold * |W|_1` on `LinearMap.weight`, applied after the gradient step (so
    `sgd` followed by this is ISTA, the proximal gradient method)."""

    def update(updates, state, params):
        moved = params.weight + updates.weight
        shrunk = jnp.sign(moved) * jnp.maximum(jnp.abs(moved) - threshold, 0.0)
        return eqx.tree_at(lambda m: m.weight, updates, shrunk - params.weight), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 1e-12 * max(float(std.max()), 1e-30), std, 1.0)


def sparse_prediction(
    a: Float[ArrayLike, "na units_a"],
    b: Float[ArrayLike, "nb units_b"],
    *,
    l1: float,
    steps: int = 500,
    key: PRNGKeyArray,
    batch_size: int | None = None,
    momentum: float = 0.9,
    progress: bool = False,
) -> tuple[SparsePrediction, dict[str, Any]]:
    """Predict every unit of B from all units of A with an L1 penalty, so each is explained by few of A's units
    (one-to-many alignment, Li et al. 2016).

    Units are standardised; for every unit `j` of B the objective is the Lasso's,
    `1 / (2 n) sum_i (b_ij - a_i . w_j - c_j)^2 + l1 |w_j|_1`, minimised by proximal gradient steps (optax `sgd`
    with step `1 / L`, `L` the largest eigenvalue of `a^T a / n`, then soft-thresholding) in
    `jaxinterp.train`, so weights are exactly zero where the penalty wins.

    **Arguments:**

    - `a`, `b`: `[examples, units_a]` and `[examples, units_b]`, on the same examples.
    - `l1`: the penalty (on standardised units; 0 is least squares).
    - `steps`: proximal gradient steps.
    - `key`: a PRNG key (minibatch draws when `batch_size` is set).
    - `batch_size`: `None` for full-batch steps, else minibatches of this size drawn with replacement.
    - `momentum`: heavy-ball momentum of the gradient step (0 for plain ISTA).
    - `progress`: show the training loop's progress bar.

    **Returns:** `(prediction, history)`: a `SparsePrediction` and the training loop's history (`loss` is the
    squared-error part, `l1` the penalty).
    """
    where = "sparse_prediction"
    a = as_matrix(a, "a", where, min_rows=2)
    b = as_matrix(b, "b", where, min_rows=2)
    same_rows(a, b, ("a", "b"), where)
    if not (isinstance(l1, (int, float)) and l1 >= 0):
        raise ValueError(f"{where}: l1 must be a non-negative number, got {l1!r}")
    mean_a, scale_a = _standardise(a)
    mean_b, scale_b = _standardise(b)
    za = ((a - mean_a) / scale_a).astype(np.float32)
    zb = ((b - mean_b) / scale_b).astype(np.float32)
    lipschitz = float(np.linalg.eigvalsh(za.T.astype(np.float64) @ za / za.shape[0])[-1]) + 1.0
    step = 1.0 / lipschitz
    optimiser = optax.chain(optax.sgd(step, momentum=momentum or None), _soft_threshold(step * l1))
    linear = LinearMap(jnp.zeros((a.shape[1], b.shape[1])), jnp.zeros(b.shape[1]))

    def loss_fn(linear, batch, key):
        x, y = batch
        error = jax.vmap(linear)(x) - y
        return 0.5 * jnp.mean(jnp.sum(error**2, axis=1)), {"l1": l1 * jnp.sum(jnp.abs(linear.weight))}

    batch_key, train_key = jr.split(key)
    data = (jnp.asarray(za), jnp.asarray(zb))
    batches = (lambda step: data) if batch_size is None else minibatches(data, batch_size, key=batch_key)
    linear, history = train(
        linear, loss_fn, batches, optimiser, steps=steps, key=train_key, has_aux=True, description=where,
        progress=progress,
    )  # fmt: skip
    prediction = SparsePrediction(
        linear, *(jnp.asarray(v, dtype=jnp.float32) for v in (mean_a, scale_a, mean_b, scale_b))
    )
    return prediction, history


def spectral_clusters(correlations: Correlations, num_clusters: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Many-to-many alignment: spectral clustering of the units of both networks together (Li et al. 2016).

    The affinity is the absolute correlation of the joint matrix `[[within_a, cross], [cross^T, within_b]]`,
    at least `1e-6` (so that constant units, correlated with nothing, leave the graph connected;
    scikit-learn's `SpectralClustering` with a precomputed affinity and k-means label assignment).

    **Arguments:**

    - `correlations`: from `unit_correlations` or `correlations`.
    - `num_clusters`: how many groups.
    - `seed`: the seed of the clustering's k-means.

    **Returns:** `(labels_a, labels_b)`: the cluster of each unit of A and of B.
    """
    from sklearn.cluster import SpectralClustering  # scikit-learn is heavy to import: only when used

    cross = _similarity(correlations.cross, "spectral_clusters")
    units_a, units_b = cross.shape
    if not (isinstance(num_clusters, int) and 2 <= num_clusters <= units_a + units_b):
        raise ValueError(
            f"spectral_clusters: num_clusters must be an integer from 2 to {units_a + units_b} (the units of both "
            f"networks), got {num_clusters!r}"
        )
    joint = np.block([[correlations.within_a, cross], [cross.T, correlations.within_b]])
    affinity = np.maximum(np.abs(joint), _AFFINITY_FLOOR)  # dead units would otherwise disconnect the graph
    np.fill_diagonal(affinity, 1.0)
    clustering = SpectralClustering(num_clusters, affinity="precomputed", random_state=seed, assign_labels="kmeans")
    labels = clustering.fit_predict(affinity)
    return labels[:units_a], labels[units_a:]
