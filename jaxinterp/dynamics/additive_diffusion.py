"""Additive-noise diffusion baselines: variance-exploding and variance-preserving SDEs (Song et al., 2021) with
denoising score matching and a reverse-time Euler-Maruyama sampler."""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Scalar, ScalarLike

from .gbm import ScoreFn


class AbstractAdditiveDiffusion(eqx.Module):
    """A forward SDE `dX = f(X, t) dt + g(t) dW` with Gaussian marginals `X_t = m(t) X_0 + s(t) Z`."""

    @abc.abstractmethod
    def mean_coefficient(self, t: ScalarLike) -> Scalar:
        """`m(t)`."""

    @abc.abstractmethod
    def std(self, t: ScalarLike) -> Scalar:
        """`s(t)`."""

    @abc.abstractmethod
    def drift(self, x: Float[Array, "*shape"], t: ScalarLike) -> Float[Array, "*shape"]:
        """`f(x, t)`."""

    @abc.abstractmethod
    def diffusion(self, t: ScalarLike) -> Scalar:
        """`g(t)`."""

    @abc.abstractmethod
    def prior_std(self) -> float:
        """The standard deviation of the zero-mean Gaussian used as the marginal at `t = 1`."""

    def sample(self, x0: Float[ArrayLike, "*shape"], t: ScalarLike, *, key: PRNGKeyArray) -> Float[Array, "*shape"]:
        """Draw `X_t` given `X_0 = x0`."""
        return self.mean_coefficient(t) * x0 + self.std(t) * jr.normal(key, jnp.shape(x0))

    def conditional_score(
        self, x: Float[ArrayLike, "*shape"], x0: Float[ArrayLike, "*shape"], t: ScalarLike
    ) -> Float[Array, "*shape"]:
        """`grad_x log p(X_t = x | X_0 = x0)`."""
        return -(x - self.mean_coefficient(t) * x0) / self.std(t) ** 2

    def score_from_noise(
        self, noise: Float[ArrayLike, "*shape"], x: Float[ArrayLike, "*shape"], t: ScalarLike
    ) -> Float[Array, "*shape"]:
        """The score implied by a prediction of the standard normal `Z`: `-Z / s(t)` (`x` is unused)."""
        del x
        return -jnp.asarray(noise) / self.std(t)

    def prior_sample(self, shape: tuple[int, ...], *, key: PRNGKeyArray) -> Float[Array, "*shape"]:
        """Draw from the Gaussian prior at `t = 1`."""
        return self.prior_std() * jr.normal(key, shape)


class VarianceExploding(AbstractAdditiveDiffusion):
    """`dX = sqrt(d s(t)^2 / dt) dW` with `s(t) = sigma_min (sigma_max / sigma_min)^t`."""

    sigma_min: float = 0.01
    sigma_max: float = 10.0

    def mean_coefficient(self, t):
        return jnp.ones_like(t)

    def std(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def drift(self, x, t):
        return jnp.zeros_like(x)

    def diffusion(self, t):
        return self.std(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def prior_std(self):
        return self.sigma_max


class VariancePreserving(AbstractAdditiveDiffusion):
    """`dX = -beta(t) X / 2 dt + sqrt(beta(t)) dW` with `beta(t) = beta_min + t (beta_max - beta_min)`."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def _log_mean_coefficient(self, t):
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def _beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def mean_coefficient(self, t):
        return jnp.exp(self._log_mean_coefficient(t))

    def std(self, t):
        return jnp.sqrt(-jnp.expm1(2 * self._log_mean_coefficient(t)))

    def drift(self, x, t):
        return -0.5 * self._beta(t) * x

    def diffusion(self, t):
        return jnp.sqrt(self._beta(t))

    def prior_std(self):
        return 1.0


def denoising_score_matching_loss(
    score_fn: ScoreFn,
    process: AbstractAdditiveDiffusion,
    x0: Float[ArrayLike, " batch *shape"],
    *,
    key: PRNGKeyArray,
    t_min: float = 1e-3,
) -> Scalar:
    """Denoising score matching with weight `s(t)^2`: `E || s(t) s_theta(X_t, t) + Z ||^2`, `t ~ U(t_min, 1)`.

    Summed over pixels and averaged over the batch.

    **Arguments:**

    - `score_fn`: the score model `(x, t) -> s(x, t)` for one example.
    - `process`: the forward process.
    - `x0`: a batch of data.
    - `key`: a JAX PRNG key for the times and the noise.
    - `t_min`: the smallest time drawn.

    **Returns:** the scalar loss.
    """
    x0 = jnp.asarray(x0)
    tkey, zkey = jr.split(key)
    t = jr.uniform(tkey, (x0.shape[0],), minval=t_min, maxval=1.0)
    t_b = t.reshape((-1,) + (1,) * (x0.ndim - 1))
    z = jr.normal(zkey, x0.shape)
    std = process.std(t_b)
    xt = process.mean_coefficient(t_b) * x0 + std * z
    scores = jax.vmap(score_fn)(xt, t)
    return jnp.mean(jnp.sum(jnp.square(std * scores + z).reshape(x0.shape[0], -1), axis=1))


def euler_maruyama_sample(
    score_fn: ScoreFn,
    process: AbstractAdditiveDiffusion,
    x_init: Float[ArrayLike, " batch *shape"],
    ts: Float[ArrayLike, " levels"],
    *,
    key: PRNGKeyArray,
) -> Float[Array, " batch *shape"]:
    """Euler-Maruyama for the reverse-time SDE `dX = (f - g^2 s) dt + g dW`, one `lax.scan` over the levels.

    Step `k` evaluates at `ts[k]` with step `ts[k] - ts[k+1]` (and `ts[-1]` for the last level, which adds no noise),
    so the sampler runs from `ts[0]` to 0 in `len(ts)` score evaluations.

    **Arguments:**

    - `score_fn`: the score model `(x, t) -> s(x, t)` for one example.
    - `process`: the forward process.
    - `x_init`: a batch of starting points, usually from `process.prior_sample`.
    - `ts`: decreasing noise levels, e.g. `jnp.linspace(1, 1/N, N)`.
    - `key`: a JAX PRNG key for the noise.

    **Returns:** the samples.
    """
    ts = jnp.asarray(ts)
    deltas = ts - jnp.append(ts[1:], 0.0)
    noise_scale = jnp.ones_like(ts).at[-1].set(0.0)
    keys = jr.split(key, ts.shape[0])
    batched_score = jax.vmap(score_fn, in_axes=(0, None))

    def body(x, inputs):
        t, delta, scale, step_key = inputs
        g = process.diffusion(t)
        mean = x - delta * (process.drift(x, t) - g**2 * batched_score(x, t))
        return mean + scale * g * jnp.sqrt(delta) * jr.normal(step_key, x.shape), None

    x, _ = jax.lax.scan(body, jnp.asarray(x_init), (ts, deltas, noise_scale, keys))
    return x
