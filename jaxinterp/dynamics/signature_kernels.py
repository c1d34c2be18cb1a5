"""The maximum mean discrepancy between two sets of paths under a truncated signature kernel.

Two kernels on paths, both through the truncated signature `S(X) = (1, S_1(X), ..., S_N(X))` of `signatures`:

```
linear:  k(X, Y) = 1 + sum_{k=1}^N w_k <S_k(X), S_k(Y)>                  (the truncated signature kernel)
RBF:     k(X, Y) = exp(-sum_{k=1}^N w_k |S_k(X) - S_k(Y)|^2 / (2 sigma^2))
```

with per-level weights `w_k` (1 by default; scaling every path by `lambda` is the same as `w_k = lambda^(2k)`). For
samples `x_1..x_n` and `y_1..y_m`,

```
MMD^2_biased   = mean_{i,j} k(x_i, x_j) + mean_{i,j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j)
MMD^2_unbiased = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i,j} k(x_i, y_j)
```

For the linear kernel these are computed in feature space (`O((n + m) size)`, no Gram matrix): the biased one is
`|mean_i phi(x_i) - mean_j phi(y_j)|^2` with `phi = (sqrt(w_k) S_k)_k`, whose square root is the signature loss of
P31 (its depth 6, basepoint and time channel). The formulas are in `docs/signatures.md`.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Scalar

from .signatures import _channels_of, augment_path, signature, signature_size

_KERNELS = ("linear", "rbf")


def _level_scales(level_weights, channels: int, depth: int, dtype) -> Array:
    """`sqrt(w_k)` repeated over the `d^k` coordinates of level `k`: the feature map's weights."""
    if level_weights is None:
        return jnp.ones((signature_size(channels, depth),), dtype=dtype)
    weights = jnp.asarray(level_weights, dtype=dtype)
    if weights.shape != (depth,):
        raise ValueError(f"level_weights must have one weight per level 1..{depth}, got shape {weights.shape}")
    return jnp.concatenate([jnp.full((channels**k,), jnp.sqrt(weights[k - 1])) for k in range(1, depth + 1)])


def _check_kernel(kernel: str) -> None:
    if kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {', '.join(_KERNELS)}")


def _features(signatures: Array, depth: int, level_weights) -> Array:
    channels = _channels_of(signatures.shape[-1], depth, "signature_kernels")
    return signatures * _level_scales(level_weights, channels, depth, signatures.dtype)


def _squared_distances(a: Array, b: Array) -> Array:
    return jnp.maximum(jnp.sum(a**2, -1)[:, None] + jnp.sum(b**2, -1)[None, :] - 2 * a @ b.T, 0.0)


def median_bandwidth(features: Float[ArrayLike, "n size"]) -> Scalar:
    """The median heuristic for the RBF bandwidth: the median distance between distinct rows, gradients stopped.

    **Arguments:**

    - `features`: `[n, size]`, the (weighted) signatures of the pooled samples.

    **Returns:** `sigma`, a scalar (1 where all rows coincide).
    """
    features = jax.lax.stop_gradient(jnp.asarray(features))
    n = features.shape[0]
    distances = jnp.sqrt(_squared_distances(features, features))[jnp.triu_indices(n, k=1)]
    median = jnp.median(distances)
    return jnp.where(median > 0, median, 1.0)


def signature_kernel_matrix(
    signatures_x: Float[ArrayLike, "n size"],
    signatures_y: Float[ArrayLike, "m size"],
    depth: int,
    *,
    kernel: str = "linear",
    level_weights: Float[ArrayLike, " levels"] | Sequence[float] | None = None,
    bandwidth: float | Float[ArrayLike, ""] = 1.0,
) -> Float[Array, "n m"]:
    """The Gram matrix `k(x_i, y_j)` of a truncated signature kernel, from flattened signatures.

    **Arguments:**

    - `signatures_x`, `signatures_y`: `[n, size]` and `[m, size]`, from `jaxinterp.dynamics.signature` at `depth`.
    - `depth`: their truncation depth.
    - `kernel`: `"linear"` (`1 + sum_k w_k <S_k(x), S_k(y)>`) or `"rbf"` (`exp(-|phi(x) - phi(y)|^2 / (2 sigma^2))`).
    - `level_weights`: `w_1..w_N` (`None`: all 1).
    - `bandwidth`: `sigma` of the RBF kernel.

    **Returns:** `[n, m]`.
    """
    _check_kernel(kernel)
    fx = _features(jnp.asarray(signatures_x), depth, level_weights)
    fy = _features(jnp.asarray(signatures_y), depth, level_weights)
    if kernel == "linear":
        return 1.0 + fx @ fy.T
    return jnp.exp(-_squared_distances(fx, fy) / (2 * jnp.asarray(bandwidth, dtype=fx.dtype) ** 2))


