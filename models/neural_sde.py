"""Neural stochastic differential equations (P22): `dy = mu(t, y) dt + sigma(t, y) o dW` with diagonal noise.

`DiagonalSDESolve` and `NeuralSDE` are written for one example: `__call__` and `solve` take one state `[size]` and
sample one path (batch with `jax.vmap`, splitting the key per example). `solve_batch` solves a batch `[batch, size]`
as ONE joint state driven by one Brownian path `[batch, size]`: one sequence of steps for the whole batch, the
controller's RMS norm over the batch.

Sites of `NeuralSDE`: `drift.layers.{i}.pre`, `drift.layers.{i}.post`, `drift.out` and the same under `diffusion.`
(see [`models.neural_ode.MLPVectorField`][]; inside the solve's while loop `capture` keeps the last evaluation), and
`sde.ys` (the sampled path at the save times). Under `solve_batch` they hold the batch's values.
"""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from jaxinterp.dynamics.regularisers import Heuristics, solve_with_heuristics
from jaxinterp.sites import tag

from .neural_ode import ONE_EXAMPLE_HINT, MLPVectorField, check_shape


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

    Calling it solves for one example; `solve_batch` solves a batch as one joint state.

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

    def _solve(self, drift, diffusion, y0, ts, args, key):
        levy = diffrax.SpaceTimeLevyArea if isinstance(self.solver, diffrax.AbstractSRK) else diffrax.BrownianIncrement
        brownian = diffrax.VirtualBrownianTree(
            self.t0, self.t1, tol=self.brownian_tol, shape=y0.shape, key=key, levy_area=levy
        )
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
        return sol.ys, heuristics

    def __call__(
        self,
        drift: Callable,
        diffusion: Callable,
        y0: Float[Array, " size"],
        ts: Float[Array, " times"],
        args: PyTree = None,
        *,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "times size"], Heuristics]:
        """Sample one path from `y0` saved at `ts`.

        **Arguments:**

        - `drift`, `diffusion`: vector fields of one example; both return arrays shaped like `y`, and `diffusion`
            acts elementwise.
        - `y0`: one initial state.
        - `ts`: save times in `[t0, t1]`.
        - `args`: passed to both fields.
        - `key`: the Brownian motion's key.

        **Returns:** `(ys, heuristics)` with `ys` `[times, *y0.shape]` and scalar heuristics.
        """
        for name, field in (("drift", drift), ("diffusion", diffusion)):
            out = jax.eval_shape(field, self.t0, y0, args)
            if out.shape != y0.shape:
                raise ValueError(
                    f"DiagonalSDESolve: the {name} must return an array shaped like the state {y0.shape}, got "
                    f"{out.shape}; the solve takes one example: batch it with `jax.vmap`, or solve a batch as one "
                    "state with `solve_batch`"
                )
        return self._solve(drift, diffusion, y0, ts, args, key)

    def solve_batch(
        self,
        drift: Callable,
        diffusion: Callable,
        y0: Float[Array, "batch size"],
        ts: Float[Array, " times"],
        args: PyTree = None,
        *,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, "batch times size"], Heuristics]:
        """Sample paths of a batch solved as ONE joint state `[batch, size]`, driven by one Brownian path
        `[batch, size]`: one sequence of steps for the whole batch, with the controller's RMS norm over the batch.
        For one solve per example map `__call__` with `jax.vmap` instead.

        **Arguments:**

        - `drift`, `diffusion`: vector fields of one example (mapped over the batch here).
        - `y0`: the initial states, with a leading batch axis.
        - `ts`: save times in `[t0, t1]`.
        - `args`: passed to both fields; when not `None`, it has a leading batch axis too.
        - `key`: the Brownian motion's key.

        **Returns:** `(ys, heuristics)` with `ys` `[batch, times, ...]` and the scalar heuristics of the joint solve.
        """
        if len(y0.shape) < 2:
            raise ValueError(f"DiagonalSDESolve.solve_batch: `y0` must have shape (batch, ...), got {y0.shape}")
        drift, diffusion = (eqx.filter_vmap(f, in_axes=(None, 0, 0)) for f in (drift, diffusion))
        ys, heuristics = self._solve(drift, diffusion, y0, ts, args, key)
        return ys.swapaxes(0, 1), heuristics


class NeuralSDE(eqx.Module):
    """A neural SDE with MLP drift and `tanh`-bounded diagonal diffusion, solved in the Stratonovich sense with an
    adaptive SDE solver that has an embedded error estimate (default `diffrax.Heun()`) on a virtual Brownian tree.

    Each `sigma_i` depends on the whole state, so the noise is not commutative; the controller therefore revisits the
    times of rejected steps (`diffrax.ClipStepSizeController(store_rejected_steps=...)`), which diffrax needs for an
    adaptive solve of such an SDE to converge to the right solution.

    `__call__` and `solve` take one state `[size]`; `solve_batch` solves a batch as one joint state.
    """

    drift: MLPVectorField
    diffusion: MLPVectorField
    sde_solve: DiagonalSDESolve

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
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2 = jax.random.split(key)
        self.drift = MLPVectorField(size, width, depth, name="drift", key=k1)
        self.diffusion = MLPVectorField(size, width, depth, scale=noise_scale, squash=True, name="diffusion", key=k2)
        controller = diffrax.ClipStepSizeController(
            diffrax.PIDController(rtol=rtol, atol=atol), store_rejected_steps=store_rejected_steps
        )
        solver = diffrax.Heun() if solver is None else solver
        self.sde_solve = DiagonalSDESolve(solver, controller, t0, t1, dt0, brownian_tol, max_steps)

    @eqx.filter_jit
    def solve(
        self, y0: Float[Array, " size"], ts: Float[Array, " times"], *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "times size"], Heuristics]:
        """Sample a path from one initial state, saved at `ts`.

        **Arguments:**

        - `y0`: the initial state, `[size]`.
        - `ts`: save times in `[t0, t1]`.
        - `key`: the Brownian motion's key.

        **Returns:** `(ys, heuristics)` with `ys` `[times, size]` and scalar heuristics.
        """
        check_shape("NeuralSDE.solve", "y0", y0, (self.drift.size,), ONE_EXAMPLE_HINT)
        ys, heuristics = self.sde_solve(self.drift, self.diffusion, y0, ts, key=key)
        return tag(ys, "sde.ys"), heuristics

    @eqx.filter_jit
    def solve_batch(
        self, y0: Float[Array, "batch size"], ts: Float[Array, " times"], *, key: PRNGKeyArray
    ) -> tuple[Float[Array, "batch times size"], Heuristics]:
        """Sample paths of a batch solved as ONE joint state `[batch, size]` with one Brownian path `[batch, size]`
        (see [`models.neural_sde.DiagonalSDESolve.solve_batch`][]). For one solve per example use
        `jax.vmap(lambda y, k: model.solve(y, ts, key=k))(y0, jax.random.split(key, len(y0)))`.

        **Returns:** `(ys, heuristics)` with `ys` `[batch, times, size]` and the scalar heuristics of the joint solve.
        """
        check_shape("NeuralSDE.solve_batch", "y0", y0, (None, self.drift.size))
        ys, heuristics = self.sde_solve.solve_batch(self.drift, self.diffusion, y0, ts, key=key)
        return tag(ys, "sde.ys"), heuristics

    def __call__(
        self, y0: Float[Array, " size"], ts: Float[Array, " times"], *, key: PRNGKeyArray
    ) -> Float[Array, "times size"]:
        """A sample path from one initial state `y0`, `[size]`, saved at `ts`."""
        return self.solve(y0, ts, key=key)[0]
