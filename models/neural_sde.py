"""Neural stochastic differential equations (P22): `dy = mu(t, y) dt + sigma(t, y) o dW` with diagonal noise."""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from jaxinterp.dynamics.regularisers import Heuristics, solve_with_heuristics

from .neural_ode import Batching, MLPVectorField


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


class DiagonalSDESolve(eqx.Module):
    """How to solve `dy = drift(t, y, args) dt + diffusion(t, y, args) o dW` (Stratonovich, diagonal noise) on
    `[t0, t1]`: an adaptive SDE solver with an embedded error estimate on a virtual Brownian tree, reporting the
    solver's heuristics (P32).

    **Fields:**

    - `solver`: an SDE solver with an embedded error estimate (`Heun`, `SPaRK`, `ReversibleHeun`).
    - `controller`: the step-size controller (a `PIDController`, possibly inside a `ClipStepSizeController`).
    - `t0`, `t1`, `dt0`, `max_steps`: as `diffrax.diffeqsolve`.
    - `brownian_tol`: the virtual Brownian tree's time tolerance.
    """

    solver: diffrax.AbstractSolver
    controller: diffrax.AbstractStepSizeController
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
    brownian_tol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def __call__(
        self,
        drift: Callable,
        diffusion: Callable,
        y0: Float[Array, "*batch size"],
        ts: Float[Array, " times"],
        args: PyTree = None,
        *,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "*batch times size"], Heuristics]:
        """Sample a path from `y0` saved at `ts`.

        **Arguments:**

        - `drift`, `diffusion`: vector fields of one example; `diffusion` is shaped like `y` and acts elementwise.
        - `y0`: one example `[size]`, or a batch `[batch, size]` solved as one state (with one Brownian path
            `[batch, size]`); then `args`, when not `None`, has a leading batch axis too.
        - `ts`: save times in `[t0, t1]`.
        - `args`: passed to both fields.
        - `key`: the Brownian motion's key.

        **Returns:** `(ys, heuristics)` with `ys` `[times, size]` or `[batch, times, size]`.
        """
        batched = y0.ndim == 2
        levy = diffrax.SpaceTimeLevyArea if isinstance(self.solver, diffrax.AbstractSRK) else diffrax.BrownianIncrement
        brownian = diffrax.VirtualBrownianTree(
            self.t0, self.t1, tol=self.brownian_tol, shape=y0.shape, key=key, levy_area=levy
        )
        if batched:
            drift, diffusion = (eqx.filter_vmap(f, in_axes=(None, 0, 0)) for f in (drift, diffusion))
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), DiagonalNoiseTerm(diffusion, brownian))
        sol, heuristics = solve_with_heuristics(
            terms,
            self.solver,
            self.t0,
            self.t1,
            self.dt0,
            y0,
            args,
            stepsize_controller=self.controller,
            saveat=diffrax.SaveAt(ts=ts),
            max_steps=self.max_steps,
        )
        return (sol.ys.swapaxes(0, 1) if batched else sol.ys), heuristics


class NeuralSDE(eqx.Module):
    """A neural SDE with MLP drift and `tanh`-bounded diagonal diffusion, solved in the Stratonovich sense with an
    adaptive SDE solver that has an embedded error estimate (default `diffrax.Heun()`) on a virtual Brownian tree.

    Each `sigma_i` depends on the whole state, so the noise is not commutative; the controller therefore revisits the
    times of rejected steps (`diffrax.ClipStepSizeController(store_rejected_steps=...)`), which diffrax needs for an
    adaptive solve of such an SDE to converge to the right solution.
    """

    drift: MLPVectorField
    diffusion: MLPVectorField
    sde_solve: DiagonalSDESolve
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
        store_rejected_steps: int = 10,
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
        - `store_rejected_steps`: how many times of rejected steps the controller remembers to revisit.
        - `brownian_tol`: the virtual Brownian tree's time tolerance.
        - `batching`: `"state"` (the batch is one state) or `"vmap"` (one solve per example).
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2 = jax.random.split(key)
        self.drift = MLPVectorField(size, width, depth, key=k1)
        self.diffusion = MLPVectorField(size, width, depth, scale=noise_scale, squash=True, key=k2)
        controller = diffrax.ClipStepSizeController(
            diffrax.PIDController(rtol=rtol, atol=atol), store_rejected_steps=store_rejected_steps
        )
        solver = diffrax.Heun() if solver is None else solver
        self.sde_solve = DiagonalSDESolve(solver, controller, t0, t1, dt0, brownian_tol, max_steps)
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
        return self.sde_solve(self.drift, self.diffusion, y0, ts, key=key)

    def __call__(self, y0: Float[Array, "*batch size"], ts: Float[Array, " times"], *, key: PRNGKeyArray):
        """A sample path from `y0` saved at `ts`."""
        return self.solve(y0, ts, key=key)[0]
