"""Neural fields on coordinates in the unit cube: NeuRBF (P10, adaptive radial bases composed with sinusoids, hybrid
with a grid) and the baselines it is compared with: a grid-only field, a Fourier-feature MLP and a SIREN.

Every field maps one point `x` in `[0, 1]^d` to `out_dim` values and is batched with `jax.vmap`. The formulas are
in `docs/neurbf.md`."""

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.sites import tag


def _log_spaced(low: float, high: float, n: int) -> Float[Array, " n"]:
    """`n` frequencies spaced evenly in `log2` from `low` to `high` (a constant of the traced program)."""
    if n == 1:
        return jnp.asarray([low], dtype=jnp.float32)
    return jnp.asarray(np.exp2(np.linspace(np.log2(low), np.log2(high), n)), dtype=jnp.float32)


def _check_point(x, in_dim: int, where: str) -> None:
    if x.shape != (in_dim,):
        raise ValueError(f"{where}: expected one point of shape ({in_dim},), got shape {x.shape}; batch with jax.vmap")


def grid_resolutions(base: int, finest: int, levels: int) -> tuple[int, ...]:
    """`levels` grid resolutions growing geometrically from `base` to `finest` nodes per side."""
    if levels < 1 or base < 2 or finest < base:
        raise ValueError(f"need levels >= 1 and 2 <= base <= finest, got levels={levels}, base={base}, finest={finest}")
    if levels == 1:
        return (int(finest),)
    growth = (finest / base) ** (1 / (levels - 1))
    return tuple(round(base * growth**level) for level in range(levels))


class Grid(eqx.Module):
    """A multi-resolution grid of learned feature vectors, read by multilinear interpolation; the levels' features
    are concatenated.

    `values[l]` has shape `[r_l, ..., r_l, features]` (one axis per input dimension); node `i` of a side sits at
    `i / (r_l - 1)`.
    """

    values: tuple[Array, ...]
    in_dim: int = eqx.field(static=True)

    def __init__(self, in_dim: int, resolutions: Sequence[int], features: int, *, scale: float = 1e-4, key):
        """**Arguments:**

        - `in_dim`: the dimension of the points (2 for images, 3 for signed distance fields).
        - `resolutions`: the nodes per side of each level.
        - `features`: the feature vector's size at every node.
        - `scale`: the half-width of the uniform initial values.
        - `key`: a PRNG key.
        """
        if in_dim < 1 or features < 1 or not resolutions or min(resolutions) < 2:
            raise ValueError(
                f"Grid: need in_dim >= 1, features >= 1 and every resolution >= 2, got in_dim={in_dim}, "
                f"features={features}, resolutions={tuple(resolutions)}"
            )
        keys = jax.random.split(key, len(resolutions))
        self.values = tuple(
            jax.random.uniform(k, (int(r),) * in_dim + (features,), minval=-scale, maxval=scale)
            for k, r in zip(keys, resolutions)
        )
        self.in_dim = in_dim

    @property
    def out_size(self) -> int:
        """The length of the concatenated feature vector."""
        return sum(v.shape[-1] for v in self.values)

    def __call__(self, x: Float[Array, " in_dim"]) -> Float[Array, " out"]:
        """The interpolated features at the point `x` (clipped to the unit cube)."""
        return jnp.concatenate([_interpolate(v, x) for v in self.values])


def _interpolate(values: Array, x: Array) -> Array:
    """Multilinear interpolation of the node values `[r, ..., r, f]` at `x` in `[0, 1]^d`."""
    d = x.shape[0]
    r = values.shape[0]
    position = jnp.clip(x, 0.0, 1.0) * (r - 1)
    low = jnp.clip(jnp.floor(jax.lax.stop_gradient(position)), 0, r - 2).astype(jnp.int32)
    frac = position - low
    out = jnp.zeros(values.shape[-1], values.dtype)
    for corner in range(2**d):
        bits = [(corner >> axis) & 1 for axis in range(d)]
        index = tuple(low[axis] + bit for axis, bit in enumerate(bits))
        weight = math.prod(frac[axis] if bit else 1.0 - frac[axis] for axis, bit in enumerate(bits))
        out = out + weight * values[index]
    return out


