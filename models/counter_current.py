"""Dual networks for counter-current learning (Kao and Hariharan, NeurIPS 2024): a forward network and a feedback
network of the same depth, feedback layer `l` mapping the output space of forward layer `l` back to its input space.

Each model has `forward_layers` and `feedback_layers` (tuples of layers written for one example, input end first),
the two stacks that `jaxinterp.learning.counter_current_loss` takes, and a `__call__` that runs the forward network
alone (what is used for prediction, and what backpropagation or feedback alignment would train).
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.composites import ACTIVATIONS

_ACTIVATIONS = {**ACTIVATIONS, "elu": jax.nn.elu}


def _check_activation(activation: str) -> None:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(_ACTIVATIONS)}")


def _activate(x: Array, activation: str | None) -> Array:
    return x if activation is None else _ACTIVATIONS[activation](x)


class Dense(eqx.Module):
    """An affine map (a linear one with `use_bias=False`) followed by an activation (none when `activation` is
    `None`), optionally reshaping its input to a vector first (`flatten`) or its output to `out_shape`."""

    linear: eqx.nn.Linear
    activation: str | None = eqx.field(static=True)
    flatten: bool = eqx.field(static=True)
    out_shape: tuple[int, ...] | None = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int,
        activation: str | None,
        *,
        flatten: bool = False,
        out_shape: tuple[int, ...] | None = None,
        use_bias: bool = True,
        key: PRNGKeyArray,
    ):
        self.linear = eqx.nn.Linear(in_size, out_size, use_bias=use_bias, key=key)
        self.activation = activation
        self.flatten = flatten
        self.out_shape = out_shape

    def __call__(self, x: Array) -> Array:
        y = _activate(self.linear(jnp.ravel(x) if self.flatten else x), self.activation)
        return y if self.out_shape is None else y.reshape(self.out_shape)


class DownConv(eqx.Module):
    """A 3x3 convolution of stride 2 (SAME padding: the height and width are halved, rounding up) and an
    activation; takes and returns `[channels, height, width]`."""

    conv: eqx.nn.Conv2d
    activation: str | None = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, activation: str | None, *, key: PRNGKeyArray):
        self.conv = eqx.nn.Conv2d(in_channels, out_channels, 3, stride=2, padding="SAME", key=key)
        self.activation = activation

    def __call__(self, x: Float[Array, "c h w"]) -> Array:
        return _activate(self.conv(x), self.activation)


class UpConv(eqx.Module):
    """Nearest-neighbour upsampling by 2, a 3x3 convolution of stride 1 (SAME padding) and an activation: the
    mirror of a `DownConv` on even sizes."""

    conv: eqx.nn.Conv2d
    activation: str | None = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, activation: str | None, *, key: PRNGKeyArray):
        self.conv = eqx.nn.Conv2d(in_channels, out_channels, 3, padding="SAME", key=key)
        self.activation = activation

    def __call__(self, x: Float[Array, "c h w"]) -> Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return _activate(self.conv(x), self.activation)


class _DualNetwork(eqx.Module):
    forward_layers: tuple[eqx.Module, ...]
    feedback_layers: tuple[eqx.Module, ...]

    def __call__(self, x: Array) -> Array:
        """**Arguments:**

        - `x`: one input (for the MLP a vector; for the convolutional models `[channels, height, width]`).

        **Returns:** the forward network's output (the logits, or the reconstruction).
        """
        for layer in self.forward_layers:
            x = layer(x)
        return x

    def feedback(self, t: Array) -> Array:
        """The feedback network's output `c_0` for one top-end input `t` (a one-hot class code, or an image)."""
        for layer in reversed(self.feedback_layers):
            t = layer(t)
        return t


