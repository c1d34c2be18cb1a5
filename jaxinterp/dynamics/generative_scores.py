"""Scores of generated paths against real ones: the discriminative and predictive scores of TimeGAN (used by P31),
distances between the marginal laws at each time, and the modes of a one-dimensional marginal.

- `discriminative_score`: a GRU classifier is trained to tell real from generated paths on 80% of each set and
    tested on the rest; the score is `|accuracy - 1/2|` (0: indistinguishable, 1/2: told apart every time).
- `predictive_score`: a GRU trained on the generated paths to predict each next point from the points before it
    ("train on synthetic, test on real"), scored by its mean absolute error on the real paths.
- `marginal_wasserstein`: the 1-Wasserstein distance between the real and the generated marginal law of every
    channel at every time, from quantiles.
- `marginal_modes`: the modes of a Gaussian kernel density estimate of one-dimensional samples, for checking that
    a generator reproduces a bimodal marginal.

The signature MMD is `signature_kernels.signature_mmd_squared`. The formulas are in `docs/generative_sdes.md`.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..training import minibatches, train


def _check_paths(where: str, **sets) -> tuple[np.ndarray, ...]:
    arrays = []
    for name, value in sets.items():
        array = np.asarray(value, dtype=np.float32)
        if array.ndim != 3:
            raise ValueError(f"{where}: {name} must be paths [n, times, channels], got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{where}: {name} contains NaN or infinite values")
        arrays.append(array)
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"{where}: the sets' [times, channels] differ: {[a.shape for a in arrays]}")
    return tuple(arrays)


class _GRUHead(eqx.Module):
    """A GRU over a path and a linear readout of every hidden state."""

    cell: eqx.nn.GRUCell
    head: eqx.nn.Linear

    def __init__(self, channels: int, hidden: int, out: int, *, key: PRNGKeyArray):
        k1, k2 = jax.random.split(key)
        self.cell = eqx.nn.GRUCell(channels, hidden, key=k1)
        self.head = eqx.nn.Linear(hidden, out, key=k2)

    def __call__(self, path: Array) -> Array:
        def step(h, x):
            h = self.cell(x, h)
            return h, h

        _, hs = jax.lax.scan(step, jnp.zeros(self.cell.hidden_size, path.dtype), path)
        return jax.vmap(self.head)(hs)


@functools.cache
def _adam(learning_rate: float) -> optax.GradientTransformation:
    """One optimiser object per learning rate, so that repeated scores share the training step's compilation."""
    return optax.adam(learning_rate)


def _classifier_loss(model: _GRUHead, batch, key) -> Array:
    x, y = batch
    return jnp.mean(optax.sigmoid_binary_cross_entropy(_last_logits(model, x), y))


def _last_logits(model: _GRUHead, x: Array) -> Array:
    return jax.vmap(lambda p: model(p)[-1, 0])(x)


def _prediction_errors(model: _GRUHead, x: Array) -> Array:
    return jnp.abs(jax.vmap(model)(x[:, :-1]) - x[:, 1:])


def _predictor_loss(model: _GRUHead, x, key) -> Array:
    return jnp.mean(_prediction_errors(model, x))


def _fit(model, loss, data, *, steps: int, batch_size: int, learning_rate: float, key: PRNGKeyArray, name: str):
    data_key, train_key = jax.random.split(key)
    batches = minibatches(data, min(batch_size, len(jax.tree.leaves(data)[0])), key=data_key)
    model, _ = train(
        model, loss, batches, _adam(learning_rate), steps=steps, key=train_key, description=name, progress=False
    )
    return model


def discriminative_score(
    real: Float[ArrayLike, "n times channels"],
    fake: Float[ArrayLike, "m times channels"],
    *,
    key: PRNGKeyArray,
    hidden: int = 16,
    steps: int = 300,
    batch_size: int = 128,
    learning_rate: float = 1e-2,
    train_fraction: float = 0.8,
) -> float:
    """`|accuracy - 1/2|` of a GRU classifier of real against generated paths, on held-out paths.

    The two sets are cut to the size of the smaller, so that chance is 1/2; each is split into `train_fraction`
    for training (logistic loss on the last hidden state's readout, Adam) and the rest for testing.

    **Arguments:**

    - `real`, `fake`: `[n, times, channels]` and `[m, times, channels]` (at least 5 paths each).
    - `key`: the key of the split, the initial weights and the batches.
    - `hidden`, `steps`, `batch_size`, `learning_rate`: the classifier and its training.
    - `train_fraction`: the share of each set used for training.

    **Returns:** the score in `[0, 1/2]`.
    """
    real, fake = _check_paths("discriminative_score", real=real, fake=fake)
    n = min(len(real), len(fake))
    if n < 5:
        raise ValueError(f"discriminative_score: needs at least 5 paths in each set, got {len(real)} and {len(fake)}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"discriminative_score: train_fraction must be in (0, 1), got {train_fraction}")
    split_key, init_key, fit_key = jax.random.split(key, 3)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(split_key)).ravel())
    real, fake = real[rng.permutation(len(real))[:n]], fake[rng.permutation(len(fake))[:n]]
    cut = max(1, min(n - 1, round(train_fraction * n)))
    train_x = np.concatenate([real[:cut], fake[:cut]])
    train_y = np.concatenate([np.ones(cut), np.zeros(cut)]).astype(np.float32)
    test_x = np.concatenate([real[cut:], fake[cut:]])
    test_y = np.concatenate([np.ones(n - cut), np.zeros(n - cut)]).astype(np.float32)

    model = _GRUHead(real.shape[-1], hidden, 1, key=init_key)
    model = _fit(
        model,
        _classifier_loss,
        (train_x, train_y),
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        key=fit_key,
        name="discriminative_score",
    )
    logits = np.asarray(eqx.filter_jit(_last_logits)(model, jnp.asarray(test_x)))
    accuracy = float(np.mean((logits > 0) == (test_y > 0.5)))
    return abs(accuracy - 0.5)