class Decoder(eqx.Module):
    """The small MLP that turns a field's features into its output. After the first layer, each unit `h_j` becomes
    `h_j + sin(w_j h_j)` with frequencies `w_j` log-spaced over `frequency_range` (NeuRBF's composition of the first
    layer with sinusoids), or passes through ReLU when `frequency_range` is `None`; later hidden layers use ReLU.

    Sites: `decoder.{i}.pre`, `decoder.{i}.post` for hidden layer `i`, and `output`.
    """

    layers: tuple[eqx.nn.Linear, ...]
    frequency_range: tuple[float, float] | None = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        hidden_sizes: Sequence[int],
        out_size: int,
        frequency_range: tuple[float, float] | None = (10.0, 100.0),
        *,
        key,
    ):
        """**Arguments:** `in_size`, `hidden_sizes` (empty: one affine map), `out_size`, `frequency_range`
        (`(low, high)` or `None`), `key`."""
        sizes = (in_size, *hidden_sizes, out_size)
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys))
        self.frequency_range = None if frequency_range is None else tuple(float(f) for f in frequency_range)

    def __call__(self, h: Float[Array, " in_size"]) -> Float[Array, " out_size"]:
        for i, layer in enumerate(self.layers[:-1]):
            h = tag(layer(h), f"decoder.{i}.pre")
            if i == 0 and self.frequency_range is not None:
                h = h + jnp.sin(h * _log_spaced(*self.frequency_range, h.shape[0]))
            else:
                h = jax.nn.relu(h)
            h = tag(h, f"decoder.{i}.post")
        return tag(self.layers[-1](h), "output")


