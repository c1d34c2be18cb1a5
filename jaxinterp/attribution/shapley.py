"""Shapley values of a value function over binary feature masks: KernelSHAP (Lundberg & Lee 2017, "A Unified
Approach to Interpreting Model Predictions"), matching the `shap` package's `KernelExplainer`, and exact Shapley
values by enumeration.

A value function is `value(masks) -> values`: `masks` is a float array `[k, n_features]` of 0/1 (1: the feature is
present, 0: it is replaced by its baseline), `values` is `[k]`. It does not depend on any model; whoever calls these
estimators builds it (from a text classifier, say)."""

import functools
import itertools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

ValueFn = Callable[[Float[Array, "k n"]], Float[Array, " k"]]

# the most features `exact_shapley` enumerates (2**20 coalitions)
MAX_EXACT_FEATURES = 20


def _check_n_features(n_features: int, where: str) -> None:
    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)):
        raise TypeError(f"{where}: n_features must be an int, got {n_features!r}")
    if n_features < 1:
        raise ValueError(f"{where}: n_features must be at least 1, got {n_features}")


def _rcond(rows: int, columns: int, dtype) -> float:
    """The cut-off, relative to the largest singular value, below which `lstsq` treats a singular value as zero.
    NumPy's and JAX's default, `eps * max(rows, columns)`, is up to ~1e-3 in float32 for thousands of samples and
    would discard directions of well-posed fits; this one is a small multiple of `eps`, so that a full-rank fit is
    solved as by shap's `np.linalg.solve` and only a numerically singular one is solved in the least-norm sense
    (shap's fallback)."""
    return float(jnp.finfo(dtype).eps) * 10 * max(columns, 1)


def check_values(values: Array, masks, name: str, where: str) -> None:
    """Raise a `ValueError` naming the first non-finite entry of `values` and the mask it belongs to, when the values
    are known (under `jit` or `vmap` they are not, and nothing is checked: a NaN then reaches the result)."""
    if isinstance(values, jax.core.Tracer) or not isinstance(values, (jax.Array, np.ndarray)):
        return
    array = np.asarray(values)
    bad = ~np.isfinite(array)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        mask = "" if isinstance(masks, jax.core.Tracer) else f" (mask {np.asarray(masks[row]).astype(int).tolist()})"
        raise ValueError(
            f"{where}: {name} has {int(bad.sum())} non-finite values (NaN or infinite), the first {array[row]} at "
            f"row {row}{mask}"
        )


