"""Latent SDE (Li et al. 2020, "Scalable gradients for stochastic differential equations"; P22, Kidger 2022): a
recurrent encoder of irregular observations, a posterior and a prior SDE in latent space, and their path KL.

`LatentSDE` is written for one series: `solve` and `__call__` take `xs` `[times, data]` and `mask` `[times]`, and
`sample_prior` generates one series (batch with `jax.vmap`, splitting the key per series). `solve_batch` takes a
batch and solves the posterior SDE of the whole batch as ONE joint state `[batch, latent + 1]` driven by one Brownian
path (one sequence of steps, the controller's RMS norm over the batch).

Sites (see [`models.neural_ode.MLPVectorField`][]): `posterior_drift.layers.{i}.pre`, `posterior_drift.layers.{i}.post`,
`posterior_drift.out`, the same under `prior_drift.` and `diffusion.` (the `latent_size` one-dimensional diffusion
fields evaluated together, so with a leading axis of size `latent_size`), `z0` (the sampled initial latent state) and
`sde.ys` (the sampled path of `[z, kl]` on the grid, or of `z` in `sample_prior`). Inside the solve's while loop
`capture` keeps the last evaluation. Under `solve_batch` they hold the batch's values.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from jaxinterp.dynamics.regularisers import Heuristics
from jaxinterp.sites import tag

from .latent_ode import check_series, encode_backwards
from .neural_ode import MLPVectorField
from .neural_sde import DiagonalSDESolve


class LatentSDE(eqx.Module):
    """A variational latent SDE for irregularly observed series on a shared time grid with an observation mask.

    A GRU runs backwards in time over `[x * mask, mask, dt]`; its final hidden state `c` is the context, and a linear
    map of it gives the mean and log standard deviation of `q(z0 | x)`. From `z0` the posterior SDE
    `dz = h(t, z, c) dt + g(t, z) o dW` is sampled over the grid and decoded by an MLP. The prior SDE
    `dz = f(t, z) dt + g(t, z) o dW` with `z0 ~ N(0, I)` generates new series.

    Both SDEs are Stratonovich and solved with an adaptive SDE solver that has an embedded error estimate (default
    `diffrax.Heun()`) on a virtual Brownian tree. The diffusion is shared, bounded away from zero and diagonal, with
    `g_i = min_noise + noise_scale * sigmoid(MLP_i(z_i, t))` a function of `z_i` only (as in Li et al.'s examples), so
    that the noise is commutative: diffrax's condition for adaptive SDE solves to converge without revisiting
    rejected steps.

    The posterior is solved on the augmented state `[z, kl]` with `d kl = 0.5 |(h - f) / g|^2 dt` (no noise on `kl`),
    so that `kl(t1)` is a one-sample estimate of the KL divergence of the posterior path measure from the prior's
    (Girsanov). Girsanov's integrand takes the Itô drifts; their Itô-Stratonovich corrections `0.5 g_i dg_i/dz_i` are
    equal because the diffusion is shared, so `h - f` is the same in either sense.

    `__call__`, `solve` and `sample_prior` are for one series; `solve_batch` solves a batch as one joint state.
    """

    encoder: eqx.nn.GRUCell
    to_latent: eqx.nn.Linear
    posterior_drift: MLPVectorField
    prior_drift: MLPVectorField
    # `latent_size` fields `(t, z_i) -> MLP_i(z_i, t)`, stacked along a leading axis.
    diffusion: MLPVectorField
    decoder: eqx.nn.MLP
    sde_solve: DiagonalSDESolve
    noise_scale: float = eqx.field(static=True)
    min_noise: float = eqx.field(static=True)

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
        noise_scale: float = 0.5,
        min_noise: float = 1e-2,
        solver: diffrax.AbstractSolver | None = None,
        rtol: float = 1e-2,
        atol: float = 1e-3,
        dt0: float = 0.05,
        brownian_tol: float = 1e-3,
        max_steps: int = 4096,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `data_size`: channels of an observation.
        - `latent_size`: the size of `z`.
        - `hidden_size`: the GRU encoder's hidden size, which is also the size of the context.
        - `width`, `depth`: the drifts', the diffusion's and the decoder's hidden width and number of hidden layers.
        - `t0`, `t1`: the first and last time of the grid.
        - `noise_scale`, `min_noise`: the diffusion is `min_noise + noise_scale * sigmoid(MLP)`.
        - `solver`, `rtol`, `atol`, `dt0`, `brownian_tol`, `max_steps`: as [`models.neural_sde.NeuralSDE`][].
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2, k3, k4, k5, k6 = jax.random.split(key, 6)
        self.encoder = eqx.nn.GRUCell(data_size + 2, hidden_size, key=k1)
        self.to_latent = eqx.nn.Linear(hidden_size, 2 * latent_size, key=k2)
        self.posterior_drift = MLPVectorField(
            latent_size + hidden_size, width, depth, out_shape=(latent_size,), name="posterior_drift", key=k3
        )
        self.prior_drift = MLPVectorField(latent_size, width, depth, name="prior_drift", key=k4)
        self.diffusion = eqx.filter_vmap(lambda k: MLPVectorField(1, width, depth, name="diffusion", key=k))(
            jax.random.split(k5, latent_size)
        )
        self.decoder = eqx.nn.MLP(latent_size, data_size, width, depth, activation=jnp.tanh, key=k6)
        solver = diffrax.Heun() if solver is None else solver
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        self.sde_solve = DiagonalSDESolve(solver, controller, t0, t1, dt0, brownian_tol, max_steps)
        self.noise_scale, self.min_noise = noise_scale, min_noise

    def encode(
        self,
        ts: Float[Array, " times"],
        xs: Float[Array, "times data"],
        mask: Bool[Array, " times"],
    ) -> tuple[Float[Array, " latent"], Float[Array, " latent"], Float[Array, " hidden"]]:
        """The mean and log standard deviation of `q(z0 | observations)` and the context, for one example."""
        context = encode_backwards(self.encoder, ts, xs, mask)
        mean, logstd = jnp.split(self.to_latent(context), 2)
        return mean, logstd, context

    def diffusion_scale(self, t: Float[Array, ""], z: Float[Array, " latent"], args=None) -> Float[Array, " latent"]:
        """`g(t, z)`, the diagonal diffusion shared by the prior and the posterior; `g_i` depends on `z_i` only."""
        out = eqx.filter_vmap(lambda field, zi: field(t, zi[None])[0])(self.diffusion, z)
        return self.min_noise + self.noise_scale * jax.nn.sigmoid(out)

    def augmented_drift(
        self,
        t: Float[Array, ""],
        y: Float[Array, " latent+1"],
        context: Float[Array, " hidden"],
    ) -> Float[Array, " latent+1"]:
        """The posterior drift of `[z, kl]`: `[h(t, z, c), 0.5 |(h - f) / g|^2]`."""
        z = y[:-1]
        drift = self.posterior_drift(t, jnp.concatenate([z, context]))
        u = (drift - self.prior_drift(t, z)) / self.diffusion_scale(t, z)
        return jnp.append(drift, 0.5 * jnp.sum(u**2))

    def augmented_diffusion(
        self,
        t: Float[Array, ""],
        y: Float[Array, " latent+1"],
        context: Float[Array, " hidden"],
    ) -> Float[Array, " latent+1"]:
        """The posterior diffusion of `[z, kl]`: `[g(t, z), 0]`."""
        return jnp.append(self.diffusion_scale(t, y[:-1]), 0.0)

    def decode(self, zs: Float[Array, "times latent"]) -> Float[Array, "times data"]:
        """The decoder applied at every time of one series."""
        return jax.vmap(self.decoder)(zs)

    @eqx.filter_jit
    def solve(
        self,
        ts: Float[Array, " times"],
        xs: Float[Array, "times data"],
        mask: Bool[Array, " times"],
        *,
        key: PRNGKeyArray,
    ) -> tuple[
        Float[Array, "times data"], Float[Array, " latent"], Float[Array, " latent"], Float[Array, ""], Heuristics
    ]:
        """Encode the observed points of one series, sample `z0` and a posterior path over `ts`, and decode.

        **Arguments:**

        - `ts`: the time grid, increasing, `ts[0] = t0` and `ts[-1] = t1`.
        - `xs`: values on the grid, `[times, data]` (anything where `mask` is false is ignored).
        - `mask`: which grid points are observed, `[times]`.
        - `key`: a PRNG key for sampling `z0` and the Brownian motion.

        **Returns:** `(predictions, mean, logstd, path_kl, heuristics)`: the reconstruction `[times, data]`, `mean`
        and `logstd` those of `q(z0)`, `path_kl` the sampled KL divergence of the posterior path from the prior over
        `[t0, ts[-1]]` (a scalar), and the scalar heuristics of the posterior solve.
        """
        check_series("LatentSDE.solve", ts, xs, mask, self.decoder.out_size, batched=False)
        mean, logstd, context = self.encode(ts, xs, mask)
        z_key, path_key = jax.random.split(key)
        z0 = tag(mean + jnp.exp(logstd) * jax.random.normal(z_key, mean.shape, mean.dtype), "z0")
        y0 = jnp.concatenate([z0, jnp.zeros_like(z0[:1])])
        ys, heuristics = self.sde_solve(self.augmented_drift, self.augmented_diffusion, y0, ts, context, key=path_key)
        ys = tag(ys, "sde.ys")
        return self.decode(ys[:, :-1]), mean, logstd, ys[-1, -1], heuristics

    @eqx.filter_jit
    def solve_batch(
        self,
        ts: Float[Array, " times"],
        xs: Float[Array, "batch times data"],
        mask: Bool[Array, "batch times"],
        *,
        key: PRNGKeyArray,
    ) -> tuple[
        Float[Array, "batch times data"],
        Float[Array, "batch latent"],
        Float[Array, "batch latent"],
        Float[Array, " batch"],
        Heuristics,
    ]:
        """As `solve` for a batch of series on the shared grid `ts`, with the posterior SDE of the whole batch solved
        as ONE joint state `[batch, latent + 1]` driven by one Brownian path of that shape (see
        [`models.neural_sde.DiagonalSDESolve.solve_batch`][]); `z0` is drawn for the batch at once. For one solve
        per series use `jax.vmap(lambda x, m, k: model.solve(ts, x, m, key=k))(xs, mask, keys)`.

        **Returns:** `(predictions, mean, logstd, path_kl, heuristics)`, each with a leading batch axis but the
        heuristics of the joint solve, which are scalars.
        """
        check_series("LatentSDE.solve_batch", ts, xs, mask, self.decoder.out_size, batched=True)
        mean, logstd, context = jax.vmap(self.encode, in_axes=(None, 0, 0))(ts, xs, mask)
        z_key, path_key = jax.random.split(key)
        z0 = tag(mean + jnp.exp(logstd) * jax.random.normal(z_key, mean.shape, mean.dtype), "z0")
        y0 = jnp.concatenate([z0, jnp.zeros_like(z0[:, :1])], axis=-1)
        ys, heuristics = self.sde_solve.solve_batch(
            self.augmented_drift, self.augmented_diffusion, y0, ts, context, key=path_key
        )
        ys = tag(ys, "sde.ys")
        return jax.vmap(self.decode)(ys[..., :-1]), mean, logstd, ys[:, -1, -1], heuristics

    @eqx.filter_jit
    def sample_prior(self, ts: Float[Array, " times"], *, key: PRNGKeyArray) -> Float[Array, "times data"]:
        """Generate one series: `z0 ~ N(0, I)`, a path of the prior SDE over `ts`, decoded. For several, map over
        keys: `jax.vmap(lambda k: model.sample_prior(ts, key=k))(jax.random.split(key, n))`.

        **Arguments:**

        - `ts`: save times in `[t0, t1]`.
        - `key`: a PRNG key for `z0` and the Brownian motion.

        **Returns:** `[times, data]`.
        """
        z_key, path_key = jax.random.split(key)
        z0 = tag(jax.random.normal(z_key, (self.prior_drift.size,), ts.dtype), "z0")
        zs, _ = self.sde_solve(self.prior_drift, self.diffusion_scale, z0, ts, key=path_key)
        return self.decode(tag(zs, "sde.ys"))

    def __call__(
        self,
        ts: Float[Array, " times"],
        xs: Float[Array, "times data"],
        mask: Bool[Array, " times"],
        *,
        key: PRNGKeyArray,
    ) -> Float[Array, "times data"]:
        """The reconstruction of one series on `ts` from its observed points (one posterior sample)."""
        return self.solve(ts, xs, mask, key=key)[0]
