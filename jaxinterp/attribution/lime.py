"""LIME (Ribeiro et al. 2016, "'Why Should I Trust You?': Explaining the Predictions of Any Classifier") of a value
function over binary feature masks, matching the `lime` package's `LimeTextExplainer` with
`feature_selection='none'`: its perturbations, its cosine-distance kernel and its weighted ridge regression.

A value function is `value(masks) -> values`: `masks` is a float array `[k, n_features]` of 0/1 (1: the feature is
present, 0: it is removed), `values` is `[k]` (for a classifier, the probability of the label explained)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Scalar

from .shapley import ValueFn, _check_n_features, _rcond, check_values, evaluate


def _check_settings(kernel_width, ridge, where: str) -> None:
    """Raise a `ValueError` for a kernel width that is not positive or a negative ridge penalty, when known."""
    for name, setting, ok in (("kernel_width", kernel_width, lambda x: x > 0), ("ridge", ridge, lambda x: x >= 0)):
        if isinstance(setting, jax.core.Tracer):
            continue
        array = np.asarray(setting)
        if array.shape != () or not np.isfinite(array) or not ok(array):
            kind = "positive" if name == "kernel_width" else "non-negative"
            raise ValueError(f"{where}: {name} must be a finite {kind} number, got {setting!r}")


def lime_samples(n_features: int, n_samples: int, key: PRNGKeyArray) -> Float[Array, "n_samples n"]:
    """LIME's perturbations of a text, as `LimeTextExplainer.__data_labels_distances` draws them.

    The first row keeps every feature (the instance explained). Each other row removes a number of features drawn
    uniformly from `1 .. n_features` and chooses which uniformly without replacement. Note that the package draws
    the number with `randint(1, n_features + 1)`, so that a row may remove every feature: this function does the
    same. The random numbers come from `jax.random` (the same key gives the same masks), not from lime's
    `RandomState`, so the masks agree with lime's in distribution, not row by row.

    **Arguments:**

    - `n_features`: the number of features (words), at least 1.
    - `n_samples`: the number of rows, the instance included (lime's `num_samples`, 5000 by default), at least 2.
    - `key`: a `jax.random` key.

    **Returns:** the masks `[n_samples, n_features]`, float32 0/1 (1: present).
    """
    _check_n_features(n_features, "lime_samples")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"lime_samples: n_samples must be an int, got {n_samples!r}")
    if n_samples < 2:
        raise ValueError(
            f"lime_samples: n_samples must be at least 2 (the instance and a perturbation), got {n_samples}"
        )
    return _perturbations(key, n_features, n_samples)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _perturbations(key, n_features: int, n_samples: int):
    count_key, member_key = jax.random.split(key)
    removed = jax.random.randint(count_key, (n_samples - 1,), 1, n_features + 1)
    # a uniformly random set of `removed` features: those whose random rank in the row is below the number
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(member_key, (n_samples - 1, n_features)), axis=1), axis=1)
    perturbed = (ranks >= removed[:, None]).astype(jnp.float32)
    return jnp.concatenate([jnp.ones((1, n_features), jnp.float32), perturbed])


def lime_distances(masks: ArrayLike) -> Float[Array, " k"]:
    """lime_text's distances of masks from the instance: the cosine distance of each mask to the all-present row,
    times 100 (a mask with no feature present is at cosine distance 1, as in scikit-learn's `cosine_distances`,
    whose result lime uses; its clipping to `[0, 2]` is kept).

    **Arguments:**

    - `masks`: `[k, n]` masks.

    **Returns:** the distances `[k]`, from 0 (all present) to 100 (none present) for 0/1 masks.
    """
    masks = jnp.asarray(masks)
    masks = masks if jnp.issubdtype(masks.dtype, jnp.inexact) else masks.astype(jnp.float32)
    n = masks.shape[1]
    norms = jnp.sqrt(jnp.sum(masks**2, axis=1))
    similarity = jnp.sum(masks, axis=1) / jnp.where(norms > 0, norms * np.sqrt(n), 1.0)
    return jnp.clip(1.0 - similarity, 0.0, 2.0) * 100.0


def lime_fit(
    masks: ArrayLike, values: ArrayLike, *, kernel_width: float = 25.0, ridge: float = 1.0
) -> tuple[Float[Array, " n"], Scalar]:
    """LIME's local linear model from evaluated masks, as `LimeBase.explain_instance_with_data(...,
    feature_selection='none')` fits it with the kernel of `LimeTextExplainer`.

    Each mask is weighted by lime's default kernel `sqrt(exp(-d**2 / kernel_width**2))` of its distance `d` (see
    `lime_distances`), and `values` are regressed on the masks by scikit-learn's `Ridge(alpha=ridge,
    fit_intercept=True)` with these sample weights: the weighted means of masks and values are subtracted (the
    intercept is not penalised), then `sum_k w_k (y_k - x_k . c)**2 + ridge * |c|**2` is minimised over `c`. Here
    the minimisation is one `jnp.linalg.lstsq` of the square-root-weighted rows stacked on `sqrt(ridge) * I` (the
    same solution as scikit-learn's Cholesky solve; with `ridge=0` and a singular system, the least-norm one).
    Jit-able; batches under `vmap`.

    **Arguments:**

    - `masks`: `[k, n]` 0/1 masks; lime's first row, the instance, keeps every feature (`lime_samples`).
    - `values`: the value of each mask `[k]`.
    - `kernel_width`: the kernel width (`LimeTextExplainer`'s default, 25).
    - `ridge`: the ridge penalty (lime's `Ridge(alpha=1)`); 0 for weighted least squares.

    **Returns:** `(coefficients [n], intercept)`, lime's `local_exp` (by feature) and `intercept`.
    """
    masks, values = jnp.asarray(masks), jnp.asarray(values)
    if masks.ndim != 2 or masks.shape[1] < 1:
        raise ValueError(f"lime_fit: masks must be [samples, features], got shape {masks.shape}")
    k = masks.shape[0]
    if values.shape != (k,):
        raise ValueError(f"lime_fit: values must be [{k}], one per mask of masks {masks.shape}; got {values.shape}")
    if k < 2:
        raise ValueError(f"lime_fit: at least 2 masks are needed to fit a linear model, got {k}")
    check_values(values, masks, "values", "lime_fit")
    _check_settings(kernel_width, ridge, "lime_fit")

    dtype = jnp.result_type(values.dtype, jnp.float32)
    return _weighted_ridge(masks.astype(dtype), values.astype(dtype), jnp.asarray(kernel_width, dtype), ridge)


@jax.jit
def _weighted_ridge(masks, values, kernel_width, ridge):
    """scikit-learn's `Ridge(alpha=ridge)` with lime's kernel weights: weighted centring, then the ridge solve."""
    k, n = masks.shape
    dtype = values.dtype
    weights = jnp.sqrt(jnp.exp(-(lime_distances(masks) ** 2) / kernel_width**2))
    mask_mean = jnp.sum(weights[:, None] * masks, axis=0) / jnp.sum(weights)
    value_mean = jnp.sum(weights * values) / jnp.sum(weights)
    root = jnp.sqrt(weights)
    rows = jnp.concatenate([(masks - mask_mean) * root[:, None], jnp.sqrt(jnp.asarray(ridge, dtype)) * jnp.eye(n)])
    targets = jnp.concatenate([(values - value_mean) * root, jnp.zeros(n, dtype)])
    coefficients = jnp.linalg.lstsq(rows, targets, rcond=_rcond(k + n, n, dtype))[0]
    return coefficients, value_mean - jnp.sum(mask_mean * coefficients)


def lime(
    value: ValueFn,
    n_features: int,
    *,
    n_samples: int = 5000,
    key: PRNGKeyArray,
    kernel_width: float = 25.0,
    ridge: float = 1.0,
    batch_size: int | None = None,
) -> Float[Array, " n"]:
    """LIME (Ribeiro et al. 2016) of a value function over feature masks: what `LimeTextExplainer(kernel_width=25,
    feature_selection='none').explain_instance(text, classifier_fn, num_features=n_features)` returns for the
    equivalent text classifier (words present or removed), up to its random sample.

    Draws the perturbations (`lime_samples`), evaluates `value` on them and fits the weighted ridge regression
    (`lime_fit`). Usable under `jax.jit` and `jax.vmap` with `value`, `n_features`, `n_samples` and `batch_size`
    static.

    `feature_selection` is an argument of `LimeTextExplainer`'s constructor, `'auto'` by default; with
    `num_features >= n_features` every selection method keeps every feature and lime's fit is this one, but with
    fewer (its default `num_features=10`, for longer texts) lime refits the ridge on the features selected only.
    `LimeTextExplainer`'s `kernel_width` defaults to 25 (lime's tabular explainer uses `0.75 * sqrt(n_features)`).

    **Arguments:**

    - `value`: `value(masks [k, n_features]) -> values [k]`, masks 0/1 float32 (1: present).
    - `n_features`: the number of features.
    - `n_samples`: the number of masks evaluated, the all-present one included (lime's `num_samples`).
    - `key`: a `jax.random` key for the perturbations.
    - `kernel_width`, `ridge`: as in `lime_fit`.
    - `batch_size`: masks per call of `value` (`jax.lax.map` over chunks); `None` for one call on all of them.

    **Returns:** the coefficients `[n_features]` of the local linear model.
    """
    _check_settings(kernel_width, ridge, "lime")
    masks = lime_samples(n_features, n_samples, key)
    values = evaluate(value, masks, batch_size=batch_size, where="lime")
    return lime_fit(masks, values, kernel_width=kernel_width, ridge=ridge)[0]