def evaluate(value: ValueFn, masks: ArrayLike, *, batch_size: int | None = None, where: str = "evaluate") -> Array:
    """A value function on a set of masks, in one call or in chunks.

    **Arguments:**

    - `value`: `value(masks [k, n]) -> values [k]`.
    - `masks`: `[m, n]` 0/1 float masks.
    - `batch_size`: masks per call of `value` (`jax.lax.map` over chunks, the last one padded with all-present masks
      whose values are dropped); `None` for one call on all `m`.
    - `where`: the name of the calling function, for error messages.

    **Returns:** the values `[m]` (float), checked for NaN and infinities when they are known (not under `jit`).
    """
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1
    ):
        raise ValueError(f"{where}: batch_size must be a positive int or None, got {batch_size!r}")
    masks = jnp.asarray(masks, dtype=jnp.float32)
    m, n = masks.shape

    def call(chunk):
        out = jnp.asarray(value(chunk))
        if out.shape != (chunk.shape[0],):
            raise ValueError(
                f"{where}: value must map masks [k, n_features] to values [k]; given masks of shape {chunk.shape} "
                f"it returned shape {out.shape}"
            )
        return out if jnp.issubdtype(out.dtype, jnp.inexact) else out.astype(jnp.float32)

    if batch_size is None or batch_size >= m:
        values = call(masks)
    else:
        chunks = -(-m // batch_size)
        padded = jnp.concatenate([masks, jnp.ones((chunks * batch_size - m, n), masks.dtype)])
        values = jax.lax.map(call, padded.reshape(chunks, batch_size, n)).reshape(-1)[:m]
    check_values(values, masks, "value(masks)", where)
    return values


def _subset_size_weights(n_features: int) -> tuple[np.ndarray, int, int]:
    """shap's weight of each subset size `s = 1 .. ceil((M-1)/2)`: the Shapley kernel's total weight
    `(M-1) / (s (M-s))` of size `s`, doubled where `s` stands for itself and its complement size `M-s`, normalised
    to sum to 1. **Returns:** `(weights, number of sizes, number of paired sizes)`."""
    m = n_features
    num_sizes = math.ceil((m - 1) / 2)
    num_paired = (m - 1) // 2
    weights = np.array([(m - 1.0) / (s * (m - s)) for s in range(1, num_sizes + 1)])
    weights[:num_paired] *= 2
    return weights / weights.sum(), num_sizes, num_paired


def _enumerated_part(n_features: int, n_samples: int):
    """The subset sizes shap enumerates completely, smallest first, while the budget allows, and their coalitions
    and kernel weights in shap's order (each coalition followed by its complement for paired sizes).

    **Returns:** `(masks [f, n] numpy, weights [f] numpy, number of enumerated sizes, size weights, number of sizes,
    number of paired sizes)`."""
    m = n_features
    size_weights, num_sizes, num_paired = _subset_size_weights(m)
    remaining = size_weights.copy()
    left = n_samples
    rows, weights = [], []
    num_full = 0
    for s in range(1, num_sizes + 1):
        paired = s <= num_paired
        count = math.comb(m, s) * (2 if paired else 1)
        # shap's test, with its tolerance, of whether the budget left covers every coalition of this size
        if left * remaining[s - 1] / count < 1.0 - 1e-8:
            break
        num_full += 1
        left -= count
        if remaining[s - 1] < 1.0:
            remaining /= 1 - remaining[s - 1]
        w = size_weights[s - 1] / math.comb(m, s) / (2 if paired else 1)
        for members in itertools.combinations(range(m), s):
            mask = np.zeros(m, np.float32)
            mask[list(members)] = 1.0
            rows.append(mask)
            weights.append(w)
            if paired:
                rows.append(1.0 - mask)
                weights.append(w)
    masks = np.stack(rows) if rows else np.zeros((0, m), np.float32)
    return masks, np.asarray(weights, np.float64), num_full, size_weights, num_sizes, num_paired


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _sampled_part(key, n_features: int, n_rows: int, num_full: int, size_weights: tuple[float, ...], num_paired: int):
    """shap's random coalitions from the sizes not enumerated, as fixed-shape JAX: `4 n_rows` draws of a size (with
    probability proportional to the Shapley kernel's weight of one size, i.e. half a paired size's weight, as each
    draw of a paired size yields the coalition and its complement) and of a uniformly random coalition of that
    size; the draws are taken in order, a new coalition taking the next row (and its complement the one after), a
    repeated one adding 1 to the count of its first draw (and of its complement), until `n_rows` rows are filled
    (rows left over when the draws run out keep an empty mask and weight 0). The counts are scaled to sum to the
    size weights of the sizes not enumerated. **Returns:** `(masks [n_rows, n], weights [n_rows])`."""
    m = n_features
    draws = 4 * n_rows
    size_weights = np.asarray(size_weights)
    probabilities = size_weights.copy()
    probabilities[:num_paired] /= 2
    probabilities = probabilities[num_full:]
    probabilities /= probabilities.sum()
    weight_left = float(size_weights[num_full:].sum())

    size_key, member_key = jax.random.split(key)
    sizes = num_full + 1 + jax.random.choice(size_key, len(probabilities), (draws,), p=jnp.asarray(probabilities))
    # a uniformly random coalition of each size: the features whose random rank in the draw is below the size
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(member_key, (draws, m)), axis=1), axis=1)
    drawn = ranks < sizes[:, None]
    paired = sizes <= num_paired

    # which draws repeat an earlier one: group equal coalitions (as words of 32 bits) by sorting
    words = -(-m // 32)
    bits = jnp.pad(drawn, ((0, 0), (0, 32 * words - m))).reshape(draws, words, 32).astype(jnp.uint32)
    codes = jnp.sum(bits << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)
    order = jnp.lexsort([codes[:, w] for w in range(words)])
    sorted_codes = codes[order]
    starts = jnp.concatenate([jnp.ones(1, bool), jnp.any(sorted_codes[1:] != sorted_codes[:-1], axis=1)])
    group = jnp.zeros(draws, jnp.int32).at[order].set(jnp.cumsum(starts, dtype=jnp.int32) - 1)
    index = jnp.arange(draws, dtype=jnp.int32)
    new = jax.ops.segment_min(index, group, num_segments=draws)[group] == index

    # rows taken by each draw, and whether the budget was still open when it was drawn
    taken = jnp.where(new, 1 + paired.astype(jnp.int32), 0)
    before = jnp.cumsum(taken) - taken
    used = before < n_rows
    counts = jax.ops.segment_sum(used.astype(jnp.float32), group, num_segments=draws)[group]

    row = jnp.where(new & used, before, n_rows)  # n_rows: out of range, dropped
    complement_row = jnp.where(new & used & paired, before + 1, n_rows)
    masks = jnp.zeros((n_rows, m), jnp.float32)
    masks = masks.at[row].set(drawn.astype(jnp.float32), mode="drop")
    masks = masks.at[complement_row].set(1.0 - drawn.astype(jnp.float32), mode="drop")
    weights = (
        jnp.zeros(n_rows, jnp.float32).at[row].set(counts, mode="drop").at[complement_row].set(counts, mode="drop")
    )
    return masks, weights * (weight_left / weights.sum())


def _min_samples(n_features: int) -> int:
    return min(n_features, 2**n_features - 2)


def kernel_shap_samples(
    n_features: int, n_samples: int, key: PRNGKeyArray
) -> tuple[Float[Array, "m n"], Float[Array, " m"]]:
    """KernelSHAP's coalitions and their kernel weights, drawn as shap's `KernelExplainer.explain` draws them.

    The Shapley kernel (Lundberg & Lee 2017) weights a coalition of `s` of the `M` features by
    `(M-1) / (C(M, s) s (M-s))`. When `2**M - 2 <= n_samples` every coalition but the empty and the full one is
    enumerated (`m = 2**M - 2` rows: the estimate is then exact). Otherwise, as shap does, the subset sizes are
    paired (`s` with `M-s`) and enumerated completely from small to large while the budget left covers the
    kernel's share of a size (shap's test, tolerance included), and the rest of the budget is sampled from the
    sizes left, with repeats merged into the weight of their first draw (see `_sampled_part`). The rows enumerated
    come in shap's order and carry shap's weights; the weights sum to 1 (the sampled rows' to the weight of the
    sizes not enumerated).

    Differences from shap: the random numbers come from `jax.random` (the same key gives the same samples; shap uses
    NumPy's global generator), so the sampled rows agree with shap's in distribution, not row by row. The draws are
    made at once as fixed-shape arrays (jit-able): `4 * rows left` of them, shap's cap too, taken in order as shap's
    loop takes them. In the rare case that they run out before the budget is filled, the rows left are all-absent
    masks of weight 0 (shap leaves its unused rows at weight 0 as well, but does not evaluate them). Every feature is
    taken to vary (shap leaves out features whose instance and background values agree).

    **Arguments:**

    - `n_features`: the number of features `M` (at least 1; with one feature there is nothing to sample and `m = 0`).
    - `n_samples`: the budget of coalitions, not counting the empty and full ones, which KernelSHAP evaluates besides
      (shap's `nsamples`; its `"auto"` is `2 * M + 2048`). At least `min(M, 2**M - 2)`.
    - `key`: a `jax.random` key.

    **Returns:** `(masks, weights)`: `masks [m, M]` float32 0/1 (1: present), `weights [m]` float32, with
    `m = min(n_samples, 2**M - 2)`.
    """
    _check_n_features(n_features, "kernel_shap_samples")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"kernel_shap_samples: n_samples must be an int, got {n_samples!r}")
    if n_samples < _min_samples(n_features):
        raise ValueError(
            f"kernel_shap_samples: n_samples={n_samples} is too small for {n_features} features; at least "
            f"{_min_samples(n_features)} coalitions are needed to fit the attributions"
        )
    if n_features == 1:
        return jnp.zeros((0, 1), jnp.float32), jnp.zeros((0,), jnp.float32)
    n_samples = int(min(n_samples, 2**n_features - 2))
    fixed_masks, fixed_weights, num_full, size_weights, num_sizes, num_paired = _enumerated_part(n_features, n_samples)
    masks, weights = jnp.asarray(fixed_masks), jnp.asarray(fixed_weights, jnp.float32)
    left = n_samples - fixed_masks.shape[0]
    if num_full == num_sizes or left == 0:
        return masks, weights
    sampled_masks, sampled_weights = _sampled_part(
        key, n_features, left, num_full, tuple(size_weights.tolist()), num_paired
    )
    return jnp.concatenate([masks, sampled_masks]), jnp.concatenate([weights, sampled_weights])


