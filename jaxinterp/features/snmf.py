"""Semi-nonnegative matrix factorisation of activations (SNMF, P5): `X ~ G F^T` with `G >= 0`, the features `F`
sparse by winner-take-all, fitted by alternating least squares for `F` and a multiplicative update for `G`, in one
compiled loop with early stopping. See `docs/snmf.md`."""

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .. import sharding
from .clustering import kmeans

INITS = ("random", "kmeans", "svd")


class SNMF(NamedTuple):
    """What `snmf` returns: the factors of `X [n, d] ~ G @ F.T` with the lowest loss seen.

    - `F`: `[d, k]`, the features (one column per feature; mixed signs, sparse: each column keeps its largest
      entries by magnitude).
    - `G`: `[n, k]`, the non-negative coefficients of each row of `X` (each column of unit norm).
    - `losses`: `[max_iterations]`, the loss `||X - G F^T||_F^2` after each iteration (NaN after the last).
    - `iterations`: how many iterations ran.
    - `best_iteration`: the iteration whose factors are returned.
    """

    F: Float[Array, "d k"]
    G: Float[Array, "n k"]
    losses: Float[Array, " iterations"]
    iterations: Int[Array, ""]
    best_iteration: Int[Array, ""]

    def reconstruct(self) -> Float[Array, "n d"]:
        """`G @ F.T`, the factorisation's approximation of `X`."""
        return self.G @ self.F.T

    def trajectory(self) -> np.ndarray:
        """The losses of the iterations that ran, as a numpy array."""
        return np.asarray(self.losses)[: int(self.iterations)]


def kept_per_feature(d: int, sparsity: float) -> int:
    """How many of a feature's `d` entries winner-take-all keeps: `max(1, ceil(sparsity * d))`."""
    return max(1, math.ceil(sparsity * d))


def winner_take_all(F: Float[ArrayLike, "d k"], keep: int) -> Float[Array, "d k"]:
    """Each column of `F` with all but its `keep` largest entries by magnitude set to zero (exactly `keep` survive;
    the official code keeps every entry tied with the `keep`-th, which differs only on exact ties)."""
    F = jnp.asarray(F)
    values, rows = lax.top_k(jnp.abs(F.T), keep)
    del values
    columns = jnp.broadcast_to(jnp.arange(F.shape[1])[:, None], rows.shape)
    return jnp.zeros_like(F).at[rows, columns].set(F[rows, columns])


def _positive(x):
    return 0.5 * (jnp.abs(x) + x)


def _negative(x):
    return 0.5 * (jnp.abs(x) - x)


def _lower_inverse(L):
    """The inverse of a lower-triangular `L` by block recursion (`[[A, 0], [C, D]]^-1 = [[A^-1, 0], [-D^-1 C A^-1,
    D^-1]]`): matrix products only, which XLA runs far faster on a CPU than its triangular solve."""
    n = L.shape[0]
    if n == 1:
        return 1.0 / L
    h = n // 2
    A, C, D = L[:h, :h], L[h:, :h], L[h:, h:]
    A_inv, D_inv = _lower_inverse(A), _lower_inverse(D)
    return jnp.block([[A_inv, jnp.zeros((h, n - h), L.dtype)], [-D_inv @ C @ A_inv, D_inv]])


def _iteration(xt, G, keep, reg, eps):
    """One iteration on `xt = X^T` `[d, n]`: F by least squares, winner-take-all, rescaling, the G update. Returns
    the new `(F, G)`, `P = X F` and `Q = F^T F`."""
    k = G.shape[1]
    gram = G.T @ G + reg * jnp.eye(k, dtype=G.dtype)
    L_inv = _lower_inverse(jnp.linalg.cholesky(gram))  # (G^T G + reg I)^-1 = L^-T L^-1
    F = ((xt @ G) @ L_inv.T) @ L_inv  # X^T G (G^T G + reg I)^-1
    values, rows = lax.top_k(jnp.abs(F.T), keep)  # [k, keep]
    del values
    weights = jnp.take_along_axis(F.T, rows, 1)  # the surviving entries
    norms = jnp.maximum(jnp.linalg.norm(G, axis=0), 1e-8)
    G = G / norms
    weights = weights * norms[:, None]
    columns = jnp.broadcast_to(jnp.arange(k)[:, None], rows.shape)
    F = jnp.zeros_like(F).at[rows, columns].set(weights)

    # P = X F from the surviving entries only: per kept slot, one row of X^T for each feature, weighted
    def gather(i, total):
        return total + weights[:, i, None] * xt.at[rows[:, i]].get(mode="promise_in_bounds")

    P = lax.fori_loop(0, keep, gather, jnp.zeros((k, xt.shape[1]), xt.dtype)).T
    Q = F.T @ F
    G = G * jnp.sqrt((_positive(P) + G @ _negative(Q)) / (_negative(P) + G @ _positive(Q) + eps))
    return F, G, P, Q


