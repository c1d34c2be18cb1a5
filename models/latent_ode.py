"""Latent ODE (P22; Rubanova et al. 2019): a recurrent encoder of irregular observations, an ODE in latent space.

`LatentODE` is written for one series: `solve` and `__call__` take `xs` `[times, data]` and `mask` `[times]` (batch
with `jax.vmap`, splitting the key per series). `solve_batch` takes a batch and solves the latent ODE of the whole
batch as ONE joint state `[batch, latent]` (one sequence of steps, the controller's RMS norm over the batch).

Sites: the latent ODE's, `vector_field.layers.{i}.pre`, `vector_field.layers.{i}.post`, `vector_field.out` and
`ode.ys` (the latent path on the grid; see [`models.neural_ode.NeuralODE`][]), and `z0` (the sampled initial latent
state). Under `solve_batch` they hold the batch's values.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from jaxinterp.dynamics.regularisers import Heuristics
from jaxinterp.sites import tag

from .neural_ode import ONE_EXAMPLE_HINT, NeuralODE, check_shape


def encode_backwards(
    encoder: eqx.nn.GRUCell, ts: Float[Array, " times"], xs: Float[Array, "times data"], mask: Bool[Array, " times"]
) -> Float[Array, " hidden"]:
    """The final hidden state of a GRU run backwards in time over `[x * mask, mask, dt]` (one example): the encoding
    of irregular observations of Rubanova et al. (2019). The GRU's input size must be `data + 2`."""
    m = mask.astype(xs.dtype)[:, None]
    dts = jnp.diff(ts, append=ts[-1])
    inputs = jnp.concatenate([xs * m, m, dts[:, None]], axis=-1)

    def step(h, x):
        return encoder(x, h), None

    h, _ = jax.lax.scan(step, jnp.zeros(encoder.hidden_size, xs.dtype), inputs, reverse=True)
    return h


def check_series(where: str, ts: Array, xs: Array, mask: Array, data_size: int, batched: bool) -> None:
    """Check the shapes of observations `xs` and their `mask` on the grid `ts`, with a leading batch axis when
    `batched`; raise a `ValueError` naming the expected and received shapes."""
    times = ts.shape[0]
    if batched:
        check_shape(where, "xs", xs, (None, times, data_size))
        check_shape(where, "mask", mask, (xs.shape[0], times))
    else:
        check_shape(where, "xs", xs, (times, data_size), ONE_EXAMPLE_HINT)
        check_shape(where, "mask", mask, (times,), ONE_EXAMPLE_HINT)


