"""Latent ODE (P22; Rubanova et al. 2019): a recurrent encoder of irregular observations, an ODE in latent space."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from jaxinterp.dynamics.regularisers import Heuristics

from .neural_ode import Batching, NeuralODE


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


class LatentODE(eqx.Module):
    """A variational latent ODE for irregularly observed series on a shared time grid with an observation mask.

    A GRU runs backwards in time over `[x * mask, mask, dt]` and gives the mean and log standard deviation of
    `q(z0 | x)`; `z0` is sampled by reparameterisation, evolved by a neural ODE over the grid and decoded by an MLP.
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
        batching: Batching = "state",
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `data_size`: channels of an observation.
        - `latent_size`: the size of `z`.
        - `hidden_size`: the GRU encoder's hidden size.
        - `width`, `depth`: the latent vector field's and the decoder's hidden width and number of hidden layers.
        - `t0`, `t1`: the first and last time of the grid.
        - `solver`, `rtol`, `atol`, `max_steps`, `batching`: as [`models.neural_ode.NeuralODE`][].
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
            batching=batching,
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
        xs: Float[Array, "*batch times data"],
        mask: Bool[Array, "*batch times"],
        *,
        key: PRNGKeyArray,
    ) -> tuple[
        Float[Array, "*batch times data"], Float[Array, "*batch latent"], Float[Array, "*batch latent"], Heuristics
    ]:
        """Encode the observed points, sample `z0`, solve over `ts` and decode.

        **Arguments:**

        - `ts`: the time grid, increasing, `ts[0] = t0` and `ts[-1] = t1`.
        - `xs`: values on the grid (anything where `mask` is false is ignored).
        - `mask`: which grid points are observed.
        - `key`: a PRNG key for sampling `z0`.

        **Returns:** `(predictions, mean, logstd, heuristics)`.
        """
        batched = xs.ndim == 3
        encode = jax.vmap(self.encode, in_axes=(None, 0, 0)) if batched else self.encode
        mean, logstd = encode(ts, xs, mask)
        z0 = mean + jnp.exp(logstd) * jax.random.normal(key, mean.shape, mean.dtype)
        zs, heuristics = self.ode.solve(z0, ts)
        decode = jax.vmap(jax.vmap(self.decoder)) if batched else jax.vmap(self.decoder)
        return decode(zs), mean, logstd, heuristics

    def __call__(self, ts, xs, mask, *, key: PRNGKeyArray) -> Float[Array, "*batch times data"]:
        """The reconstruction of the series on `ts` from the observed points."""
        return self.solve(ts, xs, mask, key=key)[0]