def mmd_squared(
    gram_xx: Float[ArrayLike, "n n"],
    gram_yy: Float[ArrayLike, "m m"],
    gram_xy: Float[ArrayLike, "n m"],
    *,
    unbiased: bool = True,
) -> Scalar:
    """The squared maximum mean discrepancy from the three Gram matrices of a kernel.

    **Arguments:**

    - `gram_xx`, `gram_yy`, `gram_xy`: `k(x_i, x_j)`, `k(y_i, y_j)`, `k(x_i, y_j)`.
    - `unbiased`: leave out the diagonals of `gram_xx` and `gram_yy` (the U-statistic; needs `n, m >= 2`; it can be
        negative) or keep them (the biased V-statistic, never negative for a positive definite kernel).

    **Returns:** the scalar estimate.
    """
    gram_xx, gram_yy, gram_xy = (jnp.asarray(g) for g in (gram_xx, gram_yy, gram_xy))
    n, m = gram_xx.shape[0], gram_yy.shape[0]
    if not unbiased:
        return gram_xx.mean() + gram_yy.mean() - 2 * gram_xy.mean()
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples in each set, got {n} and {m}")
    within_x = (gram_xx.sum() - jnp.trace(gram_xx)) / (n * (n - 1))
    within_y = (gram_yy.sum() - jnp.trace(gram_yy)) / (m * (m - 1))
    return within_x + within_y - 2 * gram_xy.mean()


def _linear_mmd_squared(fx: Array, fy: Array, unbiased: bool) -> Scalar:
    """MMD^2 of the linear kernel `1 + <phi, phi>` in feature space; the constant 1 cancels."""
    n, m = fx.shape[0], fy.shape[0]
    sum_x, sum_y = fx.sum(0), fy.sum(0)
    if not unbiased:
        return jnp.sum((sum_x / n - sum_y / m) ** 2)
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples in each set, got {n} and {m}")
    within_x = (jnp.sum(sum_x**2) - jnp.sum(fx**2)) / (n * (n - 1))
    within_y = (jnp.sum(sum_y**2) - jnp.sum(fy**2)) / (m * (m - 1))
    return within_x + within_y - 2 * jnp.dot(sum_x / n, sum_y / m)


def signature_mmd_squared(
    paths_x: Float[ArrayLike, "n length_x channels"],
    paths_y: Float[ArrayLike, "m length_y channels"],
    depth: int,
    *,
    unbiased: bool = True,
    kernel: str = "linear",
    level_weights: Float[ArrayLike, " levels"] | Sequence[float] | None = None,
    bandwidth: float | Float[ArrayLike, ""] | None = None,
    add_time: bool = False,
    basepoint: bool | Float[ArrayLike, " channels"] = False,
) -> Scalar:
    """The squared MMD between two sets of paths under a truncated signature kernel.

    **Arguments:**

    - `paths_x`, `paths_y`: `[n, length_x, channels]` and `[m, length_y, channels]` (the lengths may differ).
    - `depth`: the truncation depth `N` (P31 uses 6).
    - `unbiased`: the U-statistic (`True`) or the biased V-statistic (`False`), as `mmd_squared`.
    - `kernel`: `"linear"` or `"rbf"`, as `signature_kernel_matrix`.
    - `level_weights`: `w_1..w_N` (`None`: all 1).
    - `bandwidth`: `sigma` of the RBF kernel; `None` takes the median heuristic on the pooled weighted signatures
        (`median_bandwidth`). Unused by the linear kernel.
    - `add_time`, `basepoint`: as `jaxinterp.dynamics.augment_path`, applied to both sets (time from 0 to 1 over
        each set's length). Signatures do not see where a path starts; `basepoint=True` makes them see it.

    **Returns:** the scalar estimate, differentiable in both sets of paths.
    """
    _check_kernel(kernel)
    sx = signature(augment_path(paths_x, add_time=add_time, basepoint=basepoint), depth)
    sy = signature(augment_path(paths_y, add_time=add_time, basepoint=basepoint), depth)
    if kernel == "linear":
        return _linear_mmd_squared(_features(sx, depth, level_weights), _features(sy, depth, level_weights), unbiased)
    if bandwidth is None:
        pooled = _features(jnp.concatenate([sx, sy]), depth, level_weights)
        bandwidth = median_bandwidth(pooled)
    options = dict(kernel=kernel, level_weights=level_weights, bandwidth=bandwidth)
    return mmd_squared(
        signature_kernel_matrix(sx, sx, depth, **options),
        signature_kernel_matrix(sy, sy, depth, **options),
        signature_kernel_matrix(sx, sy, depth, **options),
        unbiased=unbiased,
    )
