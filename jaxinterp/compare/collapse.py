"""Neural collapse metrics NC1-NC4 (Papyan, Han and Donoho 2020), for features at any layer of any network, with
balanced or imbalanced classes (Dang et al. 2023). See `docs/compare.md#neural-collapse`."""

from typing import NamedTuple

import numpy as np
from jaxtyping import ArrayLike, Float, Int

from ._checks import as_matrix, check_finite

CENTRES = ("global", "none")


class ClassMeans(NamedTuple):
    """Per-class statistics of features: `means [classes, d]`, `global_mean [d]` (over all examples) and
    `counts [classes]`."""

    means: np.ndarray
    global_mean: np.ndarray
    counts: np.ndarray


def _features_and_labels(features, labels, num_classes, where: str) -> tuple[np.ndarray, np.ndarray, int]:
    features = as_matrix(features, "features", where, min_rows=2)
    labels = np.asarray(labels)
    if labels.shape != (features.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{where}: labels must be integers [examples] = [{features.shape[0]}], got {labels.dtype} {labels.shape}"
        )
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{where}: labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    counts = np.bincount(labels, minlength=num_classes)
    if np.any(counts == 0):
        raise ValueError(f"{where}: classes {np.flatnonzero(counts == 0).tolist()} have no examples")
    if num_classes < 2:
        raise ValueError(f"{where}: neural collapse needs at least 2 classes, got {num_classes}")
    return features, labels, num_classes


def class_means(
    features: Float[ArrayLike, "n d"], labels: Int[ArrayLike, " n_labels"], num_classes: int | None = None
) -> ClassMeans:
    """The mean feature of every class, the global mean and the class counts.

    **Arguments:**

    - `features`: `[examples, d]`.
    - `labels`: `[examples]` classes in `[0, num_classes)`; every class must occur.
    - `num_classes`: by default `max(labels) + 1`.

    **Returns:** `ClassMeans`.
    """
    features, labels, num_classes = _features_and_labels(features, labels, num_classes, "class_means")
    counts = np.bincount(labels, minlength=num_classes)
    sums = np.zeros((num_classes, features.shape[1]))
    np.add.at(sums, labels, features)
    return ClassMeans(sums / counts[:, None], features.mean(axis=0), counts)


def nc1(
    features: Float[ArrayLike, "n d"], labels: Int[ArrayLike, " n_labels"], num_classes: int | None = None
) -> float:
    """NC1, within-class variability relative to the spread of the class means: `Tr(S_W S_B^+) / K`.

    `S_W = 1/N sum_i (h_i - mu_(y_i))(h_i - mu_(y_i))^T`, `S_B = 1/K sum_c (mu_c - mu_G)(mu_c - mu_G)^T`
    (`mu_G` the global mean) and `^+` the Moore-Penrose pseudo-inverse. 0 when every feature equals its class
    mean. Arguments as for `class_means`; returns a float.
    """
    features, labels, num_classes = _features_and_labels(features, labels, num_classes, "nc1")
    stats = class_means(features, labels, num_classes)
    within = features - stats.means[labels]
    s_w = within.T @ within / features.shape[0]
    between = stats.means - stats.global_mean
    s_b = between.T @ between / num_classes
    return float(np.trace(s_w @ np.linalg.pinv(s_b, rcond=1e-10, hermitian=True)) / num_classes)


def _centred(means: np.ndarray, global_mean, centre: str, where: str) -> np.ndarray:
    if centre not in CENTRES:
        raise ValueError(f"{where}: centre must be one of {CENTRES}, got {centre!r}")
    if centre == "none":
        return means
    return means - (means.mean(axis=0) if global_mean is None else np.asarray(global_mean, dtype=np.float64))


def _cosines(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1)
    unit = vectors / np.where(norms > 0, norms, 1.0)[:, None]
    return unit @ unit.T


def nc2(
    means: Float[ArrayLike, "k d"], global_mean: Float[ArrayLike, " dg"] | None = None, *, centre: str = "global"
) -> dict[str, float]:
    """NC2, how close the class means are to a simplex equiangular tight frame (ETF).

    **Arguments:**

    - `means`: `[classes, d]` class means (`ClassMeans.means`).
    - `global_mean`: `[d]`; by default the mean of the class means (equal for balanced classes).
    - `centre`: `"global"` subtracts the global mean first (Papyan et al.); `"none"` uses the means as they are
      (for bias-free models, whose uncentred means form an orthogonal frame).

    **Returns:** a dict of

    - `equinorm`: the standard deviation of the (centred) means' norms over their mean;
    - `equiangular`: the standard deviation of the cosines between distinct means;
    - `max_angle`: the mean of `|cos + 1 / (K - 1)|` over distinct pairs (0 for the simplex's angles);
    - `etf_distance`: `|| M M^T / ||M M^T||_F - E / ||E||_F ||_F`, with `E = I - 1 1^T / K` the simplex ETF's
      Gram matrix;
    - `max_abs_cosine`: the largest `|cos|` between distinct means (0 for orthogonal means).
    """
    means = as_matrix(means, "means", "nc2", min_rows=2)
    if global_mean is not None:
        check_finite(global_mean, "global_mean", "nc2")
    m = _centred(means, global_mean, centre, "nc2")
    k = m.shape[0]
    norms = np.linalg.norm(m, axis=1)
    cosines = _cosines(m)[~np.eye(k, dtype=bool)]
    gram = m @ m.T
    etf = np.eye(k) - np.ones((k, k)) / k
    gram_norm = np.linalg.norm(gram)
    return {
        "equinorm": float(norms.std() / norms.mean()) if norms.mean() > 0 else 0.0,
        "equiangular": float(cosines.std()),
        "max_angle": float(np.mean(np.abs(cosines + 1.0 / (k - 1)))),
        "etf_distance": float(np.linalg.norm(gram / (gram_norm if gram_norm > 0 else 1.0) - etf / np.linalg.norm(etf))),
        "max_abs_cosine": float(np.max(np.abs(cosines))),
    }


