import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Shaped

from ._process import GeometricBrownianMotion


class LogNormalPrior(eqx.Module):
    """An elementwise log-normal distribution, `log X ~ N(loc, scale^2)`: the sampler's starting point at `t = 1`."""

    loc: Float[Array, ""]
    scale: Float[Array, ""]

    @classmethod
    def fit(cls, process: GeometricBrownianMotion, x0: Shaped[ArrayLike, "..."], t: float = 1.0) -> "LogNormalPrior":
        """Fit one log-normal to all pixels of the data pushed through the forward process to time `t`.

        The fit is closed-form: `log X_t = log X_0 + (mu - sigma^2/2) t + sigma sqrt(t) Z`, so the pooled mean and
        variance of `log X_t` are those of `log X_0` shifted by the drift and widened by `sigma^2 t`.

        **Arguments:**

        - `process`: the forward process.
        - `x0`: positive data (any shape; all entries are pooled).
        - `t`: the time of the fitted marginal.
        """
        log_x0 = jnp.log(jnp.asarray(x0))
        loc = jnp.mean(log_x0) + process.log_drift * t
        scale = jnp.sqrt(jnp.var(log_x0) + process.sigma**2 * t)
        return cls(loc, scale)

    def sample(self, shape: tuple[int, ...], *, key: PRNGKeyArray) -> Float[Array, "*shape"]:
        """Draw an array of independent log-normal entries."""
        return jnp.exp(self.loc + self.scale * jr.normal(key, shape))
