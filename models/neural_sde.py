"""Neural stochastic differential equations (P22): `dy = mu(t, y) dt + sigma(t, y) o dW` with diagonal noise."""

import diffrax
import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.dynamics.regularisers import Heuristics, solve_with_heuristics

from .neural_ode import BatchedField, Batching, MLPVectorField


class DiagonalNoiseTerm(diffrax.AbstractTerm):
    """`sigma(t, y) * dW`: a diffusion term whose vector field has the shape of the state and acts elementwise.

    **Arguments:**

    - `vector_field`: `sigma(t, y, args)`, shaped like `y`.
    - `control`: a Brownian motion shaped like `y`.
    """

    vector_field: eqx.Module
    control: diffrax.AbstractBrownianPath

    def vf(self, t, y, args):
        return self.vector_field(t, y, args)

    def contr(self, t0, t1, **kwargs):
        return self.control.evaluate(t0, t1, **kwargs)

    def prod(self, vf, control):
        return vf * control


class NeuralSDE(eqx.Module):
    """A neural SDE with MLP drift and `tanh`-bounded diagonal diffusion, solved in the Stratonovich sense with an
    adaptive SDE solver that has an embedded error estimate (default `diffrax.Heun()`) on a virtual Brownian tree.
    """

    drift: MLPVectorField
    diffusion: MLPVectorField
    solver: diffrax.AbstractSolver
    controller: diffrax.PIDController
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    dt0: float = eqx.field(static=True)
    brownian_tol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    batching: Batching = eqx.field(static=True)

    def __init__(
        self,
        size: int,
        width: int,
        depth: int,
        *,
        t0: float = 0.0,
        t1: float = 1.0,
        noise_scale: float = 0.1,
        solver: diffrax.AbstractSolver | None = None,
        rtol: float = 1e-2,
        atol: float = 1e-3,
        dt0: float = 0.05,
        brownian_tol: float = 1e-3,
        max_steps: int = 4096,
        batching: Batching = "state",
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `size`: the state size.
        - `width`, `depth`: the drift and diffusion MLPs' hidden width and number of hidden layers.
        - `t0`, `t1`: the integration interval.
        - `noise_scale`: the diffusion is `noise_scale * tanh(MLP)`.
        - `solver`: an SDE solver with an embedded error estimate (`Heun`, `SPaRK`, `ReversibleHeun`).
        - `rtol`, `atol`, `dt0`, `max_steps`: the adaptive step-size control.
        - `brownian_tol`: the virtual Brownian tree's time tolerance.
        - `batching`: `"state"` (the batch is one state) or `"vmap"` (one solve per example).
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2 = jax.random.split(key)
        self.drift = MLPVectorField(size, width, depth, key=k1)
        self.diffusion = MLPVectorField(size, width, depth, scale=noise_scale, squash=True, key=k2)
        self.solver = diffrax.Heun() if solver is None else solver
        self.controller = diffrax.PIDController(rtol=rtol, atol=atol)
        self.t0, self.t1, self.dt0 = t0, t1, dt0
        self.brownian_tol = brownian_tol
        self.max_steps = max_steps
        self.batching = batching

    @eqx.filter_jit
    def solve(
        self, y0: Float[Array, "*batch size"], ts: Float[Array, " times"], *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "*batch times size"], Heuristics]:
        """Sample a path from `y0`, saved at `ts`.

        **Arguments:**

        - `y0`: the initial state, `[size]` or `[batch, size]`.
        - `ts`: save times in `[t0, t1]`.
        - `key`: the Brownian motion's key (split per example with `batching="vmap"`).

        **Returns:** `(ys, heuristics)` with `ys` `[times, size]` or `[batch, times, size]`.
        """
        batched = y0.ndim == 2
        if batched and self.batching == "vmap":
            keys = jax.random.split(key, y0.shape[0])
            return jax.vmap(lambda y, k: self.solve(y, ts, key=k))(y0, keys)
        levy = diffrax.SpaceTimeLevyArea if isinstance(self.solver, diffrax.AbstractSRK) else diffrax.BrownianIncrement
        brownian = diffrax.VirtualBrownianTree(
            self.t0, self.t1, tol=self.brownian_tol, shape=y0.shape, key=key, levy_area=levy
        )
        drift, diffusion = self.drift, self.diffusion
        if batched:
            drift, diffusion = BatchedField(drift), BatchedField(diffusion)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), DiagonalNoiseTerm(diffusion, brownian))
        sol, heuristics = solve_with_heuristics(
            terms,
            self.solver,
            self.t0,
            self.t1,
            self.dt0,
            y0,
            stepsize_controller=self.controller,
            saveat=diffrax.SaveAt(ts=ts),
            max_steps=self.max_steps,
        )
        ys = sol.ys
        return (ys.swapaxes(0, 1) if batched else ys), heuristics

    def __call__(self, y0: Float[Array, "*batch size"], ts: Float[Array, " times"], *, key: PRNGKeyArray):
        """A sample path from `y0` saved at `ts`."""
        return self.solve(y0, ts, key=key)[0]