def nc3(
    classifier: Float[ArrayLike, "kw dw"],
    means: Float[ArrayLike, "km dm"],
    global_mean: Float[ArrayLike, " dg"] | None = None,
    *,
    centre: str = "global",
) -> float:
    """NC3, self-duality of the classifier and the class means: `|| W / ||W||_F - M / ||M||_F ||_F^2`.

    **Arguments:**

    - `classifier`: `[classes, d]`, the last layer's weights (row `c` gives logit `c`).
    - `means`, `global_mean`, `centre`: the class means and their centring, as for `nc2`.

    **Returns:** a float in `[0, 4]`; 0 when the classifier is a positive multiple of the (centred) means.
    """
    w = as_matrix(classifier, "classifier", "nc3")
    means = as_matrix(means, "means", "nc3", min_rows=2)
    if w.shape != means.shape:
        raise ValueError(f"nc3: classifier and means must both be [classes, d], got {w.shape} and {means.shape}")
    m = _centred(means, global_mean, centre, "nc3")
    return float(np.sum((w / np.linalg.norm(w) - m / np.linalg.norm(m)) ** 2))


def nc4(
    features: Float[ArrayLike, "n d"],
    classifier: Float[ArrayLike, "kw dw"],
    bias: Float[ArrayLike, " kb"] | None,
    means: Float[ArrayLike, "km dm"],
) -> float:
    """NC4, how often the classifier disagrees with the nearest class mean: the fraction of examples whose
    `argmax_c (W h + b)_c` differs from `argmin_c ||h - mu_c||`.

    **Arguments:**

    - `features`: `[examples, d]`.
    - `classifier`, `bias`: `[classes, d]` and `[classes]` (or `None` for a bias-free classifier).
    - `means`: `[classes, d]`.

    **Returns:** a float in `[0, 1]`.
    """
    features = as_matrix(features, "features", "nc4")
    w = as_matrix(classifier, "classifier", "nc4")
    means = as_matrix(means, "means", "nc4", min_rows=2)
    if w.shape != means.shape or features.shape[1] != w.shape[1]:
        raise ValueError(
            f"nc4: features [n, d], classifier and means [classes, d] disagree: {features.shape}, {w.shape}, "
            f"{means.shape}"
        )
    logits = features @ w.T
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64)
        if bias.shape != (w.shape[0],):
            raise ValueError(f"nc4: bias must be [classes] = [{w.shape[0]}], got shape {bias.shape}")
        check_finite(bias, "bias", "nc4")
        logits = logits + bias
    distances = np.sum(features**2, axis=1)[:, None] - 2 * features @ means.T + np.sum(means**2, axis=1)[None]
    return float(np.mean(np.argmax(logits, axis=1) != np.argmin(distances, axis=1)))


def collapse_metrics(
    features: Float[ArrayLike, "n d"],
    labels: Int[ArrayLike, " n_labels"],
    classifier: Float[ArrayLike, "kw dw"] | None = None,
    bias: Float[ArrayLike, " kb"] | None = None,
    *,
    num_classes: int | None = None,
    centre: str = "global",
) -> dict[str, float | list[float]]:
    """Every collapse metric of one layer's features at one moment of training.

    **Arguments:**

    - `features`, `labels`, `num_classes`: as for `class_means`.
    - `classifier`, `bias`: the layer that reads these features (`[classes, d]`, `[classes]`), for NC3 and NC4;
      `None` skips them.
    - `centre`: the centring of the means for NC2 and NC3 (see `nc2`).

    **Returns:** a dict with `nc1`, the `nc2` entries prefixed `nc2_`, `nc3`, `nc4` (when a classifier is given),
    `mean_norms` (the norm of each class's centred or uncentred mean, per `centre`), `counts`, and with a
    classifier `classifier_norms` and `classifier_mean_cosines` (the cosine between classifier row `c` and class
    mean `c`, which is 1 when they are aligned even if their lengths differ class by class).
    """
    features, labels, num_classes = _features_and_labels(features, labels, num_classes, "collapse_metrics")
    stats = class_means(features, labels, num_classes)
    out: dict[str, float | list[float]] = {"nc1": nc1(features, labels, num_classes)}
    out.update({f"nc2_{name}": value for name, value in nc2(stats.means, stats.global_mean, centre=centre).items()})
    out["mean_norms"] = np.linalg.norm(
        _centred(stats.means, stats.global_mean, centre, "collapse_metrics"), axis=1
    ).tolist()
    out["counts"] = stats.counts.tolist()
    if classifier is not None:
        out["nc3"] = nc3(classifier, stats.means, stats.global_mean, centre=centre)
        out["nc4"] = nc4(features, classifier, bias, stats.means)
        w = np.asarray(classifier, dtype=np.float64)
        out["classifier_norms"] = np.linalg.norm(w, axis=1).tolist()
        m = _centred(stats.means, stats.global_mean, centre, "collapse_metrics")
        out["classifier_mean_cosines"] = np.diag(_cosines(np.concatenate([w, m]))[: len(w), len(w) :]).tolist()
    return out