class CounterCurrentMLP(_DualNetwork):
    """A fully connected dual network: forward `in_size -> hidden_sizes -> num_classes` (an activation after every
    layer but the last, which gives the logits) and feedback `num_classes -> reversed(hidden_sizes) -> in_size` (an
    activation after every layer but the last, which returns to the input space).

    Written for one flattened example; batch with `jax.vmap`.
    """

    num_classes: int = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        hidden_sizes: Sequence[int],
        num_classes: int,
        activation: str = "elu",
        *,
        use_bias: bool = False,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: the length of the input vector.
        - `hidden_sizes`: the widths of the hidden layers, input end first.
        - `num_classes`: the number of logits (and the length of the feedback network's one-hot input).
        - `activation`: "elu" (the paper's) or any kind of `jaxinterp.composites.activation`.
        - `use_bias`: give every layer of both networks a bias (the authors' MLPs have none).
        - `key`: a PRNG key for the initial weights.
        """
        _check_activation(activation)
        sizes = (in_size, *hidden_sizes, num_classes)
        depth = len(sizes) - 1
        forward_keys, feedback_keys = jax.random.split(key, (2, depth))
        self.forward_layers = tuple(
            Dense(sizes[i], sizes[i + 1], activation if i < depth - 1 else None, use_bias=use_bias, key=forward_keys[i])
            for i in range(depth)
        )
        self.feedback_layers = tuple(
            Dense(sizes[i + 1], sizes[i], activation if i > 0 else None, use_bias=use_bias, key=feedback_keys[i])
            for i in range(depth)
        )
        self.num_classes = num_classes

    def class_codes(self) -> Float[Array, "classes classes"]:
        """The feedback network's inputs for classification: the one-hot code of every class, one per row."""
        return jnp.eye(self.num_classes)


class CounterCurrentCNN(_DualNetwork):
    """A convolutional dual network: forward stages of stride-2 3x3 convolutions with an activation, then a linear
    head on the flattened result (the logits); feedback: a linear map from the one-hot class code to the last
    stage's shape, then, stage by stage, upsampling and a 3x3 convolution back to each stage's input channels (no
    activation on the last, which returns to the image).

    Written for one image `[channels, height, width]`; batch with `jax.vmap`.
    """

    num_classes: int = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        channels: Sequence[int],
        num_classes: int,
        activation: str = "elu",
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`: the channels of the input image.
        - `image_size`: its height and width; each stage halves it, so it must be divisible by
            `2 ** len(channels)` for the feedback network to return to the same sizes.
        - `channels`: the output channels of each stage, input end first.
        - `num_classes`: the number of logits.
        - `activation`: "elu" (the paper's) or any kind of `jaxinterp.composites.activation`.
        - `key`: a PRNG key for the initial weights.
        """
        _check_activation(activation)
        final_size = _final_size(image_size, len(channels), "CounterCurrentCNN")
        stage_channels = (in_channels, *channels)
        forward_keys, feedback_keys = jax.random.split(key, (2, len(channels) + 1))
        convs = [
            DownConv(stage_channels[i], stage_channels[i + 1], activation, key=forward_keys[i])
            for i in range(len(channels))
        ]
        features = stage_channels[-1] * final_size**2
        head = Dense(features, num_classes, None, flatten=True, key=forward_keys[-1])
        self.forward_layers = (*convs, head)
        back = [
            UpConv(stage_channels[i + 1], stage_channels[i], activation if i > 0 else None, key=feedback_keys[i])
            for i in range(len(channels))
        ]
        head_back = Dense(
            num_classes, features, activation, out_shape=(stage_channels[-1], final_size, final_size),
            key=feedback_keys[-1],
        )  # fmt: skip
        self.feedback_layers = (*back, head_back)
        self.num_classes = num_classes

    def class_codes(self) -> Float[Array, "classes classes"]:
        """The feedback network's inputs for classification: the one-hot code of every class, one per row."""
        return jnp.eye(self.num_classes)


class CounterCurrentAutoencoder(_DualNetwork):
    """A convolutional autoencoder as a dual network: the forward network encodes the image with stride-2
    convolutions and decodes it with upsampling convolutions back to the image (no activation on the last layer);
    the feedback network, fed the image itself, mirrors every layer (a decoder layer by a stride-2 convolution, an
    encoder layer by an upsampling convolution), so the two meet at the bottleneck from opposite ends.

    Written for one image `[channels, height, width]`; batch with `jax.vmap`.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        channels: Sequence[int],
        activation: str = "elu",
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`: the channels of the image.
        - `image_size`: its height and width, divisible by `2 ** len(channels)`.
        - `channels`: the output channels of each encoder stage; the decoder mirrors them.
        - `activation`: "elu" (the paper's) or any kind of `jaxinterp.composites.activation`.
        - `key`: a PRNG key for the initial weights.
        """
        _check_activation(activation)
        _final_size(image_size, len(channels), "CounterCurrentAutoencoder")
        stage_channels = (in_channels, *channels)
        n = len(channels)
        forward_keys, feedback_keys = jax.random.split(key, (2, 2 * n))
        encoder = [
            DownConv(stage_channels[i], stage_channels[i + 1], activation, key=forward_keys[i]) for i in range(n)
        ]
        decoder = [
            UpConv(stage_channels[i + 1], stage_channels[i], activation if i > 0 else None, key=forward_keys[n + i])
            for i in reversed(range(n))
        ]
        self.forward_layers = (*encoder, *decoder)
        encoder_back = [
            UpConv(stage_channels[i + 1], stage_channels[i], activation if i > 0 else None, key=feedback_keys[i])
            for i in range(n)
        ]
        decoder_back = [
            DownConv(stage_channels[i], stage_channels[i + 1], activation, key=feedback_keys[n + i])
            for i in reversed(range(n))
        ]
        self.feedback_layers = (*encoder_back, *decoder_back)


def _final_size(image_size: int, stages: int, name: str) -> int:
    if stages < 1:
        raise ValueError(f"{name}: give at least one convolutional stage")
    if image_size % 2**stages != 0:
        raise ValueError(
            f"{name}: image_size {image_size} is not divisible by 2 ** {stages}; the feedback network's upsampling "
            "would not return to the forward network's sizes"
        )
    return image_size // 2**stages
