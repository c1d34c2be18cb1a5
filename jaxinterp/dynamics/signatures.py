"""Truncated path signatures and log-signatures in JAX, with time augmentation and a basepoint.

The signature of a path `X: [0, T] -> R^d` is the sequence of its iterated integrals; truncated at depth `N` it is
the element `S(X) = (1, S_1, ..., S_N)` of the tensor algebra, `S_k` a `d^k` tensor. For a piecewise-linear path
through points `x_0, ..., x_L` it is the product, by Chen's relation, of the exponentials of the increments
`D_j = x_j - x_{j-1}`:

```
S(X) = exp(D_1) (x) exp(D_2) (x) ... (x) exp(D_L),        exp(D) = (1, D, D^{(x)2} / 2!, ..., D^{(x)N} / N!)
```

computed with one `lax.scan` over the increments, each step the fused `S (x) exp(D)` (Horner's scheme, level by
level). Flat layout: the levels `1..N` concatenated (level 0, always 1, is left out), each level in row-major order,
so the coordinate of the word `i_1 ... i_k` is at `offset_k + sum_m i_m d^(k - m)`: the layout of iisignature and
signatory. Everything here is jit-able, differentiable, and takes any leading batch axes (vmapped). The formulas
are in `docs/signatures.md`.
"""

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def signature_size(channels: int, depth: int) -> int:
    """The length of a flattened signature: `d + d^2 + ... + d^N`.

    **Arguments:**

    - `channels`: the path's number of channels `d` (after any time augmentation).
    - `depth`: the truncation depth `N`.

    **Returns:** the number of coordinates of levels `1..N`.
    """
    _check_depth(depth, "signature_size")
    return sum(channels**k for k in range(1, depth + 1))


def _check_depth(depth: int, where: str) -> None:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"{where}: depth must be a positive int, got {depth!r}")


def _channels_of(size: int, depth: int, where: str) -> int:
    channels = 1
    while signature_size(channels, depth) < size:
        channels += 1
    if signature_size(channels, depth) != size:
        raise ValueError(f"{where}: {size} coordinates is no signature of depth {depth} (d + d^2 + ... + d^{depth})")
    return channels


def split_levels(flat: Float[Array, "*batch size"], depth: int) -> list[Array]:
    """Split flattened signatures (or log-signatures) into their levels.

    **Arguments:**

    - `flat`: `[..., d + ... + d^N]`, as `signature` returns.
    - `depth`: the truncation depth `N`.

    **Returns:** the list `[S_1, ..., S_N]`, `S_k` of shape `[..., d, ..., d]` (`k` axes of size `d`).
    """
    _check_depth(depth, "split_levels")
    channels = _channels_of(flat.shape[-1], depth, "split_levels")
    batch = flat.shape[:-1]
    levels, offset = [], 0
    for k in range(1, depth + 1):
        levels.append(flat[..., offset : offset + channels**k].reshape(*batch, *([channels] * k)))
        offset += channels**k
    return levels


def _flatten(levels: list[Array]) -> Array:
    return jnp.concatenate([level.reshape(-1) for level in levels])


def _outer(a: Array, b: Array) -> Array:
    """The tensor product of two (unbatched) tensors, the indices of `a` first."""
    return a.reshape(*a.shape, *([1] * b.ndim)) * b


def _times_exp(levels: list[Array], increment: Array) -> list[Array]:
    """`S (x) exp(increment)`, truncated at `len(levels)`: level `k` is `sum_i S_i (x) increment^(k - i) / (k - i)!`,
    evaluated by Horner's scheme."""
    result = []
    for k in range(1, len(levels) + 1):
        acc = increment / k
        for i in range(1, k):
            acc = _outer(acc + levels[i - 1], increment) / (k - i)
        result.append(acc + levels[k - 1])
    return result


def _product(a: list[Array], b: list[Array]) -> list[Array]:
    """`(1 + a) (x) (1 + b)`, truncated at `len(a)`."""
    result = []
    for k in range(1, len(a) + 1):
        level = a[k - 1] + b[k - 1]
        for i in range(1, k):
            level = level + _outer(a[i - 1], b[k - i - 1])
        result.append(level)
    return result