class NeuRBF(eqx.Module):
    """NeuRBF (P10): a neural field whose features are sums of adaptive radial bases composed with sinusoids,
    concatenated with the features of a multi-resolution grid and decoded by a small MLP.

    Kernel `k` has a learned centre `c_k`, a learned shape matrix `A_k` (`d x d`, so the basis is anisotropic and
    rotated) and a learned feature vector `w_k` of `n_features` channels. At a point `x` the `n_neighbours` kernels
    with the nearest centres give the inverse-quadratic bases

        phi_k(x) = 1 / (1 + |A_k (x - c_k)|^2),

    normalised to sum to one over those kernels (by a sum that is held constant for the gradient), and the features

        f(x) = sum_k w_k * sin(omega * phi_k(x)),

    with one frequency `omega_j` per channel, log-spaced over `rbf_frequency_range` (no sinusoid when it is `None`:
    `f(x) = sum_k w_k phi_k(x)`). With `grid` set, the grid's features are concatenated after `f(x)`.

    Written for one point; batch with `jax.vmap`.

    Sites: `rbf.neighbours` (the `n_neighbours` bases `phi_k(x)` after normalisation), `rbf.features` (`f(x)`),
    `grid.features`, `features` (what the decoder reads), then the decoder's (`decoder.{i}.pre`, `decoder.{i}.post`,
    `output`).
    """

    centres: Float[Array, "kernels in_dim"]
    shapes: Float[Array, "kernels in_dim in_dim"]
    weights: Float[Array, "kernels features"]
    grid: Grid | None
    bias: Float[Array, " width"]
    decoder: Decoder
    n_neighbours: int = eqx.field(static=True)
    rbf_frequency_range: tuple[float, float] | None = eqx.field(static=True)
    normalise: bool = eqx.field(static=True)

    def __init__(
        self,
        centres: Float[Array, "kernels in_dim"],
        widths: Float[Array, " kernels"] | float,
        out_dim: int,
        *,
        n_features: int = 16,
        n_neighbours: int = 4,
        rbf_frequency_range: tuple[float, float] | None = (2.0**-3, 2.0**12),
        normalise: bool = True,
        grid_resolutions: Sequence[int] = (),
        grid_features: int = 2,
        hidden_sizes: Sequence[int] = (32, 32),
        decoder_frequency_range: tuple[float, float] | None = (10.0, 100.0),
        weight_scale: float = 1e-4,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `centres`: the kernels' initial centres in `[0, 1]^d` (for example from `kernel_centres`).
        - `widths`: each kernel's initial width `s_k` (or one for all); the shape starts as `A_k = I / s_k`.
        - `out_dim`: the field's output size (3 for colour images, 1 for grey images and distances).
        - `n_features`: the channels of each kernel's feature vector.
        - `n_neighbours`: the kernels evaluated at each point (all of them if there are fewer).
        - `rbf_frequency_range`: `(low, high)` of the sinusoid frequencies, or `None` for plain bases.
        - `normalise`: whether the neighbours' bases are normalised to sum to one.
        - `grid_resolutions`: nodes per side of each grid level; empty for no grid.
        - `grid_features`: features per grid node and level.
        - `hidden_sizes`: the decoder's hidden layers (empty: an affine map).
        - `decoder_frequency_range`: the sinusoid composition of the decoder's first layer, or `None`.
        - `weight_scale`: the half-width of the uniform initial feature vectors (the paper starts them near 0).
        - `key`: a PRNG key.
        """
        centres = jnp.asarray(centres, dtype=jnp.float32)
        if centres.ndim != 2 or centres.shape[0] < 1:
            raise ValueError(f"NeuRBF: centres must have shape [kernels, in_dim], got {centres.shape}")
        n_kernels, in_dim = centres.shape
        widths = np.broadcast_to(np.asarray(widths, dtype=np.float32), (n_kernels,))
        if not np.all(widths > 0):
            raise ValueError("NeuRBF: every kernel width must be positive")
        if n_features < 1 or n_neighbours < 1 or out_dim < 1:
            raise ValueError(
                f"NeuRBF: need n_features, n_neighbours and out_dim >= 1, got {n_features}, {n_neighbours}, {out_dim}"
            )
        weight_key, grid_key, decoder_key = jax.random.split(key, 3)
        self.centres = centres
        self.shapes = jnp.eye(in_dim)[None] / widths[:, None, None]
        self.weights = jax.random.uniform(
            weight_key, (n_kernels, n_features), minval=-weight_scale, maxval=weight_scale
        )
        self.grid = Grid(in_dim, grid_resolutions, grid_features, key=grid_key) if grid_resolutions else None
        width = n_features + (0 if self.grid is None else self.grid.out_size)
        self.bias = jnp.zeros(width)
        self.decoder = Decoder(width, hidden_sizes, out_dim, decoder_frequency_range, key=decoder_key)
        self.n_neighbours = min(int(n_neighbours), n_kernels)
        self.rbf_frequency_range = None if rbf_frequency_range is None else tuple(map(float, rbf_frequency_range))
        self.normalise = bool(normalise)

    @property
    def in_dim(self) -> int:
        """The dimension of the points."""
        return self.centres.shape[1]

    def neighbours(self, x: Float[Array, " in_dim"]) -> Array:
        """The indices of the `n_neighbours` kernels whose centres are nearest to `x` (Euclidean)."""
        distance = jnp.sum(jnp.square(jax.lax.stop_gradient(self.centres) - jax.lax.stop_gradient(x)), axis=-1)
        if self.n_neighbours == self.centres.shape[0]:
            return jnp.arange(self.n_neighbours)
        return jax.lax.top_k(-distance, self.n_neighbours)[1]

    def bases(self, x: Float[Array, " in_dim"], index: Array) -> Float[Array, " n"]:
        """The inverse-quadratic bases `phi_k(x)` of the kernels `index`, normalised if the model says so."""
        offset = x - self.centres[index]
        projected = jnp.einsum("kij,kj->ki", self.shapes[index], offset)
        phi = 1.0 / (1.0 + jnp.sum(jnp.square(projected), axis=-1))
        if self.normalise:
            phi = phi / (jax.lax.stop_gradient(jnp.sum(phi)) + 1e-8)
        return phi

    def __call__(self, x: Float[Array, " in_dim"]) -> Float[Array, " out_dim"]:
        """**Arguments:** `x`, one point in `[0, 1]^d`.

        **Returns:** the field's value there.
        """
        _check_point(x, self.in_dim, "NeuRBF")
        index = self.neighbours(x)
        phi = tag(self.bases(x, index), "rbf.neighbours")
        w = self.weights[index]
        if self.rbf_frequency_range is None:
            rbf = phi @ w
        else:
            omega = _log_spaced(*self.rbf_frequency_range, w.shape[1])
            rbf = jnp.sum(w * jnp.sin(phi[:, None] * omega[None, :]), axis=0)
        parts = [tag(rbf, "rbf.features")]
        if self.grid is not None:
            parts.append(tag(self.grid(x), "grid.features"))
        features = tag(jnp.concatenate(parts) + self.bias, "features")
        return self.decoder(features)


class GridField(eqx.Module):
    """The grid-only baseline: a multi-resolution grid's interpolated features decoded by the same MLP as NeuRBF's.

    Sites: `grid.features`, then the decoder's.
    """

    grid: Grid
    decoder: Decoder

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        resolutions: Sequence[int],
        features: int = 2,
        *,
        hidden_sizes: Sequence[int] = (32, 32),
        decoder_frequency_range: tuple[float, float] | None = (10.0, 100.0),
        key: PRNGKeyArray,
    ):
        """**Arguments:** `in_dim`, `out_dim`, `resolutions` (nodes per side of each level), `features` (per node
        and level), `hidden_sizes`, `decoder_frequency_range` (as for `NeuRBF`), `key`."""
        grid_key, decoder_key = jax.random.split(key)
        self.grid = Grid(in_dim, resolutions, features, key=grid_key)
        self.decoder = Decoder(self.grid.out_size, hidden_sizes, out_dim, decoder_frequency_range, key=decoder_key)

    def __call__(self, x: Float[Array, " in_dim"]) -> Float[Array, " out_dim"]:
        """The field's value at the point `x`."""
        _check_point(x, self.grid.in_dim, "GridField")
        return self.decoder(tag(self.grid(x), "grid.features"))


class FourierFeatureMLP(eqx.Module):
    """The Fourier-feature MLP baseline (Tancik et al. 2020): `[cos(2 pi B x), sin(2 pi B x)]` with a fixed Gaussian
    matrix `B` (standard deviation `scale`), then a ReLU MLP.

    Sites: `fourier_features`, `layers.{i}.pre`, `layers.{i}.post`, `output`.
    """

    projection: Float[Array, "frequencies in_dim"]
    layers: tuple[eqx.nn.Linear, ...]

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_sizes: Sequence[int],
        n_frequencies: int = 64,
        scale: float = 10.0,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `in_dim`, `out_dim`, `hidden_sizes`, `n_frequencies` (rows of `B`), `scale`, `key`. `B`
        is not trained (the training loop sees it through `stop_gradient`)."""
        projection_key, layer_key = jax.random.split(key)
        self.projection = scale * jax.random.normal(projection_key, (n_frequencies, in_dim))
        sizes = (2 * n_frequencies, *hidden_sizes, out_dim)
        keys = jax.random.split(layer_key, len(sizes) - 1)
        self.layers = tuple(eqx.nn.Linear(a, b, key=k) for a, b, k in zip(sizes[:-1], sizes[1:], keys))

    def __call__(self, x: Float[Array, " in_dim"]) -> Float[Array, " out_dim"]:
        """The field's value at the point `x`."""
        _check_point(x, self.projection.shape[1], "FourierFeatureMLP")
        angle = 2 * jnp.pi * jax.lax.stop_gradient(self.projection) @ x
        h = tag(jnp.concatenate([jnp.cos(angle), jnp.sin(angle)]), "fourier_features")
        for i, layer in enumerate(self.layers[:-1]):
            h = tag(layer(h), f"layers.{i}.pre")
            h = tag(jax.nn.relu(h), f"layers.{i}.post")
        return tag(self.layers[-1](h), "output")


class SIREN(eqx.Module):
    """The SIREN baseline (Sitzmann et al. 2020): `sin(omega_0 (W x + b))` layers with SIREN's initialisation, then
    a linear output layer. Points are mapped from `[0, 1]^d` to `[-1, 1]^d` first.

    Sites: `layers.{i}.pre`, `layers.{i}.post`, `output`.
    """

    layers: tuple[eqx.nn.Linear, ...]
    omega_0: float = eqx.field(static=True)

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_sizes: Sequence[int],
        omega_0: float = 30.0,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `in_dim`, `out_dim`, `hidden_sizes` (at least one), `omega_0`, `key`."""
        if not hidden_sizes:
            raise ValueError("SIREN: needs at least one hidden layer")
        sizes = (in_dim, *hidden_sizes, out_dim)
        keys = jax.random.split(key, len(sizes) - 1)
        layers = []
        for i, (a, b, k) in enumerate(zip(sizes[:-1], sizes[1:], keys)):
            bound = 1.0 / a if i == 0 else math.sqrt(6.0 / a) / omega_0
            weight_key, bias_key = jax.random.split(k)
            layer = eqx.nn.Linear(a, b, key=k)
            layer = eqx.tree_at(
                lambda lin: (lin.weight, lin.bias),
                layer,
                (
                    jax.random.uniform(weight_key, (b, a), minval=-bound, maxval=bound),
                    jax.random.uniform(bias_key, (b,), minval=-1 / math.sqrt(a), maxval=1 / math.sqrt(a)),
                ),
            )
            layers.append(layer)
        self.layers = tuple(layers)
        self.omega_0 = float(omega_0)

    def __call__(self, x: Float[Array, " in_dim"]) -> Float[Array, " out_dim"]:
        """The field's value at the point `x`."""
        _check_point(x, self.layers[0].in_features, "SIREN")
        h = 2.0 * x - 1.0
        for i, layer in enumerate(self.layers[:-1]):
            h = tag(layer(h), f"layers.{i}.pre")
            h = tag(jnp.sin(self.omega_0 * h), f"layers.{i}.post")
        return tag(self.layers[-1](h), "output")


def parameter_count(model: eqx.Module) -> int:
    """The number of trained numbers in a field: every inexact array, except the fixed Fourier-feature matrix.
    Works on a model or on its shapes (`eqx.filter_eval_shape` of a constructor), so sizes can be searched without
    building models."""
    if isinstance(model, FourierFeatureMLP):
        model = eqx.tree_at(lambda m: m.projection, model, None)
    leaves = jax.tree.leaves(model)
    return int(sum(leaf.size for leaf in leaves if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)))


