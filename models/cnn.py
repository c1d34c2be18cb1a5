"""A small convolutional image classifier."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.composites import ACTIVATIONS
from jaxinterp.composites import activation as apply_activation
from jaxinterp.sites import tag


def _average_pool_2x2(x: Float[Array, "channels height width"]) -> Float[Array, "channels height//2 width//2"]:
    """Mean over non-overlapping 2x2 windows; an odd last row or column is dropped."""
    channels, height, width = x.shape
    x = x[:, : height - height % 2, : width - width % 2]
    return x.reshape(channels, height // 2, 2, width // 2, 2).mean(axis=(2, 4))


class CNN(eqx.Module):
    """Stages of 3x3 convolution (SAME padding), elementwise activation and 2x2 average pooling, then a linear head
    on the flattened result.

    Written for one image of shape `[channels, height, width]`; batch with `jax.vmap`. Use `features` as a feature
    extractor: it returns what the head sees.

    Sites: `convs.{i}.pre` (the convolution output of stage `i`), `convs.{i}.post` (after the activation),
    `convs.{i}.pooled` (after pooling), `features` (the flattened input to the head) and `logits`.
    """

    convs: tuple[eqx.nn.Conv2d, ...]
    head: eqx.nn.Linear
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        channels: Sequence[int],
        num_classes: int,
        activation: str = "relu",
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`: the number of channels of the input image.
        - `image_size`: the height and width of the (square) input image.
        - `channels`: the number of output channels of each stage, first to last; each stage halves the height
            and width (rounding down).
        - `num_classes`: the number of logits.
        - `activation`: the nonlinearity after every convolution, one of the kinds that
            `jaxinterp.composites.activation` accepts ("relu", "gelu", "gelu_new", "silu", "tanh", "sigmoid").
        - `key`: a PRNG key for the initial weights.
        """
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        final_size = image_size
        for _ in channels:
            final_size //= 2
        if final_size < 1:
            raise ValueError(f"{len(channels)} pooling stages shrink a {image_size}x{image_size} image to nothing")
        stage_channels = (in_channels, *channels)
        *conv_keys, head_key = jax.random.split(key, len(channels) + 1)
        self.convs = tuple(
            eqx.nn.Conv2d(c_in, c_out, kernel_size=3, padding="SAME", key=conv_key)
            for c_in, c_out, conv_key in zip(stage_channels[:-1], stage_channels[1:], conv_keys)
        )
        self.head = eqx.nn.Linear(stage_channels[-1] * final_size**2, num_classes, key=head_key)
        self.activation = activation

    @property
    def feature_size(self) -> int:
        """The length of the vector that `features` returns."""
        return self.head.in_features

    def features(self, image: Float[Array, "channels height width"]) -> Float[Array, " feature_size"]:
        """The penultimate representation of one image.

        **Arguments:**

        - `image`: one image, `[channels, height, width]`.

        **Returns:**

        The flattened output of the last stage, the vector the linear head reads.
        """
        x = image
        for i, conv in enumerate(self.convs):
            x = tag(conv(x), f"convs.{i}.pre")
            x = tag(apply_activation(x, self.activation), f"convs.{i}.post")
            x = tag(_average_pool_2x2(x), f"convs.{i}.pooled")
        return tag(jnp.ravel(x), "features")

    def __call__(self, image: Float[Array, "channels height width"]) -> Float[Array, " num_classes"]:
        """**Arguments:**

        - `image`: one image, `[channels, height, width]`.

        **Returns:**

        The logits.
        """
        return tag(self.head(self.features(image)), "logits")