def _product_no_unit(a: list[Array], b: list[Array]) -> list[Array]:
    """`a (x) b` for two tensors without scalar term, truncated at `len(a)`."""
    result = [jnp.zeros_like(a[0])]
    for k in range(2, len(a) + 1):
        level = _outer(a[0], b[k - 2])
        for i in range(2, k):
            level = level + _outer(a[i - 1], b[k - i - 1])
        result.append(level)
    return result


def _log(levels: list[Array]) -> list[Array]:
    """`log(1 + x) = sum_{n=1}^N (-1)^(n + 1) x^(x)n / n`, truncated at `N = len(levels)`."""
    depth = len(levels)
    power = levels
    result = list(levels)
    for n in range(2, depth + 1):
        power = _product_no_unit(power, levels)
        result = [r + ((-1) ** (n + 1) / n) * p for r, p in zip(result, power)]
    return result


def augment_path(
    path: Float[ArrayLike, "*batch length channels"],
    *,
    add_time: bool = False,
    times: Float[ArrayLike, "*#time_batch length"] | None = None,
    basepoint: bool | Float[ArrayLike, "*#point_batch channels"] = False,
) -> Float[Array, "*batch new_length new_channels"]:
    """Add a time channel and a basepoint to a path, as `signature` does before it integrates.

    **Arguments:**

    - `path`: `[..., length, channels]`, the points of a piecewise-linear path.
    - `add_time`: whether to add time as a first channel: `times`, or `0, 1/(length-1), ..., 1` if `times` is `None`.
    - `times`: the observation times, `[length]` or with batch axes; only with `add_time=True`.
    - `basepoint`: `False` for none; `True` to start the path from the origin; or a point `[channels]` (with batch
        axes if wanted) to start it from. The point is prepended after time augmentation, with the first time as
        its time coordinate for a given point, and 0 for `True` (so with times starting at 0, `True` is the origin
        in every channel, signatory's `basepoint=True` on a time-augmented path).

    **Returns:** the augmented path, `[..., length + (1 if basepoint), channels + (1 if add_time)]`.
    """
    path = jnp.asarray(path)
    if not jnp.issubdtype(path.dtype, jnp.floating):
        path = path.astype(jnp.float32)
    if path.ndim < 2:
        raise ValueError(f"augment_path: a path is [..., length, channels], got shape {path.shape}")
    if times is not None and not add_time:
        raise ValueError("augment_path: times were given but add_time is False; pass add_time=True to use them")
    batch, length = path.shape[:-2], path.shape[-2]
    time_channel = None
    if add_time:
        if times is None:
            times = jnp.linspace(0.0, 1.0, length, dtype=path.dtype)
        times = jnp.asarray(times, dtype=path.dtype)
        if times.shape[-1] != length:
            raise ValueError(f"augment_path: times have length {times.shape[-1]}, the path {length}")
        time_channel = jnp.broadcast_to(times, (*batch, length))[..., None]
        path = jnp.concatenate([time_channel, path], axis=-1)
    if basepoint is False:
        return path
    if basepoint is True:
        start = jnp.zeros((*batch, 1, path.shape[-1]), dtype=path.dtype)
    else:
        point = jnp.asarray(basepoint, dtype=path.dtype)
        channels = path.shape[-1] - (1 if add_time else 0)
        if point.shape[-1:] != (channels,):
            raise ValueError(f"augment_path: basepoint has shape {point.shape}, expected [..., {channels}]")
        point = jnp.broadcast_to(point, (*batch, channels))[..., None, :]
        if add_time:
            point = jnp.concatenate([time_channel[..., :1, :], point], axis=-1)
        start = point
    return jnp.concatenate([start, path], axis=-2)


def _signature_one(path: Array, depth: int) -> Array:
    channels = path.shape[-1]
    identity = [jnp.zeros((channels,) * k, dtype=path.dtype) for k in range(1, depth + 1)]

    def step(levels, increment):
        return _times_exp(levels, increment), None

    levels, _ = jax.lax.scan(step, identity, jnp.diff(path, axis=0))
    return _flatten(levels)