def kernel_shap_fit(
    masks: ArrayLike, values: ArrayLike, weights: ArrayLike, full_value: ArrayLike, empty_value: ArrayLike
) -> Float[Array, " n"]:
    """KernelSHAP's attributions from evaluated coalitions: the weighted least-squares fit of shap's
    `KernelExplainer.solve`, without its feature selection (shap with `l1_reg=False`).

    The values relative to the empty coalition's are regressed on the masks, by weighted least squares, subject to
    efficiency, `sum(phi) = full_value - empty_value`. As in shap, the constraint is eliminated through the last
    feature (`phi[-1] = full_value - empty_value - sum(phi[:-1])`, which turns the regressors into
    `masks[:, :-1] - masks[:, -1:]` and the targets into `values - empty_value - masks[:, -1] * (full_value -
    empty_value)`), and the remaining `n - 1` are the weighted least-squares solution. shap solves the normal
    equations (float64); here `jnp.linalg.lstsq` solves the square-root-weighted system (more accurate in float32;
    a singular system gets the least-norm solution, as shap's fallback does). Jit-able; batches under `vmap`.

    **Arguments:**

    - `masks`: the coalitions `[m, n]` (0/1), without the empty and full ones.
    - `values`: the value of each coalition `[m]`.
    - `weights`: their kernel weights `[m]` (any positive scale; see `kernel_shap_samples`).
    - `full_value`, `empty_value`: the values of the full and the empty coalition (scalars).

    **Returns:** the attributions `phi [n]`, summing to `full_value - empty_value`.
    """
    masks, values, weights = jnp.asarray(masks), jnp.asarray(values), jnp.asarray(weights)
    full_value, empty_value = jnp.asarray(full_value), jnp.asarray(empty_value)
    if masks.ndim != 2:
        raise ValueError(f"kernel_shap_fit: masks must be [samples, features], got shape {masks.shape}")
    m, n = masks.shape
    if n < 1:
        raise ValueError(f"kernel_shap_fit: masks have no features (shape {masks.shape})")
    if values.shape != (m,):
        raise ValueError(
            f"kernel_shap_fit: values must be [{m}], one per mask of masks {masks.shape}; got {values.shape}"
        )
    if weights.shape != (m,):
        raise ValueError(
            f"kernel_shap_fit: weights must be [{m}], one per mask of masks {masks.shape}; got {weights.shape}"
        )
    if full_value.shape != () or empty_value.shape != ():
        raise ValueError(
            f"kernel_shap_fit: full_value and empty_value must be scalars, got shapes {full_value.shape} and "
            f"{empty_value.shape}"
        )
    check_values(values, masks, "values", "kernel_shap_fit")
    ends = jnp.stack([full_value, empty_value])
    check_values(ends, np.stack([np.ones(n), np.zeros(n)]), "[full_value, empty_value]", "kernel_shap_fit")
    check_values(weights, masks, "weights", "kernel_shap_fit")
    if n > 1 and m < n - 1:
        raise ValueError(f"kernel_shap_fit: {m} coalitions cannot determine the attributions of {n} features")

    dtype = jnp.result_type(values.dtype, full_value.dtype, empty_value.dtype, jnp.float32)
    return _constrained_fit(masks.astype(dtype), values.astype(dtype), weights.astype(dtype), full_value, empty_value)


