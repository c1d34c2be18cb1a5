from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._process import GeometricBrownianMotion, ScoreFn

_Update = Callable[
    [GeometricBrownianMotion, Float[Array, " batch *shape"], Float[Array, " batch *shape"], Array, Array],
    Float[Array, " batch *shape"],
]


def dale_langevin_step(
    process: GeometricBrownianMotion,
    x: Float[Array, "*shape"],
    score: Float[Array, "*shape"],
    delta: Float[ArrayLike, ""],
    noise: Float[Array, "*shape"],
) -> Float[Array, "*shape"]:
    """One Dale-Langevin update, `X <- X exp(delta sigma^2 X s - delta (mu - 3 sigma^2 / 2) + sqrt(delta) sigma Z)`.

    This is Euler-Maruyama for the reverse-time SDE of `log X`, exponentiated: an exponentiated-gradient step, so the
    sign of every entry is kept exactly.

    **Arguments:**

    - `process`: the forward process.
    - `x`: the current positive state.
    - `score`: the score `s(x, t)` at the current level.
    - `delta`: the step size.
    - `noise`: standard normal noise of the shape of `x` (zero for a noise-free step).

    **Returns:** the next state.
    """
    sigma2 = process.sigma**2
    drift = delta * sigma2 * x * score - delta * (process.mu - 1.5 * sigma2)
    return x * jnp.exp(drift + jnp.sqrt(delta) * process.sigma * noise)


def ambient_multiplicative_step(
    process: GeometricBrownianMotion,
    x: Float[Array, "*shape"],
    score: Float[Array, "*shape"],
    delta: Float[ArrayLike, ""],
    noise: Float[Array, "*shape"],
) -> Float[Array, "*shape"]:
    """One ambient multiplicative update, `X <- X ((1 + 2 delta sigma^2) - delta mu + delta sigma^2 X s + sqrt(delta)
    sigma Z)`: Euler-Maruyama for the reverse-time SDE of `X` itself.

    Arguments and return as for `dale_langevin_step`.
    """
    sigma2 = process.sigma**2
    factor = 1 + 2 * delta * sigma2 - delta * process.mu + delta * sigma2 * x * score
    return x * (factor + jnp.sqrt(delta) * process.sigma * noise)


def _multiplicative_sample(
    update: _Update,
    score_fn: ScoreFn,
    process: GeometricBrownianMotion,
    x_init: Float[ArrayLike, " batch *shape"],
    ts: Float[ArrayLike, " levels"],
    key: PRNGKeyArray,
    step_size: float | None,
    steps_per_level: int,
    noise_decay: float,
    denoising_steps: int,
) -> Float[Array, " batch *shape"]:
    if steps_per_level < 1 or denoising_steps < 0:
        raise ValueError(
            f"steps_per_level must be at least 1 and denoising_steps at least 0, got {steps_per_level} and "
            f"{denoising_steps}"
        )
    if not 0.0 <= noise_decay <= 1.0:
        raise ValueError(f"noise_decay must lie in [0, 1], got {noise_decay}")
    ts = jnp.asarray(ts)
    x_init = jnp.asarray(x_init)
    if step_size is None:
        deltas = ts - jnp.append(ts[1:], 0.0)
    else:
        deltas = jnp.full_like(ts, step_size)
    level_noise = noise_decay ** jnp.arange(ts.shape[0], dtype=ts.dtype)
    times = jnp.repeat(ts, steps_per_level)
    deltas = jnp.repeat(deltas, steps_per_level)
    noise_scale = jnp.repeat(level_noise, steps_per_level).at[-1].set(0.0)
    # Noise-free steps at the last level, the official code's "Tweedie" denoiser.
    times = jnp.concatenate([times, jnp.full((denoising_steps,), ts[-1])])
    deltas = jnp.concatenate([deltas, jnp.full((denoising_steps,), deltas[-1])])
    noise_scale = jnp.concatenate([noise_scale, jnp.zeros((denoising_steps,), ts.dtype)])
    keys = jr.split(key, times.shape[0])
    batched_score = jax.vmap(score_fn, in_axes=(0, None))

    def body(x, inputs):
        t, delta, scale, step_key = inputs
        noise = scale * jr.normal(step_key, x.shape)
        return update(process, x, batched_score(x, t), delta, noise), None

    x, _ = jax.lax.scan(body, x_init, (times, deltas, noise_scale, keys))
    return x


def dale_langevin_sample(
    score_fn: ScoreFn,
    process: GeometricBrownianMotion,
    x_init: Float[ArrayLike, " batch *shape"],
    ts: Float[ArrayLike, " levels"],
    *,
    key: PRNGKeyArray,
    step_size: float | None = None,
    steps_per_level: int = 1,
    noise_decay: float = 1.0,
    denoising_steps: int = 0,
) -> Float[Array, " batch *shape"]:
    """Sample with the Dale-Langevin (exponentiated, log-space) update, one `lax.scan` over the levels.

    At level `k` the score is evaluated at time `ts[k]` and `steps_per_level` updates of size `delta_k` are taken;
    the very last update adds no noise. With `step_size=None` the step is `delta_k = ts[k] - ts[k+1]` (and `ts[-1]`
    for the last level), which makes the sampler Euler-Maruyama for the reverse-time SDE of `log X` from `ts[0]` to 0.
    A fixed `step_size` with several steps per level, and noise multiplied by `noise_decay` at every level, is the
    paper's annealed-Langevin variant; `denoising_steps` noise-free steps at the last level follow, as in the
    official code's Tweedie denoiser.

    **Arguments:**

    - `score_fn`: the score model `(x, t) -> s(x, t)` for one example.
    - `process`: the forward process.
    - `x_init`: a batch of positive starting points, usually from `LogNormalPrior`.
    - `ts`: decreasing noise levels, e.g. `jnp.linspace(1, 1/N, N)`.
    - `key`: a JAX PRNG key for the noise.
    - `step_size`: a fixed step size, or `None` for the level spacing.
    - `steps_per_level`: updates per level.
    - `noise_decay`: the noise of level `k` is scaled by `noise_decay**k` (1: the reverse SDE's noise throughout).
    - `denoising_steps`: noise-free updates at the last level after the levels are done.

    **Returns:** the samples; the number of score evaluations is `len(ts) * steps_per_level + denoising_steps`.
    """
    return _multiplicative_sample(
        dale_langevin_step, score_fn, process, x_init, ts, key, step_size, steps_per_level, noise_decay, denoising_steps
    )


def ambient_multiplicative_sample(
    score_fn: ScoreFn,
    process: GeometricBrownianMotion,
    x_init: Float[ArrayLike, " batch *shape"],
    ts: Float[ArrayLike, " levels"],
    *,
    key: PRNGKeyArray,
    step_size: float | None = None,
    steps_per_level: int = 1,
    noise_decay: float = 1.0,
    denoising_steps: int = 0,
) -> Float[Array, " batch *shape"]:
    """Sample with the ambient multiplicative update (Euler-Maruyama for the reverse-time SDE of `X`).

    Arguments and return as for `dale_langevin_sample`. Unlike the Dale-Langevin update, positivity is kept only
    while the factor `1 + ... + sqrt(delta) sigma Z` stays positive, which holds with overwhelming probability for
    small steps but not exactly.
    """
    return _multiplicative_sample(
        ambient_multiplicative_step,
        score_fn,
        process,
        x_init,
        ts,
        key,
        step_size,
        steps_per_level,
        noise_decay,
        denoising_steps,
    )