def _logsignature_one(path: Array, depth: int) -> Array:
    return _flatten(_log(split_levels(_signature_one(path, depth), depth)))


@functools.partial(jax.jit, static_argnames=("fn", "depth"))
def _batched(path: Array, fn, depth: int) -> Array:
    """`fn(one path, depth)` over the leading axes of `path`, compiled once per shape and depth."""
    batch = path.shape[:-2]
    flat = path.reshape(-1, *path.shape[-2:])
    out = jax.vmap(lambda p: fn(p, depth))(flat)
    return out.reshape(*batch, out.shape[-1])


def signature(
    path: Float[ArrayLike, "*batch length channels"],
    depth: int,
    *,
    add_time: bool = False,
    times: Float[ArrayLike, "*#time_batch length"] | None = None,
    basepoint: bool | Float[ArrayLike, "*#point_batch channels"] = False,
) -> Float[Array, "*batch size"]:
    """The signature of a piecewise-linear path, truncated at `depth`.

    **Arguments:**

    - `path`: `[..., length, channels]`, the points of the path (any leading batch axes).
    - `depth`: the truncation depth `N >= 1` (static).
    - `add_time`, `times`, `basepoint`: time augmentation and basepoint, as `augment_path`.

    **Returns:** `[..., d + d^2 + ... + d^N]` (`d` the channels after augmentation), levels `1..N` flattened row-major
    and concatenated (the layout of iisignature); a path of one point has signature 0 (the unit, level 0 left out).
    """
    _check_depth(depth, "signature")
    path = augment_path(path, add_time=add_time, times=times, basepoint=basepoint)
    return _batched(path, _signature_one, depth)


def logsignature(
    path: Float[ArrayLike, "*batch length channels"],
    depth: int,
    *,
    add_time: bool = False,
    times: Float[ArrayLike, "*#time_batch length"] | None = None,
    basepoint: bool | Float[ArrayLike, "*#point_batch channels"] = False,
) -> Float[Array, "*batch size"]:
    """The log-signature of a piecewise-linear path, truncated at `depth`, in tensor coordinates.

    `log S(X)` in the tensor algebra, `log(1 + x) = x - x^2/2 + x^3/3 - ...`. It is a Lie series, and here it is
    given in the coordinates of the tensor algebra (the layout of `signature`, iisignature's "expanded" log
    signature), not in a basis of the free Lie algebra, so it has as many coordinates as the signature.

    **Arguments:** as `signature`.

    **Returns:** `[..., d + d^2 + ... + d^N]`, laid out as `signature`.
    """
    _check_depth(depth, "logsignature")
    path = augment_path(path, add_time=add_time, times=times, basepoint=basepoint)
    return _batched(path, _logsignature_one, depth)


def signature_combine(
    first: Float[ArrayLike, "*batch size"], second: Float[ArrayLike, "*batch size"], depth: int
) -> Float[Array, "*batch size"]:
    """The product of two signatures in the truncated tensor algebra: the signature of the concatenated path.

    By Chen's relation, if `first` is the signature of a path ending where the path of `second` starts (or of any
    path: signatures do not see translations), `first (x) second` is the signature of the two run one after the
    other.

    **Arguments:**

    - `first`, `second`: flattened signatures `[..., size]` of the same depth and channels (batch axes broadcast).
    - `depth`: their truncation depth.

    **Returns:** the flattened product, `[..., size]`.
    """
    _check_depth(depth, "signature_combine")
    first, second = jnp.broadcast_arrays(jnp.asarray(first), jnp.asarray(second))
    _channels_of(first.shape[-1], depth, "signature_combine")
    return _combine(first, second, depth)


@functools.partial(jax.jit, static_argnames="depth")
def _combine(first: Array, second: Array, depth: int) -> Array:
    batch, size = first.shape[:-1], first.shape[-1]

    def one(a, b):
        return _flatten(_product(split_levels(a, depth), split_levels(b, depth)))

    out = jax.vmap(one)(first.reshape(-1, size), second.reshape(-1, size))
    return out.reshape(*batch, size)