@jax.jit
def _constrained_fit(masks, values, weights, full_value, empty_value):
    """shap's weighted least squares with the efficiency constraint eliminated through the last feature."""
    m, n = masks.shape
    difference = (full_value - empty_value).astype(values.dtype)
    if n == 1:
        return difference[None]
    regressors = masks[:, :-1] - masks[:, -1:]
    targets = values - empty_value - masks[:, -1] * difference
    root = jnp.sqrt(weights)
    solution = jnp.linalg.lstsq(regressors * root[:, None], targets * root, rcond=_rcond(m, n - 1, values.dtype))[0]
    return jnp.concatenate([solution, (difference - jnp.sum(solution))[None]])


def kernel_shap(
    value: ValueFn,
    n_features: int,
    *,
    n_samples: int | None = None,
    key: PRNGKeyArray,
    batch_size: int | None = None,
) -> Float[Array, " n"]:
    """KernelSHAP (Lundberg & Lee 2017) of a value function over feature masks, as shap's `KernelExplainer` with
    `l1_reg=False` computes it for a model whose features are present or replaced by a single background row.

    Draws the coalitions and weights (`kernel_shap_samples`), evaluates `value` on them and on the full and empty
    masks, and fits the attributions (`kernel_shap_fit`). Exact Shapley values when `n_samples >= 2**n - 2`. Usable
    under `jax.jit` and `jax.vmap` with `value`, `n_features`, `n_samples` and `batch_size` static.

    shap's own default, `l1_reg="num_features(10)"`, first selects 10 features by LARS and gives the others zero,
    whatever the budget (with more than 10 features, even when every coalition is enumerated); there is no such
    selection here, which is shap with `l1_reg=False`. The value function stands for shap's model evaluated with a
    single background row: a mask's absent features take their background value.

    **Arguments:**

    - `value`: `value(masks [k, n_features]) -> values [k]`, masks 0/1 float32 (1: present).
    - `n_features`: the number of features.
    - `n_samples`: the number of coalitions evaluated besides the empty and full ones; `None` for shap's `"auto"`,
      `2 * n_features + 2048`.
    - `key`: a `jax.random` key for the coalitions sampled.
    - `batch_size`: masks per call of `value` (`jax.lax.map` over chunks); `None` for one call on all of them.

    **Returns:** the attributions `[n_features]`, summing to `value(ones) - value(zeros)`.
    """
    _check_n_features(n_features, "kernel_shap")
    if n_samples is None:
        n_samples = 2 * n_features + 2048
    masks, weights = kernel_shap_samples(n_features, n_samples, key)
    ends = jnp.stack([jnp.ones(n_features), jnp.zeros(n_features)])
    values = evaluate(value, jnp.concatenate([masks, ends]), batch_size=batch_size, where="kernel_shap")
    return kernel_shap_fit(masks, values[:-2], weights, values[-2], values[-1])


