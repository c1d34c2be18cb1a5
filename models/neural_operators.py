"""Neural operators: maps between functions that take a function sampled on any grid of a fixed domain and return
the output function on the same grid (P34, *Principled Approaches for Extending Neural Architectures to Function
Spaces for Operator Learning*; the Fourier neural operator of Li et al. 2021).

P34's recipe turns a network into an operator by making every layer a discretisation of a map between functions:
pointwise layers (lifting, projection, activations) act on function values and need nothing; the grid coordinates
are an input channel (a function too); and each convolution becomes an integral operator, `(K v)(x) = int k(x - y)
v(y) dy`, whose discretisation changes with the grid. Two integral operators are written here:

- `SpectralConvolution`: the kernel is parametrised by its lowest Fourier modes, so `K v` is computed exactly on any
    grid that resolves them (`FNO`);
- the kernel of a standard convolution read as samples of a continuous kernel on a fixed physical support, resampled
    to each grid by linear interpolation and scaled by the ratio of grid spacings (the quadrature weight), as P34's
    official code does for the U-Net (`ConvolutionalOperator`); with `resample=False` it is the plain CNN whose
    kernels are fixed in grid points.

Both take one sample, channels first (`[channels, *grid]`), in 1-D or 2-D; batch with `jax.vmap`. A grid is either
`"periodic"` (`x_j = j / n` on `[0, 1)`) or `"vertex"` (`x_j = j / (n - 1)` on `[0, 1]`, both ends included). The
formulas are in `docs/neural_operators.md`.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.composites import activation
from jaxinterp.sites import tag

GRIDS = ("periodic", "vertex")


def grid_coordinates(shape: tuple[int, ...], grid: str) -> Float[Array, " dims *grid"]:
    """The coordinates of every point of a grid of `shape` on the unit interval or square, as `[len(shape),
    *shape]`: `j / n` on a `"periodic"` grid, `j / (n - 1)` on a `"vertex"` grid."""
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
    axes = [jnp.arange(n) / (n if grid == "periodic" else n - 1) for n in shape]
    return jnp.stack(jnp.meshgrid(*axes, indexing="ij"))


def _pointwise(weight: Array, bias: Array, x: Array) -> Array:
    """A linear map of the channels at every grid point: `[out, in] x [in, *grid] -> [out, *grid]`."""
    return jnp.einsum("oi,i...->o...", weight, x) + bias.reshape(-1, *([1] * (x.ndim - 1)))


def _init_linear(key: PRNGKeyArray, out_size: int, in_size: int) -> tuple[Array, Array]:
    bound = in_size**-0.5
    wkey, bkey = jax.random.split(key)
    return (
        jax.random.uniform(wkey, (out_size, in_size), minval=-bound, maxval=bound),
        jax.random.uniform(bkey, (out_size,), minval=-bound, maxval=bound),
    )


def _check_input(a: Array, channels: int, ndim: int, where: str) -> None:
    if a.ndim != ndim + 1 or a.shape[0] != channels:
        raise ValueError(
            f"{where}: expected one sample of shape [{channels}, *grid] with {ndim} grid axes, got {a.shape}"
        )


class SpectralConvolution(eqx.Module):
    """The Fourier integral operator of an FNO layer: `K v = F^-1(R . F v)`, with `R` a learned complex
    `[out, in]` matrix for each kept Fourier mode and zero for the others.

    The modes kept are wavenumbers `0..modes-1` along the last axis (a real FFT) and `-modes..modes-1` along the
    others. The forward transform is normalised by the number of points (`norm="forward"`), so `F v` holds the
    Fourier coefficients of the function `v` whatever the grid, and `K v` sampled on any grid that resolves the kept
    modes is the same function.
    """

    weight_real: Float[Array, "in_channels out_channels *modes"]
    weight_imag: Float[Array, "in_channels out_channels *modes"]
    modes: int = eqx.field(static=True)
    ndim: int = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, modes: int, ndim: int, *, key: PRNGKeyArray):
        """**Arguments:** `in_channels`, `out_channels`; `modes` kept per axis; `ndim` (1 or 2) grid axes; `key`
        (weights uniform on `[0, 1 / (in * out))`, real and imaginary parts alike, as in the FNO code)."""
        if ndim not in (1, 2):
            raise ValueError(f"SpectralConvolution: ndim must be 1 or 2, got {ndim}")
        if modes < 1:
            raise ValueError(f"SpectralConvolution: modes must be positive, got {modes}")
        shape = (in_channels, out_channels, *([2 * modes] * (ndim - 1)), modes)
        scale = 1.0 / (in_channels * out_channels)
        rkey, ikey = jax.random.split(key)
        self.weight_real = scale * jax.random.uniform(rkey, shape)
        self.weight_imag = scale * jax.random.uniform(ikey, shape)
        self.modes, self.ndim = modes, ndim

    def _check_grid(self, shape: tuple[int, ...]) -> None:
        m = self.modes
        if len(shape) != self.ndim:
            raise ValueError(f"SpectralConvolution: expected {self.ndim} grid axes, got the grid {shape}")
        for axis, n in enumerate(shape[:-1]):
            if n < 2 * m:
                raise ValueError(
                    f"SpectralConvolution: grid axis {axis} has {n} points, fewer than 2 * modes = {2 * m}"
                )
        if shape[-1] // 2 + 1 < m:
            raise ValueError(f"SpectralConvolution: the last grid axis has {shape[-1]} points, too few for {m} modes")

    def __call__(self, x: Float[Array, " in_channels *grid"]) -> Float[Array, " out_channels *grid"]:
        shape = x.shape[1:]
        self._check_grid(shape)
        m = self.modes
        axes = tuple(range(1, self.ndim + 1))
        spectrum = jnp.fft.rfftn(x, axes=axes, norm="forward")[..., :m]
        if self.ndim == 2:
            spectrum = jnp.concatenate([spectrum[:, :m], spectrum[:, -m:]], axis=1)
        weight = jax.lax.complex(self.weight_real, self.weight_imag)
        mixed = jnp.einsum("i...,io...->o...", spectrum, weight)
        if self.ndim == 2:
            gap = jnp.zeros((mixed.shape[0], shape[0] - 2 * m, m), mixed.dtype)
            mixed = jnp.concatenate([mixed[:, :m], gap, mixed[:, m:]], axis=1)
        mixed = jnp.pad(mixed, [(0, 0)] * self.ndim + [(0, shape[-1] // 2 + 1 - m)])
        return jnp.fft.irfftn(mixed, s=shape, axes=axes, norm="forward")


class FNO(eqx.Module):
    """A Fourier neural operator: lift the input function and the grid coordinates pointwise to `width` channels,
    apply `depth` Fourier layers `v <- gelu(K v + W v)` (no activation after the last), then project pointwise
    through a hidden layer of `projection` channels.

    On a `"vertex"` grid (non-periodic functions) each axis is zero-padded at its end by `padding` times the domain
    (so by the same physical length on every grid) before the Fourier layers and cropped after them, as the FNO does
    for Darcy flow.

    Sites, for one sample: `lift` (`[width, *grid]`), `layers.{i}.spectral` (`K v`), `layers.{i}.pointwise` (`W v`),
    `layers.{i}.post` (the layer's output), `projection.hidden`, `out` (`[out_channels, *grid]`).
    """

    lift_weight: Array
    lift_bias: Array
    spectral: list[SpectralConvolution]
    pointwise_weights: list[Array]
    pointwise_biases: list[Array]
    hidden_weight: Array
    hidden_bias: Array
    out_weight: Array
    out_bias: Array
    in_channels: int = eqx.field(static=True)
    ndim: int = eqx.field(static=True)
    grid: str = eqx.field(static=True)
    padding: float = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        modes: int,
        depth: int,
        ndim: int,
        grid: str,
        projection: int = 128,
        padding: float = 0.0,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `in_channels` (the input function's channels; the grid coordinates are added),
        `out_channels`; `width` channels of the Fourier layers; `modes` per axis; `depth` Fourier layers; `ndim`
        (1 or 2); `grid` (`"periodic"` or `"vertex"`); `projection` hidden channels of the output map; `padding`
        (a fraction of the domain; only on `"vertex"` grids); `key`."""
        if grid not in GRIDS:
            raise ValueError(f"FNO: grid must be one of {GRIDS}, got {grid!r}")
        if padding < 0 or (padding and grid == "periodic"):
            raise ValueError(f"FNO: padding must be >= 0, and 0 on a periodic grid; got {padding} on {grid!r}")
        keys = jax.random.split(key, 2 * depth + 3)
        self.lift_weight, self.lift_bias = _init_linear(keys[0], width, in_channels + ndim)
        self.spectral = [SpectralConvolution(width, width, modes, ndim, key=k) for k in keys[1 : depth + 1]]
        pointwise = [_init_linear(k, width, width) for k in keys[depth + 1 : 2 * depth + 1]]
        self.pointwise_weights = [w for w, _ in pointwise]
        self.pointwise_biases = [b for _, b in pointwise]
        self.hidden_weight, self.hidden_bias = _init_linear(keys[-2], projection, width)
        self.out_weight, self.out_bias = _init_linear(keys[-1], out_channels, projection)
        self.in_channels, self.ndim, self.grid, self.padding = in_channels, ndim, grid, padding

    def __call__(self, a: Float[Array, " in_channels *grid"]) -> Float[Array, " out_channels *grid"]:
        """The output function on the grid of `a`."""
        _check_input(a, self.in_channels, self.ndim, "FNO")
        shape = a.shape[1:]
        x = jnp.concatenate([a, grid_coordinates(shape, self.grid).astype(a.dtype)])
        v = tag(_pointwise(self.lift_weight, self.lift_bias, x), "lift")
        pads = [round(self.padding * (n - 1)) for n in shape]
        if any(pads):
            v = jnp.pad(v, [(0, 0)] + [(0, p) for p in pads])
        last = len(self.spectral) - 1
        for i, (spectral, w, b) in enumerate(zip(self.spectral, self.pointwise_weights, self.pointwise_biases)):
            k = tag(spectral(v), f"layers.{i}.spectral")
            p = tag(_pointwise(w, b, v), f"layers.{i}.pointwise")
            v = tag(k + p if i == last else activation(k + p, "gelu"), f"layers.{i}.post")
        if any(pads):
            v = v[(slice(None), *(slice(0, n) for n in shape))]
        hidden = tag(activation(_pointwise(self.hidden_weight, self.hidden_bias, v), "gelu"), "projection.hidden")
        return tag(_pointwise(self.out_weight, self.out_bias, hidden), "out")


def _interpolation_matrix(taps: int, scale: float) -> np.ndarray:
    """`[scale (taps - 1) + 1, taps]`: linear interpolation of a kernel's taps at the points `j / scale`."""
    size = round(scale * (taps - 1)) + 1
    points = np.arange(size) / scale
    matrix = np.zeros((size, taps))
    left = np.clip(np.floor(points).astype(int), 0, taps - 2)
    frac = points - left
    matrix[np.arange(size), left] = 1 - frac
    matrix[np.arange(size), left + 1] += frac
    return matrix


class ConvolutionalOperator(eqx.Module):
    """A CNN made an operator by P34's recipe: a pointwise lift of the input function and the grid coordinates to
    `width` channels, `depth` layers `v <- gelu(conv(v))` (no activation after the last) with odd `kernel_size`
    kernels and a residual connection, then a pointwise projection through `projection` hidden channels.

    The kernels are samples, `base_points` apart on the training grid, of continuous kernels with a fixed physical
    support. On a grid `s` times finer (`s = n / base_points` on a periodic grid, `(n - 1) / (base_points - 1)` on a
    vertex grid) each kernel is resampled to `s (kernel_size - 1) + 1` taps by linear interpolation and divided by
    `s^ndim`, so that the discrete convolution approximates the same integral operator; `s (kernel_size - 1)` must
    be an even integer. Padding is circular on a periodic grid and zero on a vertex grid (a zero boundary value).
    Called with `resample=False`, the kernels are used as they are: the plain CNN, whose receptive field shrinks in
    physical units as the grid is refined.

    Sites, for one sample: `lift`, `layers.{i}.pre` (the convolution's output), `layers.{i}.post`,
    `projection.hidden`, `out`.
    """

    lift_weight: Array
    lift_bias: Array
    kernels: list[Array]
    biases: list[Array]
    hidden_weight: Array
    hidden_bias: Array
    out_weight: Array
    out_bias: Array
    in_channels: int = eqx.field(static=True)
    ndim: int = eqx.field(static=True)
    grid: str = eqx.field(static=True)
    base_points: int = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        kernel_size: int,
        depth: int,
        ndim: int,
        grid: str,
        base_points: int,
        projection: int = 128,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `in_channels` (the grid coordinates are added), `out_channels`, `width`, `kernel_size`
        (odd), `depth`, `ndim` (1 or 2), `grid` (`"periodic"` or `"vertex"`), `base_points` (points per axis of
        the grid the kernels are defined on), `projection`, `key`."""
        if grid not in GRIDS:
            raise ValueError(f"ConvolutionalOperator: grid must be one of {GRIDS}, got {grid!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ConvolutionalOperator: kernel_size must be odd and positive, got {kernel_size}")
        if ndim not in (1, 2):
            raise ValueError(f"ConvolutionalOperator: ndim must be 1 or 2, got {ndim}")
        keys = jax.random.split(key, depth + 3)
        self.lift_weight, self.lift_bias = _init_linear(keys[0], width, in_channels + ndim)
        bound = (width * kernel_size**ndim) ** -0.5
        shape = (width, width, *([kernel_size] * ndim))
        self.kernels = [jax.random.uniform(k, shape, minval=-bound, maxval=bound) for k in keys[1 : depth + 1]]
        self.biases = [jnp.zeros(width) for _ in range(depth)]
        self.hidden_weight, self.hidden_bias = _init_linear(keys[-2], projection, width)
        self.out_weight, self.out_bias = _init_linear(keys[-1], out_channels, projection)
        self.in_channels, self.ndim, self.grid, self.base_points = in_channels, ndim, grid, base_points

    def scale(self, points: int) -> float:
        """How many times finer a grid of `points` per axis is than the kernels' grid."""
        if self.grid == "periodic":
            return points / self.base_points
        return (points - 1) / (self.base_points - 1)

    def resampled_kernel(self, kernel: Float[Array, "out in *taps"], scale: float) -> Float[Array, "out in *new"]:
        """`kernel` resampled to a grid `scale` times finer: linear interpolation along each axis, divided by
        `scale^ndim`."""
        taps = kernel.shape[-1]
        span = scale * (taps - 1)
        if abs(span - round(span)) > 1e-9 or round(span) % 2:
            raise ValueError(
                f"ConvolutionalOperator: a grid {scale:g} times finer than the kernels' would need "
                f"{span:g} + 1 taps; the grid must make scale * (kernel_size - 1) an even integer"
            )
        matrix = jnp.asarray(_interpolation_matrix(taps, scale), kernel.dtype)
        for axis in range(2, kernel.ndim):
            kernel = jnp.moveaxis(jnp.tensordot(kernel, matrix, axes=[[axis], [1]]), -1, axis)
        return kernel / scale**self.ndim

    def __call__(
        self, a: Float[Array, " in_channels *grid"], *, resample: bool = True
    ) -> Float[Array, " out_channels *grid"]:
        """The output function on the grid of `a` (all grid axes of the same length); `resample=False` for the
        plain CNN."""
        _check_input(a, self.in_channels, self.ndim, "ConvolutionalOperator")
        shape = a.shape[1:]
        if len(set(shape)) != 1:
            raise ValueError(f"ConvolutionalOperator: every grid axis must have the same length, got {shape}")
        scale = self.scale(shape[0]) if resample else 1.0
        x = jnp.concatenate([a, grid_coordinates(shape, self.grid).astype(a.dtype)])
        v = tag(_pointwise(self.lift_weight, self.lift_bias, x), "lift")
        last = len(self.kernels) - 1
        dims = "HW"[: self.ndim]
        numbers = (f"NC{dims}", f"OI{dims}", f"NC{dims}")
        for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            kernel = self.resampled_kernel(kernel, scale) if not math.isclose(scale, 1.0) else kernel
            half = (kernel.shape[-1] - 1) // 2
            mode = "wrap" if self.grid == "periodic" else "constant"
            padded = jnp.pad(v, [(0, 0)] + [(half, half)] * self.ndim, mode=mode)
            conv = jax.lax.conv_general_dilated(
                padded[None], kernel, (1,) * self.ndim, "VALID", dimension_numbers=numbers
            )[0]
            pre = tag(conv + bias.reshape(-1, *([1] * self.ndim)), f"layers.{i}.pre")
            v = tag(v + (pre if i == last else activation(pre, "gelu")), f"layers.{i}.post")
        hidden = tag(activation(_pointwise(self.hidden_weight, self.hidden_bias, v), "gelu"), "projection.hidden")
        return tag(_pointwise(self.out_weight, self.out_bias, hidden), "out")
