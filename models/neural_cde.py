"""Neural controlled differential equations (P22): `dz = f(t, z) dX(t)` driven by an interpolation of the data."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.dynamics.regularisers import Heuristics, solve_with_heuristics

from .neural_ode import BatchedField, Batching, MLPVectorField


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
    batching: Batching = eqx.field(static=True)

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
        batching: Batching = "state",
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `channels`: input channels (including time).
        - `hidden`: the size of the hidden state `z`.
        - `out_size`: the size of the readout.
        - `width`, `depth`: the vector field MLP's hidden width and number of hidden layers.
        - `solver`, `rtol`, `atol`, `max_steps`: as [`models.neural_ode.NeuralODE`][].
        - `batching`: `"state"` (the batch is one state) or `"vmap"` (one solve per example).
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2, k3 = jax.random.split(key, 3)
        self.initial = eqx.nn.Linear(channels, hidden, key=k1)
        self.vector_field = MLPVectorField(hidden, width, depth, out_shape=(hidden, channels), squash=True, key=k2)
        self.readout = eqx.nn.Linear(hidden, out_size, key=k3)
        self.solver = diffrax.Tsit5() if solver is None else solver
        self.rtol, self.atol = rtol, atol
        self.max_steps = max_steps
        self.batching = batching

    @eqx.filter_jit
    def solve(
        self, ts: Float[Array, " times"], xs: Float[Array, "*batch times channels"]
    ) -> tuple[Float[Array, "*batch out"], Heuristics]:
        """Run the CDE over the observations `xs` at times `ts` (shared by the batch, increasing, NaN-free).

        The solver steps onto every observation time, where the spline's derivative may jump.

        **Returns:** `(readout of z(t1), heuristics)`.
        """
        batched = xs.ndim == 3
        if batched and self.batching == "vmap":
            return jax.vmap(lambda x: self.solve(ts, x))(xs)
        path = jnp.swapaxes(xs, 0, 1) if batched else xs
        control = diffrax.CubicInterpolation(ts, diffrax.backward_hermite_coefficients(ts, path))
        field = BatchedField(self.vector_field) if batched else self.vector_field
        z0 = jax.vmap(self.initial)(xs[:, 0]) if batched else self.initial(xs[0])
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
        z1 = sol.ys[0]
        out = jax.vmap(self.readout)(z1) if batched else self.readout(z1)
        return out, heuristics

    def __call__(self, ts: Float[Array, " times"], xs: Float[Array, "*batch times channels"]) -> Float[Array, "..."]:
        """The readout of `z(t1)` for `xs` of shape `[times, channels]` or `[batch, times, channels]`."""
        return self.solve(ts, xs)[0]
