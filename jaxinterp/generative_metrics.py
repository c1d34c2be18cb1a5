"""Comparing generated samples with data: Frechet and kernel distances between feature sets, and nearest-neighbour
distances to the training set (a memorisation check).

The distances are computed on whatever features the caller supplies. The experiments use the penultimate layer of
a small classifier trained on the same data set, so the numbers are "FID/KID in that classifier's feature space"
and are not comparable with Inception-feature FID/KID reported elsewhere.
"""

import numpy as np
from jaxtyping import ArrayLike, Float


def frechet_distance(features_a: Float[ArrayLike, "n d"], features_b: Float[ArrayLike, "m d"]) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (the formula of FID).

    `||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2})`, computed in float64 with symmetric
    eigendecompositions.

    **Arguments:**

    - `features_a`, `features_b`: feature matrices, one row per sample.

    **Returns:** the distance (non-negative).
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    mean_term = float(np.sum(np.square(a.mean(0) - b.mean(0))))
    cov_a = np.cov(a, rowvar=False)
    cov_b = np.cov(b, rowvar=False)
    eig_a, vec_a = np.linalg.eigh(cov_a)
    sqrt_a = (vec_a * np.sqrt(np.clip(eig_a, 0, None))) @ vec_a.T
    cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_term = np.trace(cov_a) + np.trace(cov_b) - 2 * np.sum(np.sqrt(np.clip(cross, 0, None)))
    return max(mean_term + float(trace_term), 0.0)


def kernel_distance(
    features_a: Float[ArrayLike, "n d"],
    features_b: Float[ArrayLike, "m d"],
    *,
    num_subsets: int = 50,
    subset_size: int = 500,
    seed: int = 0,
) -> tuple[float, float]:
    """The kernel distance of KID: the unbiased squared MMD with the cubic kernel `k(x, y) = (x.y / d + 1)^3`.

    Averaged over random subsets (drawn without replacement within a subset) as in Binkowski et al. (2018).

    **Arguments:**

    - `features_a`, `features_b`: feature matrices, one row per sample.
    - `num_subsets`: the number of subset pairs.
    - `subset_size`: the subset size (capped by the smaller set).
    - `seed`: seed for the subset draws.

    **Returns:** the mean and the standard deviation of the estimate over the subsets.
    """
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    m = min(subset_size, a.shape[0], b.shape[0])
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(num_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        k_xx = (x @ x.T / d + 1) ** 3
        k_yy = (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        estimates.append(within - 2 * k_xy.mean())
    return float(np.mean(estimates)), float(np.std(estimates))


def nearest_neighbour_distances(
    samples: Float[ArrayLike, "n d"], reference: Float[ArrayLike, "m d"], *, chunk_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The Euclidean distance from each sample to its nearest row of `reference`, and that row's index.

    Samples that copy training images have distance (near) zero; compare with the distances of held-out data to
    the same training set.

    **Arguments:**

    - `samples`: one flattened sample per row.
    - `reference`: one flattened reference (training) example per row.
    - `chunk_size`: samples per block of the distance matrix.

    **Returns:** `(distances, indices)`, each of length `n`.
    """
    x = np.asarray(samples, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    r_norms = np.sum(r * r, axis=1)
    distances, indices = [], []
    for start in range(0, x.shape[0], chunk_size):
        block = x[start : start + chunk_size]
        squared = np.sum(block * block, axis=1)[:, None] - 2 * block @ r.T + r_norms[None, :]
        nearest = np.argmin(squared, axis=1)
        indices.append(nearest)
        distances.append(np.sqrt(np.clip(squared[np.arange(block.shape[0]), nearest], 0, None)))
    return np.concatenate(distances), np.concatenate(indices)
