from collections.abc import Callable

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Scalar, ScalarLike

ScoreFn = Callable[[Float[Array, "*shape"], Scalar], Float[Array, "*shape"]]


class GeometricBrownianMotion(eqx.Module):
    """The forward SDE `dX = mu X dt + sigma X dW`, elementwise, on positive data.

    Its logarithm follows `d log X = (mu - sigma^2 / 2) dt + sigma dW`, so given `X_0` the marginal is log-normal,
    `X_t = X_0 exp((mu - sigma^2 / 2) t + sigma sqrt(t) Z)`. With the default `mu = sigma^2 / 2` the log process is a
    variance-exploding Brownian motion.
    """

    sigma: float
    mu: float

    def __init__(self, sigma: float = 0.8, mu: float | None = None):
        """**Arguments:**

        - `sigma`: the volatility.
        - `mu`: the drift; defaults to `sigma^2 / 2`.
        """
        self.sigma = sigma
        self.mu = sigma**2 / 2 if mu is None else mu

    @property
    def log_drift(self) -> float:
        """The drift `mu - sigma^2 / 2` of `log X`."""
        return self.mu - self.sigma**2 / 2

    def sample(self, x0: Float[ArrayLike, "*shape"], t: ScalarLike, *, key: PRNGKeyArray) -> Float[Array, "*shape"]:
        """Draw `X_t` given `X_0 = x0` from the closed-form log-normal marginal."""
        z = jr.normal(key, jnp.shape(x0))
        return x0 * jnp.exp(self.log_drift * t + self.sigma * jnp.sqrt(t) * z)

    def mean(self, x0: Float[ArrayLike, "*shape"], t: ScalarLike) -> Float[Array, "*shape"]:
        """`E[X_t | X_0 = x0] = x0 exp(mu t)`."""
        return x0 * jnp.exp(self.mu * t)

    def variance(self, x0: Float[ArrayLike, "*shape"], t: ScalarLike) -> Float[Array, "*shape"]:
        """`Var[X_t | X_0 = x0] = x0^2 exp(2 mu t) (exp(sigma^2 t) - 1)`."""
        return jnp.square(x0) * jnp.exp(2 * self.mu * t) * jnp.expm1(self.sigma**2 * t)

    def conditional_score(
        self, x: Float[ArrayLike, "*shape"], x0: Float[ArrayLike, "*shape"], t: ScalarLike
    ) -> Float[Array, "*shape"]:
        """`grad_x log p(X_t = x | X_0 = x0)` for the log-normal transition density."""
        standardised = (jnp.log(x / x0) - self.log_drift * t) / (self.sigma**2 * t)
        return -(1 + standardised) / x

    def score_from_noise(
        self, noise: Float[ArrayLike, "*shape"], x: Float[ArrayLike, "*shape"], t: ScalarLike
    ) -> Float[Array, "*shape"]:
        """The score implied by a prediction of the standard normal `Z` in `log X_t = log X_0 + ... + sigma sqrt(t) Z`.

        The conditional score is `-(1 + Z / (sigma sqrt(t))) / x`; a network that predicts `Z` gives a score model
        through the same map.
        """
        return -(1 + noise / (self.sigma * jnp.sqrt(t))) / x

    def terms(self, brownian: diffrax.AbstractBrownianPath) -> diffrax.MultiTerm:
        """The forward SDE as diffrax terms on a flat state, with diagonal noise driven by `brownian`."""
        drift = diffrax.ODETerm(lambda t, y, args: self.mu * y)
        diffusion = diffrax.ControlTerm(lambda t, y, args: lx.DiagonalLinearOperator(self.sigma * y), brownian)
        return diffrax.MultiTerm(drift, diffusion)

    def simulate(
        self,
        x0: Float[ArrayLike, " n"],
        t1: float,
        *,
        key: PRNGKeyArray,
        num_steps: int = 1000,
        solver: diffrax.AbstractSolver = diffrax.Euler(),
    ) -> Float[Array, " n"]:
        """Solve the forward SDE numerically from `x0` at time 0 to `t1` with fixed steps.

        Uses `diffrax.UnsafeBrownianPath`, which draws an independent increment per step.

        **Arguments:**

        - `x0`: a flat array of starting values, one independent path each.
        - `t1`: the final time.
        - `key`: a JAX PRNG key for the Brownian motion.
        - `num_steps`: the number of solver steps.
        - `solver`: a diffrax SDE solver for diagonal noise.

        **Returns:** `X_{t1}`, of the shape of `x0`.
        """
        x0 = jnp.asarray(x0)
        brownian = diffrax.UnsafeBrownianPath(shape=x0.shape, key=key)
        solution = diffrax.diffeqsolve(
            self.terms(brownian),
            solver,
            0.0,
            t1,
            t1 / num_steps,
            x0,
            adjoint=diffrax.ForwardMode(),
            max_steps=num_steps,
        )
        return solution.ys[0]


def log_normal_marginal_score(process: GeometricBrownianMotion, loc: ArrayLike, scale: ArrayLike) -> ScoreFn:
    """The exact score of `X_t` when the data `X_0` is log-normal, `log X_0 ~ N(loc, scale^2)` elementwise.

    Then `log X_t ~ N(loc + (mu - sigma^2/2) t, scale^2 + sigma^2 t)`. Used to check samplers and losses.

    **Returns:** a function `(x, t) -> grad_x log p_t(x)`.
    """

    def score(x, t):
        mean = loc + process.log_drift * t
        var = jnp.square(scale) + process.sigma**2 * t
        return -(1 + (jnp.log(x) - mean) / var) / x

    return score