def exact_shapley(value: ValueFn, n_features: int, *, batch_size: int | None = None) -> Float[Array, " n"]:
    """Exact Shapley values of a value function over feature masks, by evaluating all `2**n` coalitions.

    `phi_i = sum over coalitions S without i of |S|! (n - |S| - 1)! / n! * (value(S + i) - value(S))`. For tests and
    small problems (`n_features <= 20`).

    **Arguments:**

    - `value`: `value(masks [k, n_features]) -> values [k]`, masks 0/1 float32 (1: present).
    - `n_features`: the number of features, from 1 to 20.
    - `batch_size`: masks per call of `value`; `None` for one call on all `2**n`.

    **Returns:** the Shapley values `[n_features]`.
    """
    _check_n_features(n_features, "exact_shapley")
    if n_features > MAX_EXACT_FEATURES:
        raise ValueError(
            f"exact_shapley: {n_features} features make 2**{n_features} coalitions; at most {MAX_EXACT_FEATURES} "
            "features are enumerated (use kernel_shap)"
        )
    n = n_features
    index = np.arange(2**n)
    masks = ((index[:, None] >> np.arange(n)) & 1).astype(np.float32)
    values = evaluate(value, masks, batch_size=batch_size, where="exact_shapley")
    return _shapley_sum(values, n)


@functools.partial(jax.jit, static_argnums=1)
def _shapley_sum(values, n: int):
    """The Shapley values from the values of all `2**n` coalitions (coalition `k` holds the features of `k`'s bits)."""
    index = np.arange(2**n)
    sizes = ((index[:, None] >> np.arange(n)) & 1).sum(axis=1)
    # the coalitions without feature i (rows), and the same with it
    without = np.stack([index[(index >> i) & 1 == 0] for i in range(n)])
    with_ = without | (1 << np.arange(n))[:, None]
    size_weight = np.array([1.0 / (n * math.comb(n - 1, s)) for s in range(n)])
    weights = jnp.asarray(size_weight[sizes[without]], values.dtype)
    return jnp.sum(weights * (values[with_] - values[without]), axis=1)
