"""A small time-conditioned U-Net for score-based diffusion on images, sized for a CPU.

Inside, activations are channel-last (`[height, width, channels]`): XLA:CPU runs channel-first convolutions several
times slower inside loop bodies (jax-ml/jax#12868), and samplers call the network inside `lax.scan`.
"""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray, Scalar


class Conv(eqx.Module):
    """A 2-D convolution with "SAME" padding on one channel-last image, `[height, width, channels]`."""

    weight: Float[Array, "kh kw cin cout"]
    bias: Float[Array, " cout"]
    stride: int = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, *, key: PRNGKeyArray):
        """**Arguments:**

        - `in_channels`, `out_channels`: channel counts.
        - `kernel_size`: the (square) kernel size.
        - `stride`: the stride in both directions.
        - `key`: a JAX PRNG key; weights and bias are uniform in `+-1/sqrt(fan_in)`.
        """
        wkey, bkey = jr.split(key)
        bound = 1 / math.sqrt(in_channels * kernel_size**2)
        shape = (kernel_size, kernel_size, in_channels, out_channels)
        self.weight = jr.uniform(wkey, shape, minval=-bound, maxval=bound)
        self.bias = jr.uniform(bkey, (out_channels,), minval=-bound, maxval=bound)
        self.stride = stride

    def __call__(self, x: Float[Array, "h w cin"]) -> Float[Array, "h2 w2 cout"]:
        out = jax.lax.conv_general_dilated(
            x[None], self.weight, (self.stride, self.stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return out[0] + self.bias


class GroupNorm(eqx.Module):
    """Group normalisation of one channel-last image with a learned per-channel scale and shift."""

    weight: Float[Array, " c"]
    bias: Float[Array, " c"]
    groups: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(self, channels: int, groups: int = 8, eps: float = 1e-5):
        """**Arguments:**

        - `channels`: the channel count.
        - `groups`: the number of groups (reduced to a divisor of `channels`).
        - `eps`: added to the variance.
        """
        self.weight = jnp.ones(channels)
        self.bias = jnp.zeros(channels)
        self.groups = math.gcd(channels, groups)
        self.eps = eps

    def __call__(self, x: Float[Array, "h w c"]) -> Float[Array, "h w c"]:
        h, w, c = x.shape
        grouped = x.reshape(h, w, self.groups, c // self.groups)
        mean = grouped.mean(axis=(0, 1, 3), keepdims=True)
        var = grouped.var(axis=(0, 1, 3), keepdims=True)
        normalised = ((grouped - mean) * jax.lax.rsqrt(var + self.eps)).reshape(h, w, c)
        return normalised * self.weight + self.bias


class TimeEmbedding(eqx.Module):
    """Sinusoidal features of a diffusion time `t` in [0, 1] (frequencies 1 to 1000) followed by a two-layer MLP."""

    half: int = eqx.field(static=True)
    linear1: eqx.nn.Linear
    linear2: eqx.nn.Linear

    def __init__(self, dim: int, *, key: PRNGKeyArray):
        """**Arguments:**

        - `dim`: the embedding width (even).
        - `key`: a JAX PRNG key for the initialisation.
        """
        self.half = dim // 2
        k1, k2 = jr.split(key)
        self.linear1 = eqx.nn.Linear(2 * self.half, dim, key=k1)
        self.linear2 = eqx.nn.Linear(dim, dim, key=k2)

    def __call__(self, t: Scalar) -> Float[Array, " dim"]:
        angles = t * jnp.exp(jnp.linspace(0.0, math.log(1000.0), self.half))
        features = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)])
        return self.linear2(jax.nn.silu(self.linear1(features)))