@functools.partial(jax.jit, static_argnames=("keep", "max_iterations"))
def _fit(xt, squared_norm, G, keep, max_iterations, patience, tolerance, reg, eps):
    d, k = xt.shape[0], G.shape[1]
    F0 = jnp.zeros((d, k), xt.dtype)

    def condition(state):
        it, *_, stale, _ = state
        return (it < max_iterations) & (stale < patience)

    def body(state):
        it, _, G, best, best_F, best_G, best_it, stale, losses = state
        F, G, P, Q = _iteration(xt, G, keep, reg, eps)
        loss = squared_norm - 2.0 * jnp.sum(G * P) + jnp.sum(Q * (G.T @ G))
        improved = loss < best - tolerance
        best_F = jnp.where(improved, F, best_F)
        best_G = jnp.where(improved, G, best_G)
        return (
            it + 1,
            F,
            G,
            jnp.where(improved, loss, best),
            best_F,
            best_G,
            jnp.where(improved, it, best_it),
            jnp.where(improved, 0, stale + 1),
            losses.at[it].set(loss),
        )

    losses = jnp.full((max_iterations,), jnp.nan, xt.dtype)
    state = (jnp.int32(0), F0, G, jnp.asarray(jnp.inf, xt.dtype), F0, G, jnp.int32(-1), jnp.int32(0), losses)
    it, _, _, _, best_F, best_G, best_it, _, losses = lax.while_loop(condition, body, state)
    return SNMF(best_F, best_G, losses, it, best_it)


def _matrix(x, where):
    x = jnp.asarray(x)
    if x.ndim != 2 or min(x.shape) == 0:
        raise ValueError(f"{where}: the activations must be a non-empty [n, d] array; got shape {x.shape}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{where}: the activations contain NaN or infinite values")
    return x.astype(jnp.result_type(x.dtype, jnp.float32))


def snmf_init(
    x: Float[ArrayLike, "n d"], k: int, init: str = "random", *, key: PRNGKeyArray, eps: float = 1e-6
) -> tuple[Float[Array, "d k"], Float[Array, "n k"]]:
    """Initial factors `(F0, G0)` for `snmf` (as the official code builds them; only `G0` is used, since the first
    iteration solves for `F`):

    - `"random"`: `G0` uniform on `[0, 1)` (at least `eps`), `F0` standard normal;
    - `"kmeans"`: `F0` the centroids of `jaxinterp.features.kmeans` on the rows of `x`, `G0` the one-hot cluster
      memberships (zeros raised to `eps`);
    - `"svd"`: with `X^T = U S V^T` truncated to `k`, `F0 = U sqrt(S)` and `G0 = max(V sqrt(S), eps)` (Ding et al.
      2010); the signs of singular vectors are arbitrary, so each pair is signed to make `V`'s column sum
      non-negative.
    """
    x = _matrix(x, "snmf_init")
    n, d = x.shape
    if not 1 <= k <= min(n, d) and init == "svd":
        raise ValueError(f"snmf_init: the SVD initialisation needs 1 <= k <= min(n, d) = {min(n, d)}; got {k}")
    if not 1 <= k <= n:
        raise ValueError(f"snmf_init: k must be between 1 and the number of rows ({n}); got {k}")
    if init == "random":
        key_g, key_f = jax.random.split(key)
        G = jnp.maximum(jax.random.uniform(key_g, (n, k), x.dtype), eps)
        return jax.random.normal(key_f, (d, k), x.dtype), G
    if init == "kmeans":
        clusters = kmeans(x, k, key=key)
        return clusters.centroids.T, jnp.maximum(jax.nn.one_hot(clusters.labels, k, dtype=x.dtype), eps)
    if init == "svd":
        U, S, Vh = jnp.linalg.svd(x.T, full_matrices=False)
        U, S, V = U[:, :k], S[:k], Vh[:k].T
        sign = jnp.where(V.sum(0) < 0, -1.0, 1.0).astype(x.dtype)
        U, V = U * sign, V * sign
        root = jnp.sqrt(S)
        return U * root, jnp.maximum(V * root, eps)
    raise ValueError(f"snmf_init: unknown init {init!r}; use one of {INITS}")


