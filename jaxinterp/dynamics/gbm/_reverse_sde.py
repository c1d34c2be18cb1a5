import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._process import GeometricBrownianMotion, ScoreFn
from ._samplers import dale_langevin_step

_LEVY_AREAS = (diffrax.BrownianIncrement, diffrax.SpaceTimeLevyArea, diffrax.SpaceTimeTimeLevyArea)


def reverse_sde_sample(
    score_fn: ScoreFn,
    process: GeometricBrownianMotion,
    x_init: Float[ArrayLike, " batch *shape"],
    *,
    key: PRNGKeyArray,
    t_min: float = 1e-3,
    solver: diffrax.AbstractSolver = diffrax.ShARK(),
    stepsize_controller: diffrax.AbstractStepSizeController = diffrax.PIDController(rtol=1e-2, atol=1e-2),
    dt0: float = 0.01,
    brownian_tol: float = 1e-4,
    max_steps: int = 4096,
) -> tuple[Float[Array, " batch *shape"], Int[Array, ""]]:
    """Sample by solving the reverse-time SDE of `log X` with diffrax, then taking one noise-free Dale-Langevin step.

    In reversed time `r = 1 - t` the log state `Y = log X` follows the additive-noise SDE
    `dY = (sigma^2 (X s(X, 1 - r) + 1) - (mu - sigma^2/2)) dr + sigma dW`, solved from `t = 1` to `t = t_min`; the
    final step from `t_min` to 0 adds no noise, as in `dale_langevin_sample`. With `diffrax.Euler()` and a constant
    step this is the Dale-Langevin sampler on a uniform grid; additive noise makes the strong-order-1.5 solvers
    (`diffrax.ShARK`, `diffrax.SRA1`) and adaptive steps available. A constant step size uses
    `diffrax.UnsafeBrownianPath` (fresh increments, forward-mode adjoint); any other controller uses a
    `diffrax.VirtualBrownianTree`, which adaptive steps need.

    **Arguments:**

    - `score_fn`: the score model `(x, t) -> s(x, t)` for one example.
    - `process`: the forward process.
    - `x_init`: a batch of positive starting points at `t = 1`.
    - `key`: a JAX PRNG key for the Brownian motion.
    - `t_min`: the time at which the solve stops.
    - `solver`: a diffrax SDE solver.
    - `stepsize_controller`: a diffrax step-size controller.
    - `dt0`: the initial (or constant) step in reversed time.
    - `brownian_tol`: the time resolution of the virtual Brownian tree.
    - `max_steps`: the solver's step limit.

    **Returns:** the samples and the number of solver steps taken (accepted and rejected).
    """
    x_init = jnp.asarray(x_init)
    shape = x_init.shape
    r1 = 1.0 - t_min
    batched_score = jax.vmap(score_fn, in_axes=(0, None))
    sigma2 = process.sigma**2

    def drift(r, y, args):
        x = jnp.exp(y).reshape(shape)
        xs = x * batched_score(x, 1.0 - r)
        return (sigma2 * (xs + 1) - process.log_drift).reshape(-1)

    def diffusion(r, y, args):
        return lx.DiagonalLinearOperator(jnp.full_like(y, process.sigma))

    minimal = getattr(solver, "minimal_levy_area", diffrax.AbstractBrownianIncrement)
    levy_area = next(c for c in _LEVY_AREAS if issubclass(c, minimal))
    if isinstance(stepsize_controller, diffrax.ConstantStepSize):
        brownian = diffrax.UnsafeBrownianPath(shape=(x_init.size,), key=key, levy_area=levy_area)
        adjoint = diffrax.ForwardMode()
    else:
        brownian = diffrax.VirtualBrownianTree(
            0.0, r1, tol=brownian_tol, shape=(x_init.size,), key=key, levy_area=levy_area
        )
        adjoint = diffrax.RecursiveCheckpointAdjoint()
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
    solution = diffrax.diffeqsolve(
        terms,
        solver,
        0.0,
        r1,
        dt0,
        jnp.log(x_init).reshape(-1),
        stepsize_controller=stepsize_controller,
        adjoint=adjoint,
        max_steps=max_steps,
    )
    x = jnp.exp(solution.ys[0]).reshape(shape)
    x = dale_langevin_step(process, x, batched_score(x, t_min), t_min, jnp.zeros_like(x))
    return x, solution.stats["num_steps"]