def kernel_centres(
    points: Float[np.ndarray, "n in_dim"],
    importance: Float[np.ndarray, " n"],
    n_kernels: int,
    *,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Initial kernel centres and widths from weighted k-means (NeuRBF's initialisation): the points are clustered
    with each weighted by its `importance` (for an image, the gradient magnitude, so kernels gather at detail),
    and each kernel's width is the distance to the nearest other centre.

    **Arguments:**

    - `points`: sample points `[n, d]` in `[0, 1]^d`.
    - `importance`: a non-negative weight per point.
    - `n_kernels`: the number of kernels (at most `n`).
    - `seed`: the k-means seed.

    **Returns:** `(centres [n_kernels, d], widths [n_kernels])`, float32.
    """
    from scipy.spatial import cKDTree
    from sklearn.cluster import MiniBatchKMeans

    points = np.asarray(points, dtype=np.float64)
    importance = np.asarray(importance, dtype=np.float64)
    if points.ndim != 2 or importance.shape != points.shape[:1]:
        raise ValueError(f"kernel_centres: points [n, d] and importance [n], got {points.shape}, {importance.shape}")
    if not 1 <= n_kernels <= len(points):
        raise ValueError(f"kernel_centres: n_kernels must be in [1, {len(points)}], got {n_kernels}")
    if np.any(importance < 0) or not np.all(np.isfinite(importance)):
        raise ValueError("kernel_centres: importance must be finite and non-negative")
    kmeans = MiniBatchKMeans(n_kernels, random_state=seed, n_init=1, batch_size=4096, max_iter=30)
    centres = kmeans.fit(points, sample_weight=importance + 1e-3 * importance.mean() + 1e-12).cluster_centers_
    if n_kernels > 1:
        distance, _ = cKDTree(centres).query(centres, k=2)
        widths = np.maximum(distance[:, 1], 1e-3)
    else:
        widths = np.full(1, 0.5)
    return centres.astype(np.float32), widths.astype(np.float32)
