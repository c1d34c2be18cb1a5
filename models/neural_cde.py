"""Neural controlled differential equations (P22): `dz = f(t, z) dX(t)` driven by an interpolation of the data.

`NeuralCDE` is written for one series: `solve` and `__call__` take `xs` of shape `[times, channels]` and a batch is
solved per series with `jax.vmap(model, in_axes=(None, 0))`; `solve_batch` solves a batch `[batch, times, channels]`
as ONE joint state (one sequence of steps, the controller's RMS norm over the batch).

Sites: `vector_field.layers.{i}.pre`, `vector_field.layers.{i}.post`, `vector_field.out` (the `[hidden, channels]`
matrix `f(t, z)`; see [`models.neural_ode.MLPVectorField`][]), `cde.z1` (the hidden state at the last observation)
and `readout` (the output). Under `solve_batch` they hold the batch's values (a leading batch axis).
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.dynamics.regularisers import Heuristics, solve_with_heuristics
from jaxinterp.sites import tag

from .neural_ode import ONE_EXAMPLE_HINT, BatchedField, MLPVectorField, check_shape


class _ControlledField(eqx.Module):
    field: eqx.Module
    control: diffrax.CubicInterpolation

    def __call__(self, t, z, args):
        return jnp.einsum("...hc,...c->...h", self.field(t, z, args), self.control.derivative(t))


class NeuralCDE(eqx.Module):
    """A neural CDE classifier/regressor for (irregularly sampled) time series.

    The data `xs` (time should be one of its channels) is interpolated by a cubic Hermite spline with backward
    differences `X`; `z(t0) = zeta(xs[0])`, `dz = f(t, z) dX(t)` with `f` a `tanh`-squashed MLP giving a
    `[hidden, channels]` matrix, and the output is a linear readout of `z(t1)`. Solved as the ODE
    `dz/dt = f(t, z) X'(t)`.
    """

    initial: eqx.nn.Linear
    vector_field: MLPVectorField
    readout: eqx.nn.Linear
    solver: diffrax.AbstractSolver
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    def __init__(
        self,
        channels: int,
        hidden: int,
        out_size: int,
        width: int,
        depth: int,
        *,
        solver: diffrax.AbstractSolver | None = None,
        rtol: float = 1e-3,
        atol: float = 1e-6,
        max_steps: int = 4096,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `channels`: input channels (including time).
        - `hidden`: the size of the hidden state `z`.
        - `out_size`: the size of the readout.
        - `width`, `depth`: the vector field MLP's hidden width and number of hidden layers.
        - `solver`, `rtol`, `atol`, `max_steps`: as [`models.neural_ode.NeuralODE`][].
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2, k3 = jax.random.split(key, 3)
        self.initial = eqx.nn.Linear(channels, hidden, key=k1)
        self.vector_field = MLPVectorField(hidden, width, depth, out_shape=(hidden, channels), squash=True, key=k2)
        self.readout = eqx.nn.Linear(hidden, out_size, key=k3)
        self.solver = diffrax.Tsit5() if solver is None else solver
        self.rtol, self.atol = rtol, atol
        self.max_steps = max_steps

    def _solve(self, ts, path, field, z0):
        control = diffrax.CubicInterpolation(ts, diffrax.backward_hermite_coefficients(ts, path))
        sol, heuristics = solve_with_heuristics(
            diffrax.ODETerm(_ControlledField(field, control)),
            self.solver,
            ts[0],
            ts[-1],
            None,
            z0,
            stepsize_controller=diffrax.PIDController(rtol=self.rtol, atol=self.atol, step_ts=ts),
            max_steps=self.max_steps,
        )
        return tag(sol.ys[0], "cde.z1"), heuristics

    @eqx.filter_jit
    def solve(
        self, ts: Float[Array, " times"], xs: Float[Array, "times channels"]
    ) -> tuple[Float[Array, " out"], Heuristics]:
        """Run the CDE over the observations `xs` of one series at times `ts` (increasing, NaN-free).

        The solver steps onto every observation time, where the spline's derivative may jump.

        **Returns:** `(readout of z(t1), heuristics)`, `[out]` and scalars.
        """
        check_shape("NeuralCDE.solve", "xs", xs, (ts.shape[0], self.initial.in_features), ONE_EXAMPLE_HINT)
        z1, heuristics = self._solve(ts, xs, self.vector_field, self.initial(xs[0]))
        return tag(self.readout(z1), "readout"), heuristics

    @eqx.filter_jit
    def solve_batch(
        self, ts: Float[Array, " times"], xs: Float[Array, "batch times channels"]
    ) -> tuple[Float[Array, "batch out"], Heuristics]:
        """Run the CDE over a batch of series sharing the times `ts`, solved as ONE joint state `[batch, hidden]`:
        one sequence of steps, with the controller's RMS norm over the batch. For one solve per series use
        `jax.vmap(model.solve, in_axes=(None, 0))`.

        **Returns:** `(readouts of z(t1), heuristics)`, `[batch, out]` and the scalar heuristics of the joint solve.
        """
        check_shape("NeuralCDE.solve_batch", "xs", xs, (None, ts.shape[0], self.initial.in_features))
        z0 = jax.vmap(self.initial)(xs[:, 0])
        z1, heuristics = self._solve(ts, jnp.swapaxes(xs, 0, 1), BatchedField(self.vector_field), z0)
        return tag(jax.vmap(self.readout)(z1), "readout"), heuristics

    def __call__(self, ts: Float[Array, " times"], xs: Float[Array, "times channels"]) -> Float[Array, " out"]:
        """The readout of `z(t1)` for one series `xs` of shape `[times, channels]` observed at `ts`."""
        return self.solve(ts, xs)[0]