class LatentODE(eqx.Module):
    """A variational latent ODE for irregularly observed series on a shared time grid with an observation mask.

    A GRU runs backwards in time over `[x * mask, mask, dt]` and gives the mean and log standard deviation of
    `q(z0 | x)`; `z0` is sampled by reparameterisation, evolved by a neural ODE over the grid and decoded by an MLP.

    `__call__` and `solve` take one series; `solve_batch` solves a batch's latent ODE as one joint state.
    """

    encoder: eqx.nn.GRUCell
    to_latent: eqx.nn.Linear
    ode: NeuralODE
    decoder: eqx.nn.MLP

    def __init__(
        self,
        data_size: int,
        latent_size: int,
        hidden_size: int,
        width: int,
        depth: int,
        *,
        t0: float,
        t1: float,
        solver: diffrax.AbstractSolver | None = None,
        rtol: float = 1e-3,
        atol: float = 1e-6,
        max_steps: int = 4096,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `data_size`: channels of an observation.
        - `latent_size`: the size of `z`.
        - `hidden_size`: the GRU encoder's hidden size.
        - `width`, `depth`: the latent vector field's and the decoder's hidden width and number of hidden layers.
        - `t0`, `t1`: the first and last time of the grid.
        - `solver`, `rtol`, `atol`, `max_steps`: as [`models.neural_ode.NeuralODE`][].
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.encoder = eqx.nn.GRUCell(data_size + 2, hidden_size, key=k1)
        self.to_latent = eqx.nn.Linear(hidden_size, 2 * latent_size, key=k2)
        self.ode = NeuralODE(
            latent_size,
            width,
            depth,
            t0=t0,
            t1=t1,
            solver=solver,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
            key=k3,
        )
        self.decoder = eqx.nn.MLP(latent_size, data_size, width, depth, activation=jnp.tanh, key=k4)

    def encode(
        self, ts: Float[Array, " times"], xs: Float[Array, "times data"], mask: Bool[Array, " times"]
    ) -> tuple[Float[Array, " latent"], Float[Array, " latent"]]:
        """The mean and log standard deviation of `q(z0 | observations)` for one example."""
        mean, logstd = jnp.split(self.to_latent(encode_backwards(self.encoder, ts, xs, mask)), 2)
        return mean, logstd

    @eqx.filter_jit
    def solve(
        self,
        ts: Float[Array, " times"],
        xs: Float[Array, "times data"],
        mask: Bool[Array, " times"],
        *,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "times data"], Float[Array, " latent"], Float[Array, " latent"], Heuristics]:
        """Encode the observed points of one series, sample `z0`, solve over `ts` and decode.

        **Arguments:**

        - `ts`: the time grid, increasing, `ts[0] = t0` and `ts[-1] = t1`.
        - `xs`: values on the grid, `[times, data]` (anything where `mask` is false is ignored).
        - `mask`: which grid points are observed, `[times]`.
        - `key`: a PRNG key for sampling `z0`.

        **Returns:** `(predictions, mean, logstd, heuristics)`: the reconstruction `[times, data]`, the mean and log
        standard deviation of `q(z0)`, and the scalar heuristics of the ODE solve.
        """
        check_series("LatentODE.solve", ts, xs, mask, self.decoder.out_size, batched=False)
        mean, logstd = self.encode(ts, xs, mask)
        z0 = tag(mean + jnp.exp(logstd) * jax.random.normal(key, mean.shape, mean.dtype), "z0")
        zs, heuristics = self.ode.solve(z0, ts)
        return jax.vmap(self.decoder)(zs), mean, logstd, heuristics

    @eqx.filter_jit
    def solve_batch(
        self,
        ts: Float[Array, " times"],
        xs: Float[Array, "batch times data"],
        mask: Bool[Array, "batch times"],
        *,
        key: PRNGKeyArray,
    ) -> tuple[
        Float[Array, "batch times data"], Float[Array, "batch latent"], Float[Array, "batch latent"], Heuristics
    ]:
        """As `solve` for a batch of series on the shared grid `ts`, with the latent ODE of the whole batch solved as
        ONE joint state `[batch, latent]` (see [`models.neural_ode.NeuralODE.solve_batch`][]); `z0` is drawn for
        the batch at once from `key`. For one solve per series use
        `jax.vmap(lambda x, m, k: model.solve(ts, x, m, key=k))(xs, mask, jax.random.split(key, len(xs)))`.

        **Returns:** `(predictions, mean, logstd, heuristics)`, each with a leading batch axis but the heuristics of
        the joint solve, which are scalars.
        """
        check_series("LatentODE.solve_batch", ts, xs, mask, self.decoder.out_size, batched=True)
        mean, logstd = jax.vmap(self.encode, in_axes=(None, 0, 0))(ts, xs, mask)
        z0 = tag(mean + jnp.exp(logstd) * jax.random.normal(key, mean.shape, mean.dtype), "z0")
        zs, heuristics = self.ode.solve_batch(z0, ts)
        return jax.vmap(jax.vmap(self.decoder))(zs), mean, logstd, heuristics

    def __call__(
        self,
        ts: Float[Array, " times"],
        xs: Float[Array, "times data"],
        mask: Bool[Array, " times"],
        *,
        key: PRNGKeyArray,
    ) -> Float[Array, "times data"]:
        """The reconstruction of one series on `ts` from its observed points."""
        return self.solve(ts, xs, mask, key=key)[0]
