"""Centred kernel alignment (Kornblith et al. 2019): linear and RBF CKA, the biased HSIC and the unbiased HSIC
estimator of Song et al. (2012), and minibatch CKA (Nguyen et al. 2021). See `docs/compare.md#cka`."""

from collections.abc import Iterable

import numpy as np
from jaxtyping import ArrayLike, Float

from ._checks import as_matrix, check_finite, same_rows


def _gram(k, name: str, where: str, min_size: int) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{where}: {name} must be a square Gram matrix [n, n], got shape {k.shape}")
    if k.shape[0] < min_size:
        raise ValueError(f"{where}: {name} is over {k.shape[0]} examples; at least {min_size} are needed")
    check_finite(k, name, where)
    return k


def _pair_of_grams(k, l, where: str, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    k = _gram(k, "k", where, min_size)
    l = _gram(l, "l", where, min_size)
    if k.shape != l.shape:
        raise ValueError(f"{where}: k and l must be over the same examples, got shapes {k.shape} and {l.shape}")
    return k, l


def hsic(k: Float[ArrayLike, "nk mk"], l: Float[ArrayLike, "nl ml"]) -> float:
    """The biased HSIC estimate `tr(K H L H) / (n - 1)^2` (`H` the centring matrix) of two Gram matrices over the
    same `n` examples. Returns a float."""
    k, l = _pair_of_grams(k, l, "hsic", 2)
    n = k.shape[0]
    kc = k - k.mean(axis=0) - k.mean(axis=1)[:, None] + k.mean()
    return float(np.sum(kc * l) / (n - 1) ** 2)


def hsic_unbiased(k: Float[ArrayLike, "nk mk"], l: Float[ArrayLike, "nl ml"]) -> float:
    """The unbiased HSIC estimator of Song et al. (2012) for two Gram matrices over the same `n >= 4` examples.

    With `K~`, `L~` the matrices with their diagonals set to zero,
    `HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n - 1)(n - 2)) - 2 / (n - 2) 1^T K~ L~ 1] / (n (n - 3))`,
    the U-statistic of `E[k_ij l_ij] + E[k_ij] E[l_qr] - 2 E[k_ij l_iq]` over distinct indices. Returns a float.
    """
    k, l = _pair_of_grams(k, l, "hsic_unbiased", 4)
    n = k.shape[0]
    k = k - np.diag(np.diag(k))
    l = l - np.diag(np.diag(l))
    trace = np.sum(k * l)
    sums = k.sum() * l.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * float(k.sum(axis=0) @ l.sum(axis=1))
    return float((trace + sums - cross) / (n * (n - 3)))


def cka(k: Float[ArrayLike, "nk mk"], l: Float[ArrayLike, "nl ml"], *, unbiased: bool = False) -> float:
    """CKA of two Gram matrices over the same examples: `HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`, with the
    biased estimate or (`unbiased=True`) the unbiased one. Returns a float in `[0, 1]` for the biased estimate (the
    unbiased one can stray slightly outside); 0 if either representation is constant."""
    estimate = hsic_unbiased if unbiased else hsic
    kl, kk, ll = estimate(k, l), estimate(k, k), estimate(l, l)
    return _ratio(kl, kk, ll)


def _ratio(kl: float, kk: float, ll: float) -> float:
    denominator = np.sqrt(max(kk, 0.0) * max(ll, 0.0))
    return float(kl / denominator) if denominator > 0 else 0.0


def _representations(x, y, where: str, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    x = as_matrix(x, "x", where, min_rows=min_rows)
    y = as_matrix(y, "y", where, min_rows=min_rows)
    same_rows(x, y, ("x", "y"), where)
    return x, y


def linear_cka(x: Float[ArrayLike, "nx dx"], y: Float[ArrayLike, "ny dy"], *, unbiased: bool = False) -> float:
    """Linear CKA of two representations of the same examples (`[examples, features]` each; widths may differ).

    Biased: `||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)` on column-centred `X`, `Y`, computed in feature space
    (cost linear in the number of examples). Unbiased: `cka` of the Gram matrices `X X^T`, `Y Y^T` with
    `hsic_unbiased`. Returns a float.
    """
    x, y = _representations(x, y, "linear_cka", 4 if unbiased else 2)
    if unbiased:
        return cka(x @ x.T, y @ y.T, unbiased=True)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    return _ratio(
        float(np.sum((y.T @ x) ** 2)), float(np.sum((x.T @ x) ** 2)), float(np.sum((y.T @ y) ** 2))
    )  # the (n - 1)^2 of HSIC cancels


def rbf_gram(x: Float[ArrayLike, "n d"], *, sigma: float | None = None, sigma_fraction: float = 0.5) -> np.ndarray:
    """The Gaussian-kernel Gram matrix `exp(-|x_i - x_j|^2 / (2 sigma^2))` of `[examples, features]`.

    `sigma` defaults to `sigma_fraction` times the median distance between distinct examples (Kornblith et al.
    2019). Returns `[n, n]`.
    """
    x = as_matrix(x, "x", "rbf_gram", min_rows=2)
    squares = np.sum(x * x, axis=1)
    distances = np.maximum(squares[:, None] + squares[None, :] - 2.0 * x @ x.T, 0.0)
    if sigma is None:
        median = float(np.sqrt(np.median(distances[np.triu_indices(x.shape[0], 1)])))
        sigma = sigma_fraction * median if median > 0 else 1.0
    if not sigma > 0:
        raise ValueError(f"rbf_gram: sigma must be positive, got {sigma!r}")
    return np.exp(-distances / (2.0 * sigma**2))


def rbf_cka(
    x: Float[ArrayLike, "nx dx"],
    y: Float[ArrayLike, "ny dy"],
    *,
    sigma_fraction: float = 0.5,
    unbiased: bool = False,
) -> float:
    """RBF CKA: `cka` of `rbf_gram(x)` and `rbf_gram(y)`, each with its own median-distance bandwidth scaled by
    `sigma_fraction` (so the value is invariant to isotropic scaling of either representation). Returns a float."""
    x, y = _representations(x, y, "rbf_cka", 4 if unbiased else 2)
    return cka(
        rbf_gram(x, sigma_fraction=sigma_fraction), rbf_gram(y, sigma_fraction=sigma_fraction), unbiased=unbiased
    )


def minibatch_cka(batches: Iterable[tuple[ArrayLike, ArrayLike]]) -> float:
    """Linear CKA accumulated over minibatches (Nguyen et al. 2021): the means over batches of the unbiased
    `HSIC_1(K, L)`, `HSIC_1(K, K)` and `HSIC_1(L, L)` of each batch's linear Gram matrices, combined as
    `mean(KL) / sqrt(mean(KK) mean(LL))`. Memory depends on the batch size only; the estimate does not depend on
    it in expectation.

    **Arguments:**

    - `batches`: an iterable of `(x, y)` pairs, two representations `[batch, features]` of the same examples
      (at least 4 per batch).

    **Returns:** a float.
    """
    totals = np.zeros(3)
    count = 0
    for index, (x, y) in enumerate(batches):
        x, y = _representations(x, y, f"minibatch_cka (batch {index})", 4)
        k, l = x @ x.T, y @ y.T
        totals += (hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l))
        count += 1
    if count == 0:
        raise ValueError("minibatch_cka: batches holds no batches")
    return _ratio(*(totals / count))