class ResidualBlock(eqx.Module):
    """Norm, SiLU, 3x3 conv, plus a time-embedding bias, then norm, SiLU, 3x3 conv; a residual connection."""

    norm1: GroupNorm
    conv1: Conv
    time_proj: eqx.nn.Linear
    norm2: GroupNorm
    conv2: Conv
    skip: Conv | None

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int, *, key: PRNGKeyArray):
        """**Arguments:**

        - `in_channels`, `out_channels`: channel counts.
        - `embed_dim`: width of the time embedding.
        - `key`: a JAX PRNG key for the initialisation.
        """
        k1, k2, k3, k4 = jr.split(key, 4)
        self.norm1 = GroupNorm(in_channels)
        self.conv1 = Conv(in_channels, out_channels, 3, key=k1)
        self.time_proj = eqx.nn.Linear(embed_dim, out_channels, key=k2)
        self.norm2 = GroupNorm(out_channels)
        self.conv2 = Conv(out_channels, out_channels, 3, key=k3)
        self.skip = None if in_channels == out_channels else Conv(in_channels, out_channels, 1, key=k4)

    def __call__(self, x: Float[Array, "h w c"], embedding: Float[Array, " e"]) -> Float[Array, "h w d"]:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.time_proj(jax.nn.silu(embedding))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class ScoreUNet(eqx.Module):
    """A time-conditioned U-Net mapping an image `[channels, height, width]` and a time to an image of that shape.

    One residual block per resolution on the way down, stride-2 convolutions between resolutions, one extra
    residual block at the coarsest resolution, and on the way up nearest-neighbour upsampling, concatenation with
    the skip connection and one residual block. The output convolution starts at zero. The diffusion processes
    read the output as a noise prediction and turn it into a score (`score_from_noise`).
    """

    embedding: TimeEmbedding
    conv_in: Conv
    down_blocks: list[ResidualBlock]
    downsample: list[Conv]
    middle: ResidualBlock
    up_blocks: list[ResidualBlock]
    norm_out: GroupNorm
    conv_out: Conv

    def __init__(
        self,
        channels: int = 1,
        widths: tuple[int, ...] = (32, 64),
        embed_dim: int = 64,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `channels`: image channels.
        - `widths`: feature channels per resolution, finest first; each further entry halves the resolution.
        - `embed_dim`: width of the time embedding.
        - `key`: a JAX PRNG key for the initialisation.
        """
        keys = iter(jr.split(key, 4 + 3 * len(widths)))
        self.embedding = TimeEmbedding(embed_dim, key=next(keys))
        self.conv_in = Conv(channels, widths[0], 3, key=next(keys))
        self.down_blocks = [ResidualBlock(w, w, embed_dim, key=next(keys)) for w in widths]
        self.downsample = [Conv(w_in, w_out, 3, stride=2, key=next(keys)) for w_in, w_out in itertools.pairwise(widths)]
        self.middle = ResidualBlock(widths[-1], widths[-1], embed_dim, key=next(keys))
        ups = [widths[-1]] + list(reversed(widths[1:]))
        self.up_blocks = [
            ResidualBlock(w_in + w_skip, w_skip, embed_dim, key=next(keys))
            for w_in, w_skip in zip(ups, reversed(widths))
        ]
        self.norm_out = GroupNorm(widths[0])
        conv_out = Conv(widths[0], channels, 3, key=next(keys))
        self.conv_out = eqx.tree_at(
            lambda c: (c.weight, c.bias), conv_out, (jnp.zeros_like(conv_out.weight), jnp.zeros_like(conv_out.bias))
        )

    def __call__(self, x: Float[Array, "c h w"], t: Scalar) -> Float[Array, "c h w"]:
        """**Arguments:**

        - `x`: one image (already scaled by the caller).
        - `t`: the diffusion time in [0, 1].

        **Returns:** an array of the shape of `x`.
        """
        embedding = self.embedding(t)
        h = self.conv_in(jnp.transpose(x, (1, 2, 0)))
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, embedding)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.middle(h, embedding)
        for block, skip in zip(self.up_blocks, reversed(skips)):
            if h.shape[:2] != skip.shape[:2]:
                h = jax.image.resize(h, skip.shape[:2] + h.shape[2:], method="nearest")
            h = block(jnp.concatenate([h, skip], axis=-1), embedding)
        out = self.conv_out(jax.nn.silu(self.norm_out(h)))
        return jnp.transpose(out, (2, 0, 1))