def predictive_score(
    synthetic: Float[ArrayLike, "n times channels"],
    real: Float[ArrayLike, "m times channels"],
    *,
    key: PRNGKeyArray,
    hidden: int = 16,
    steps: int = 300,
    batch_size: int = 128,
    learning_rate: float = 1e-2,
) -> float:
    """Train on synthetic, test on real: the mean absolute error on `real` of a GRU trained on `synthetic` to predict
    every point `x_{i+1}` (all channels) from `x_0..x_i`.

    **Arguments:**

    - `synthetic`: the generated paths the predictor trains on, `[n, times, channels]` (`times >= 2`).
    - `real`: the real paths it is tested on.
    - `key`: the key of the initial weights and the batches.
    - `hidden`, `steps`, `batch_size`, `learning_rate`: the predictor and its training (L1 loss, Adam).

    **Returns:** the mean absolute error over the real paths' predicted points and channels.
    """
    synthetic, real = _check_paths("predictive_score", synthetic=synthetic, real=real)
    if synthetic.shape[1] < 2:
        raise ValueError(f"predictive_score: paths need at least 2 times, got {synthetic.shape[1]}")
    init_key, fit_key = jax.random.split(key)

    model = _GRUHead(real.shape[-1], hidden, real.shape[-1], key=init_key)
    model = _fit(
        model,
        _predictor_loss,
        synthetic,
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        key=fit_key,
        name="predictive_score",
    )
    return float(jnp.mean(eqx.filter_jit(_prediction_errors)(model, jnp.asarray(real))))


def marginal_wasserstein(
    real: Float[ArrayLike, "n times channels"], fake: Float[ArrayLike, "m times channels"], *, levels: int = 200
) -> Float[np.ndarray, "times channels"]:
    """The 1-Wasserstein distance between the real and the generated marginal law of each channel at each time,
    `W_1 = int_0^1 |F^-1(u) - G^-1(u)| du`, by the midpoint rule on `levels` quantile levels.

    **Arguments:**

    - `real`, `fake`: `[n, times, channels]` and `[m, times, channels]`.
    - `levels`: the quantile levels `(k + 1/2) / levels`.

    **Returns:** `[times, channels]`.
    """
    real, fake = _check_paths("marginal_wasserstein", real=real, fake=fake)
    u = (np.arange(levels) + 0.5) / levels
    return np.mean(np.abs(np.quantile(real, u, axis=0) - np.quantile(fake, u, axis=0)), axis=0)


def marginal_modes(
    samples: Float[ArrayLike, " n"],
    *,
    bandwidth: float | None = None,
    grid_size: int = 512,
    min_height: float = 0.2,
    min_dip: float = 0.2,
) -> Float[np.ndarray, " modes"]:
    """The modes of a Gaussian kernel density estimate of one-dimensional samples.

    A mode is a local maximum of the estimate on a grid over the samples' range (padded by 3 bandwidths) that is at
    least `min_height` times the highest one. Neighbouring maxima count as separate modes only if the density
    between them dips at least `min_dip` below the lower of the two (as a fraction of it); otherwise the lower is
    dropped.

    **Arguments:**

    - `samples`: `[n]`, finite, at least 2.
    - `bandwidth`: the kernel's standard deviation; `None`: half of Silverman's rule, `0.45 min(std, IQR / 1.34)
        n^(-1/5)` (Silverman's rule oversmooths a bimodal law).
    - `grid_size`: grid points of the estimate.
    - `min_height`, `min_dip`: the thresholds above, in `[0, 1)`.

    **Returns:** the mode locations, increasing.
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)):
        raise ValueError(
            f"marginal_modes: needs at least 2 finite samples, got {x.size} (finite: {np.isfinite(x).sum()})"
        )
    if bandwidth is None:
        spread = min(np.std(x), (np.quantile(x, 0.75) - np.quantile(x, 0.25)) / 1.34) or np.std(x)
        bandwidth = 0.45 * max(spread, 1e-6) * x.size ** (-0.2)
    if not bandwidth > 0:
        raise ValueError(f"marginal_modes: bandwidth must be positive, got {bandwidth}")
    grid = np.linspace(x.min() - 3 * bandwidth, x.max() + 3 * bandwidth, grid_size)
    density = np.zeros_like(grid)
    for chunk in np.array_split(x, max(1, x.size // 2048)):
        density += np.exp(-0.5 * ((grid[:, None] - chunk[None, :]) / bandwidth) ** 2).sum(axis=1)
    peaks = [i for i in range(1, grid_size - 1) if density[i] >= density[i - 1] and density[i] > density[i + 1]]
    peaks = [i for i in peaks if density[i] >= min_height * density.max()]
    kept: list[int] = []
    for i in peaks:
        if kept:
            j = kept[-1]
            dip = density[j : i + 1].min()
            if dip > (1 - min_dip) * min(density[i], density[j]):
                if density[i] > density[j]:
                    kept[-1] = i
                continue
        kept.append(i)
    return grid[kept]
