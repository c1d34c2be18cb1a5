"""The SDE-GAN of P22 (Kidger, "On neural differential equations", ch. 5; Kidger et al. 2021): a neural SDE
generator trained as a Wasserstein GAN against a neural CDE discriminator, with the discriminator's Lipschitz
constant controlled by weight clipping (the thesis's choice, with LipSwish activations) or by a gradient penalty.

Both networks are discretised on the data's time grid `ts` (as P31 does for its generators), so that one training
step costs a fixed number of network evaluations:

```
generator:      h_0 = zeta(v),  v ~ N(0, I);   h_{i+1} = h_i + mu(t_i, h_i) dt_i + sigma(t_i, h_i) dW_i;   y_i = l(h_i)
discriminator:  H_0 = xi(t_0, y_0);            H_{i+1} = H_i + (f(t_i, H_i) + f(t_{i+1}, H~_{i+1})) dY_i / 2;   D = m . H_N
```

(Euler-Maruyama, Ito, for the generator; Heun's method for the CDE `dH = f(t, H) dY` driven by the piecewise-linear
path `Y = (t, y)`, with `H~_{i+1} = H_i + f(t_i, H_i) dY_i`). `mu`, `sigma` and `f` end in `tanh`. The formulas are
in `docs/generative_sdes.md`.

`SDEGenerator` and `CDEDiscriminator` are written for one path (batch with `jax.vmap`); `SDEGAN` holds the pair and
its Lipschitz control, and `train_sde_gan` trains it.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray
from tqdm.auto import tqdm

from .neural_ode import ONE_EXAMPLE_HINT, check_shape

LIPSCHITZ_CONTROLS = ("clip", "gradient_penalty")


def lipswish(x: Array) -> Array:
    """`0.909 * x * sigmoid(x)`: SiLU scaled to be 1-Lipschitz (the activation of Kidger et al.'s SDE-GANs)."""
    return 0.909 * jax.nn.silu(x)


def lipswish_mlp(in_size: int, out_size: int, width: int, depth: int, *, tanh: bool, key: PRNGKeyArray) -> eqx.nn.MLP:
    """An MLP with `depth` hidden layers of `width` LipSwish units, ending in `tanh` when `tanh` is true."""
    final = jnp.tanh if tanh else (lambda x: x)
    return eqx.nn.MLP(in_size, out_size, width, depth, activation=lipswish, final_activation=final, key=key)


def euler_maruyama(
    drift: Callable[[Array, Array], Array],
    diffusion: Callable[[Array, Array], Array],
    x0: Float[Array, " size"],
    ts: Float[Array, " times"],
    increments: Float[Array, "steps noise"],
) -> Float[Array, "times size"]:
    """The Euler-Maruyama scheme (Ito) on the grid `ts`: `x_{i+1} = x_i + b(i, x_i) dt_i + s(i, x_i) dW_i`.

    **Arguments:**

    - `drift`: `b(i, x) -> [size]`, given the step's index (an int array) and the state.
    - `diffusion`: `s(i, x) -> [size, noise]`.
    - `x0`: the initial state.
    - `ts`: the grid, increasing.
    - `increments`: the Brownian increments `dW_i ~ N(0, dt_i I)`, one row per step.

    **Returns:** the states at every time of `ts`, `[times, size]`.
    """
    dts = jnp.diff(ts)

    def step(x, inputs):
        i, dt, dw = inputs
        x = x + drift(i, x) * dt + diffusion(i, x) @ dw
        return x, x

    _, xs = jax.lax.scan(step, x0, (jnp.arange(len(dts)), dts, increments))
    return jnp.concatenate([x0[None], xs])


def brownian_increments(ts: Float[Array, " times"], noise_size: int, key: PRNGKeyArray) -> Float[Array, "steps noise"]:
    """Independent Brownian increments on the grid `ts`: `dW_i ~ N(0, (t_{i+1} - t_i) I)`, `[times - 1, noise]`."""
    dts = jnp.diff(ts)
    return jnp.sqrt(dts)[:, None] * jax.random.normal(key, (len(dts), noise_size), ts.dtype)


class SDEGenerator(eqx.Module):
    """A neural SDE generator of paths: Gaussian noise -> initial hidden state -> Euler-Maruyama over the grid ->
    linear readout. Drift and diffusion are LipSwish MLPs of `[t, h]` ending in `tanh`; the noise is general
    (`[hidden, noise]`)."""

    initial: eqx.nn.MLP
    drift: eqx.nn.MLP
    diffusion: eqx.nn.MLP
    readout: eqx.nn.Linear
    initial_noise_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    noise_size: int = eqx.field(static=True)

    def __init__(
        self,
        data_size: int,
        hidden_size: int,
        width: int,
        depth: int,
        *,
        noise_size: int | None = None,
        initial_noise_size: int | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `data_size`: channels of a generated path.
        - `hidden_size`: the SDE's state size.
        - `width`, `depth`: the MLPs' hidden width and number of hidden layers.
        - `noise_size`: the Brownian motion's dimension (default `hidden_size`).
        - `initial_noise_size`: the dimension of the noise `v` mapped to `h_0` (default `hidden_size`).
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.hidden_size = hidden_size
        self.noise_size = hidden_size if noise_size is None else noise_size
        self.initial_noise_size = hidden_size if initial_noise_size is None else initial_noise_size
        self.initial = lipswish_mlp(self.initial_noise_size, hidden_size, width, depth, tanh=False, key=k1)
        self.drift = lipswish_mlp(1 + hidden_size, hidden_size, width, depth, tanh=True, key=k2)
        self.diffusion = lipswish_mlp(1 + hidden_size, hidden_size * self.noise_size, width, depth, tanh=True, key=k3)
        self.readout = eqx.nn.Linear(hidden_size, data_size, key=k4)

    def __call__(self, ts: Float[Array, " times"], *, key: PRNGKeyArray) -> Float[Array, "times data"]:
        """One generated path on the grid `ts`, `[times, data]`."""
        check_shape("SDEGenerator", "ts", ts, (None,), ONE_EXAMPLE_HINT)
        init_key, noise_key = jax.random.split(key)
        h0 = self.initial(jax.random.normal(init_key, (self.initial_noise_size,), ts.dtype))

        def drift(i, h):
            return self.drift(jnp.concatenate([ts[i, None], h]))

        def diffusion(i, h):
            return self.diffusion(jnp.concatenate([ts[i, None], h])).reshape(self.hidden_size, self.noise_size)

        hs = euler_maruyama(drift, diffusion, h0, ts, brownian_increments(ts, self.noise_size, noise_key))
        return jax.vmap(self.readout)(hs)


class CDEDiscriminator(eqx.Module):
    """A neural CDE discriminator: `H_0 = xi(t_0, y_0)`, `dH = f(t, H) d(t, y)` over the piecewise-linear path of
    the data, solved with Heun's method on the data's grid, and the score `m . H_T` (a scalar, unbounded: the critic
    of a Wasserstein GAN)."""

    initial: eqx.nn.MLP
    vector_field: eqx.nn.MLP
    readout: eqx.nn.Linear
    hidden_size: int = eqx.field(static=True)
    data_size: int = eqx.field(static=True)

    def __init__(self, data_size: int, hidden_size: int, width: int, depth: int, *, key: PRNGKeyArray):
        """**Arguments:**

        - `data_size`: channels of a path (time is added as one more).
        - `hidden_size`: the size of `H`.
        - `width`, `depth`: the MLPs' hidden width and number of hidden layers.
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2, k3 = jax.random.split(key, 3)
        self.hidden_size, self.data_size = hidden_size, data_size
        self.initial = lipswish_mlp(1 + data_size, hidden_size, width, depth, tanh=False, key=k1)
        self.vector_field = lipswish_mlp(
            1 + hidden_size, hidden_size * (1 + data_size), width, depth, tanh=True, key=k2
        )
        self.readout = eqx.nn.Linear(hidden_size, 1, key=k3)

    def _field(self, t, h):
        return self.vector_field(jnp.concatenate([t[None], h])).reshape(self.hidden_size, 1 + self.data_size)

    def __call__(self, ts: Float[Array, " times"], ys: Float[Array, "times data"]) -> Float[Array, ""]:
        """The score of one path `ys` observed at `ts`."""
        check_shape("CDEDiscriminator", "ys", ys, (ts.shape[0], self.data_size), ONE_EXAMPLE_HINT)
        path = jnp.concatenate([ts[:, None], ys], axis=1)
        h0 = self.initial(path[0])

        def step(h, inputs):
            t0, t1, dy = inputs
            slope = self._field(t0, h) @ dy
            predicted = h + slope
            return h + 0.5 * (slope + self._field(t1, predicted) @ dy), None

        h1, _ = jax.lax.scan(step, h0, (ts[:-1], ts[1:], jnp.diff(path, axis=0)))
        return self.readout(h1)[0]


def _is_linear(node) -> bool:
    return isinstance(node, eqx.nn.Linear)


def _clip_bound(layer: eqx.nn.Linear) -> float:
    return 1.0 / (1 if layer.out_features == "scalar" else layer.out_features)


def clip_weights(discriminator: eqx.Module) -> eqx.Module:
    """Clip the weights of every linear layer to `[-1 / out_features, 1 / out_features]` (biases untouched): the
    Lipschitz control of Kidger et al.'s SDE-GAN, which with 1-Lipschitz LipSwish activations keeps every layer's
    infinity-norm at most `in_features / out_features`.

    **Arguments:**

    - `discriminator`: any equinox Module; its `eqx.nn.Linear` layers are clipped.

    **Returns:** the clipped Module.
    """

    def clip(node):
        if not _is_linear(node):
            return node
        bound = _clip_bound(node)
        return eqx.tree_at(lambda m: m.weight, node, jnp.clip(node.weight, -bound, bound))

    return jax.tree_util.tree_map(clip, discriminator, is_leaf=_is_linear)


def weights_within_clip(discriminator: eqx.Module) -> bool:
    """Whether every linear layer's weights lie in `[-1 / out_features, 1 / out_features]`."""
    layers = [n for n in jax.tree_util.tree_leaves(discriminator, is_leaf=_is_linear) if _is_linear(n)]
    return all(bool(jnp.all(jnp.abs(n.weight) <= _clip_bound(n) * (1 + 1e-6))) for n in layers)


def gradient_penalty(
    discriminator: Callable[[Array, Array], Array],
    ts: Float[Array, " times"],
    real: Float[Array, "batch times data"],
    fake: Float[Array, "batch times data"],
    *,
    key: PRNGKeyArray,
) -> Float[Array, ""]:
    """The WGAN-GP penalty `E (|grad_y D(y^)| - 1)^2` at `y^ = u real + (1 - u) fake`, `u ~ U[0, 1]` per path.

    **Arguments:**

    - `discriminator`: the critic, `D(ts, path) -> score`.
    - `ts`: the grid.
    - `real`, `fake`: paired batches of paths.
    - `key`: draws `u`.

    **Returns:** the scalar penalty.
    """
    u = jax.random.uniform(key, (real.shape[0], 1, 1), real.dtype)
    mixed = u * real + (1 - u) * fake
    grads = jax.vmap(jax.grad(lambda y: discriminator(ts, y)))(mixed)
    norms = jnp.sqrt(jnp.sum(grads**2, axis=(1, 2)) + 1e-12)
    return jnp.mean((norms - 1.0) ** 2)


class SDEGAN(eqx.Module):
    """An SDE-GAN: an `SDEGenerator`, a `CDEDiscriminator`, and how the discriminator's Lipschitz constant is
    controlled (`"clip"`, the thesis's choice and the default, or `"gradient_penalty"` with `penalty_weight`)."""

    generator: SDEGenerator
    discriminator: CDEDiscriminator
    lipschitz: str = eqx.field(static=True)
    penalty_weight: float = eqx.field(static=True)

    def __init__(
        self,
        data_size: int,
        hidden_size: int,
        width: int,
        depth: int,
        *,
        discriminator_hidden_size: int | None = None,
        noise_size: int | None = None,
        lipschitz: str = "clip",
        penalty_weight: float = 10.0,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `data_size`: channels of a path.
        - `hidden_size`, `width`, `depth`: the generator's (and by default the discriminator's) sizes.
        - `discriminator_hidden_size`: the size of the discriminator's `H` (default `hidden_size`).
        - `noise_size`: the generator's Brownian dimension (default `hidden_size`).
        - `lipschitz`: `"clip"` (weight clipping, applied after every discriminator update) or
            `"gradient_penalty"`.
        - `penalty_weight`: the gradient penalty's weight.
        - `key`: a PRNG key for the initial weights.
        """
        if lipschitz not in LIPSCHITZ_CONTROLS:
            raise ValueError(
                f"SDEGAN: unknown lipschitz={lipschitz!r}; expected one of {', '.join(LIPSCHITZ_CONTROLS)}"
            )
        k1, k2 = jax.random.split(key)
        d_hidden = hidden_size if discriminator_hidden_size is None else discriminator_hidden_size
        self.generator = SDEGenerator(data_size, hidden_size, width, depth, noise_size=noise_size, key=k1)
        discriminator = CDEDiscriminator(data_size, d_hidden, width, depth, key=k2)
        self.discriminator = clip_weights(discriminator) if lipschitz == "clip" else discriminator
        self.lipschitz, self.penalty_weight = lipschitz, penalty_weight

    def sample(self, ts: Float[Array, " times"], num: int, *, key: PRNGKeyArray) -> Float[Array, "num times data"]:
        """`num` generated paths on the grid `ts`."""
        return jax.vmap(lambda k: self.generator(ts, key=k))(jax.random.split(key, num))

    def loss(
        self, ts: Float[Array, " times"], real: Float[Array, "batch times data"], *, key: PRNGKeyArray
    ) -> Float[Array, ""]:
        """The critic's loss `mean D(fake) - mean D(real)` (plus the weighted gradient penalty when chosen), for a
        batch as many generated paths as `real`. The discriminator descends it and the generator ascends its first
        term."""
        sample_key, penalty_key = jax.random.split(key)
        fake = self.sample(ts, real.shape[0], key=sample_key)
        score = jax.vmap(self.discriminator, in_axes=(None, 0))
        loss = jnp.mean(score(ts, fake)) - jnp.mean(score(ts, real))
        if self.lipschitz == "gradient_penalty":
            penalty = gradient_penalty(self.discriminator, ts, real, jax.lax.stop_gradient(fake), key=penalty_key)
            loss = loss + self.penalty_weight * penalty
        return loss


def train_sde_gan(
    gan: SDEGAN,
    ts: Float[Array, " times"],
    data: Float[Array, "n times data"],
    *,
    steps: int,
    batch_size: int,
    key: PRNGKeyArray,
    generator_lr: float = 2e-4,
    discriminator_lr: float = 1e-3,
    average_from: float = 0.5,
    description: str = "SDE-GAN",
    progress: bool = True,
) -> tuple[SDEGAN, dict[str, np.ndarray]]:
    """Train an SDE-GAN by simultaneous gradient descent (discriminator) and ascent (generator) on `SDEGAN.loss`,
    with Adam, clipping the discriminator after every step under `"clip"`, and averaging the generator's weights
    over the last `1 - average_from` of the steps (stochastic weight averaging, as Kidger et al.).

    **Arguments:**

    - `gan`: the initial SDE-GAN.
    - `ts`: the grid of the data.
    - `data`: the real paths.
    - `steps`, `batch_size`: training steps and paths per batch (drawn with replacement).
    - `key`: the key of the batches, the generated paths and the penalty.
    - `generator_lr`, `discriminator_lr`: the learning rates.
    - `average_from`: the fraction of the steps after which the generator is averaged.
    - `description`, `progress`: the progress bar.

    **Returns:** `(gan, history)`: the GAN with the averaged generator, and `history["loss"]`, the critic's loss
    at every step.
    """
    data = jnp.asarray(data)
    check_shape("train_sde_gan", "data", data, (None, ts.shape[0], gan.discriminator.data_size))
    params, static = eqx.partition(gan, eqx.is_inexact_array)
    g_optimiser = optax.adam(generator_lr, b1=0.5)
    d_optimiser = optax.adam(discriminator_lr, b1=0.5)
    g_state = g_optimiser.init(params.generator)
    d_state = d_optimiser.init(params.discriminator)

    @eqx.filter_jit
    def step(params, g_state, d_state, step_key):
        batch_key, loss_key = jax.random.split(step_key)
        real = data[jax.random.randint(batch_key, (batch_size,), 0, data.shape[0])]
        loss, grads = jax.value_and_grad(lambda p: eqx.combine(p, static).loss(ts, real, key=loss_key))(params)
        g_updates, g_state = g_optimiser.update(jax.tree.map(jnp.negative, grads.generator), g_state)
        d_updates, d_state = d_optimiser.update(grads.discriminator, d_state)
        discriminator = eqx.apply_updates(params.discriminator, d_updates)
        if gan.lipschitz == "clip":
            discriminator = clip_weights(discriminator)
        params = eqx.tree_at(
            lambda p: (p.generator, p.discriminator),
            params,
            (eqx.apply_updates(params.generator, g_updates), discriminator),
        )
        return params, g_state, d_state, loss

    losses = []
    averaged, count = None, 0
    start_average = int(average_from * steps)
    for i in tqdm(range(steps), desc=description, disable=not progress, leave=False):
        params, g_state, d_state, loss = step(params, g_state, d_state, jax.random.fold_in(key, i))
        losses.append(float(loss))
        if not np.isfinite(losses[-1]):
            raise FloatingPointError(f"{description}: the critic's loss is {losses[-1]} at step {i}")
        if i >= start_average:
            count += 1
            averaged = (
                params.generator
                if averaged is None
                else jax.tree.map(lambda a, p, w=1.0 / count: a + (p - a) * w, averaged, params.generator)
            )
    if averaged is not None:
        params = eqx.tree_at(lambda p: p.generator, params, averaged)
    return eqx.combine(params, static), {"loss": np.asarray(losses)}