def snmf(
    x: Float[ArrayLike, "n d"],
    k: int,
    *,
    key: PRNGKeyArray | None = None,
    init: str | Float[ArrayLike, "n k"] = "random",
    sparsity: float = 0.01,
    max_iterations: int = 500,
    patience: int = 100,
    tolerance: float = 1e-4,
    reg: float = 1e-6,
    eps: float = 1e-6,
    mesh: Mesh | None = None,
) -> SNMF:
    """Semi-NMF of activations `x` (rows are examples, e.g. tokens' MLP activations): `x ~ G @ F.T` with
    `G >= 0`, by the official algorithm of P5. Each iteration:

    1. `F = X^T G (G^T G + reg I)^-1` (least squares given `G`);
    2. winner-take-all: each column of `F` keeps its `ceil(sparsity * d)` entries largest in magnitude;
    3. each column of `G` is scaled to unit norm and `F`'s column multiplied by the same norm;
    4. `G <- G * sqrt((P+ + G Q-) / (P- + G Q+ + eps))` with `P = X F`, `Q = F^T F` and `A+ = (|A| + A) / 2`,
       `A- = (|A| - A) / 2` (Ding et al. 2010);
    5. the loss `||X - G F^T||_F^2`; it counts as an improvement when it falls below the best by more than
       `tolerance` (absolute, as in the official code); after `patience` iterations without one, the loop stops.

    **Arguments:**

    - `x`: `[n, d]`, finite.
    - `k`: the number of features (`1 <= k <= n`).
    - `key`: PRNG key for the `"random"` and `"kmeans"` initialisations.
    - `init`: `"random"`, `"kmeans"`, `"svd"` (see `snmf_init`), or an explicit non-negative `G0` `[n, k]`.
    - `sparsity`: the fraction of each feature's `d` entries kept (the official default 1%).
    - `max_iterations`, `patience`, `tolerance`: the stopping rule.
    - `reg`: the ridge added to `G^T G`; `eps`: the guard in the multiplicative update's denominator.
    - `mesh`: a one-dimensional `jax.sharding.Mesh` to fit data-parallel: the rows of `x` and of `G` are split
      across its devices, `F` is replicated, and XLA reduces `X^T G` and `G^T G` across them (`docs/sharding.md`).

    **Returns:** an `SNMF` holding the factors of the best iteration and the loss trajectory.
    """
    x = _matrix(x, "snmf")
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"snmf: k must be between 1 and the number of rows ({n}); got {k}")
    if not 0 < sparsity <= 1:
        raise ValueError(f"snmf: sparsity must lie in (0, 1]; got {sparsity}")
    if max_iterations < 1 or patience < 1:
        raise ValueError(f"snmf: max_iterations and patience must be positive; got {max_iterations}, {patience}")
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"snmf: unknown init {init!r}; use one of {INITS} or pass G0")
        if key is None and init != "svd":
            raise ValueError(f"snmf: the {init!r} initialisation needs a key")
        _, G0 = snmf_init(x, k, init, key=jax.random.key(0) if key is None else key, eps=eps)
    else:
        G0 = jnp.asarray(init, x.dtype)
        if G0.shape != (n, k):
            raise ValueError(f"snmf: G0 must have shape (n, k) = {(n, k)}; got {G0.shape}")
        if not bool(jnp.all(G0 >= 0)) or not bool(jnp.all(jnp.isfinite(G0))):
            raise ValueError("snmf: G0 must be finite and non-negative")
    squared_norm = jnp.asarray(np.sum(np.square(np.asarray(x, np.float64))), x.dtype)
    xt = x.T
    if mesh is not None:
        xt, G0 = sharding.shard_along(xt, mesh, dim=1), sharding.shard_along(G0, mesh, dim=0)
    return _fit(
        xt,
        squared_norm,
        G0,
        kept_per_feature(d, sparsity),
        max_iterations,
        jnp.asarray(patience, jnp.int32),
        jnp.asarray(tolerance, x.dtype),
        jnp.asarray(reg, x.dtype),
        jnp.asarray(eps, x.dtype),
    )


