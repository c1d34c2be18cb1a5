import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import ArrayLike, Float, PRNGKeyArray, Scalar

from ._process import GeometricBrownianMotion, ScoreFn


def multiplicative_score_matching_loss(
    score_fn: ScoreFn,
    process: GeometricBrownianMotion,
    x0: Float[ArrayLike, " batch *shape"],
    *,
    key: PRNGKeyArray,
    t_min: float = 1e-3,
) -> Scalar:
    """The multiplicative denoising score-matching loss of Dale meets Langevin.

    `E || sigma^2 t X_t * s(X_t, t) + log(X_t / X_0) - mu t + (3/2) sigma^2 t ||^2`, summed over pixels and
    averaged over the batch, with `t ~ U(t_min, 1)`. It regresses `x * s(x, t)` onto `x * grad log p(X_t | X_0)`
    with weight `(sigma^2 t)^2`, so its minimiser is the score of the marginal of `X_t`.

    **Arguments:**

    - `score_fn`: the score model, `(x, t) -> s(x, t)` for one example.
    - `process`: the forward process.
    - `x0`: a batch of positive data.
    - `key`: a JAX PRNG key for the times and the noise.
    - `t_min`: the smallest time drawn.

    **Returns:** the scalar loss.
    """
    x0 = jnp.asarray(x0)
    tkey, zkey = jr.split(key)
    t = jr.uniform(tkey, (x0.shape[0],), minval=t_min, maxval=1.0)
    t_b = t.reshape((-1,) + (1,) * (x0.ndim - 1))
    z = jr.normal(zkey, x0.shape)
    log_ratio = process.log_drift * t_b + process.sigma * jnp.sqrt(t_b) * z
    xt = x0 * jnp.exp(log_ratio)
    scores = jax.vmap(score_fn)(xt, t)
    sigma2 = process.sigma**2
    residual = sigma2 * t_b * xt * scores + log_ratio - process.mu * t_b + 1.5 * sigma2 * t_b
    return jnp.mean(jnp.sum(jnp.square(residual).reshape(x0.shape[0], -1), axis=1))