class HierarchicalSNMF(NamedTuple):
    """What `hierarchical_snmf` returns.

    - `levels`: one `SNMF` per rank, each fitted greedily: the first on `x`, level `l` on the features of level
      `l - 1` (`F_{l-1}^T`, one row per feature).
    - `codes`: `(G_1, ..., G_L)`, `G_1` `[n, r_1]`, `G_l` `[r_{l-1}, r_l]`, after the joint fine-tuning (equal to
      the levels' `G` without it).
    - `features`: `F_L` `[d, r_L]`, the coarsest features, after fine-tuning.
    - `fine_tune_losses`: the mean squared error of `x - G_1 ... G_L F_L^T` per fine-tuning step (empty without).
    """

    levels: tuple[SNMF, ...]
    codes: tuple[Float[Array, "..."], ...]
    features: Float[Array, "d r"]
    fine_tune_losses: Float[Array, " steps"]

    def reconstruct(self) -> Float[Array, "n d"]:
        """`G_1 @ ... @ G_L @ F_L.T`."""
        return functools.reduce(jnp.matmul, self.codes) @ self.features.T

    def parents(self, level: int) -> Int[Array, " r"]:
        """For each feature of `level - 1` (0-based `level >= 1`), the feature of `level` it loads on most (the
        argmax of its row of `G_level`)."""
        if not 1 <= level < len(self.levels):
            raise ValueError(f"parents: level must lie in [1, {len(self.levels) - 1}]; got {level}")
        return jnp.argmax(self.levels[level].G, axis=1)


def hierarchical_snmf(
    x: Float[ArrayLike, "n d"],
    ranks: tuple[int, ...] | list[int],
    *,
    key: PRNGKeyArray,
    fine_tune_steps: int = 0,
    learning_rate: float = 1e-3,
    **snmf_options,
) -> HierarchicalSNMF:
    """The hierarchical variant of P5: SNMF of `x` with rank `r_1`, then SNMF of its features (`F_1^T`, `r_1`
    rows) with rank `r_2`, and so on, so that `x ~ G_1 G_2 ... G_L F_L^T`; then, optionally, the product fitted
    jointly by Adam on the mean squared error for `fine_tune_steps` steps (as the official code does: the codes are
    not kept non-negative during fine-tuning).

    **Arguments:** `x` `[n, d]`; `ranks`, decreasing is usual (`r_l <= r_{l-1}`); `key`; the fine-tuning's steps
    and learning rate; `snmf_options`, passed to every level's `snmf` (`init`, `sparsity`, `max_iterations`, ...).

    **Returns:** a `HierarchicalSNMF`.
    """
    x = _matrix(x, "hierarchical_snmf")
    ranks = tuple(int(r) for r in ranks)
    if not ranks:
        raise ValueError("hierarchical_snmf: ranks must name at least one rank")
    levels = []
    data = x
    for level, rank in enumerate(ranks):
        if not 1 <= rank <= data.shape[0]:
            raise ValueError(f"hierarchical_snmf: rank {rank} at level {level} exceeds its {data.shape[0]} rows")
        fitted = snmf(data, rank, key=jax.random.fold_in(key, level), **snmf_options)
        levels.append(fitted)
        data = fitted.F.T
    codes = tuple(level.G for level in levels)
    features = levels[-1].F
    losses = jnp.zeros((0,), x.dtype)
    if fine_tune_steps > 0:
        codes, features, losses = _fine_tune(x, codes, features, fine_tune_steps, learning_rate)
    return HierarchicalSNMF(tuple(levels), tuple(codes), features, losses)


@functools.partial(jax.jit, static_argnames=("steps",))
def _fine_tune(x, codes, features, steps, learning_rate):
    optimiser = optax.adam(learning_rate)
    params = (tuple(codes), features)

    def loss(params):
        codes, features = params
        return jnp.mean((functools.reduce(jnp.matmul, codes) @ features.T - x) ** 2)

    def step(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params)
        updates, state = optimiser.update(grads, state)
        return (optax.apply_updates(params, updates), state), value

    (params, _), losses = lax.scan(step, (params, optimiser.init(params)), None, length=steps)
    return params[0], params[1], losses
