"""Neural ordinary differential equations (P22) on diffrax, reporting the solver's heuristics (P32) with every solve.

A batch can be solved in two ways, chosen by `batching`:

- `"state"`: the whole batch is one state `[batch, size]`, solved once with one sequence of steps; the controller's
    RMS norm runs over the batch (as the reference experiments of P32 do).
- `"vmap"`: `jax.vmap` over per-example solves; each example takes its own steps and has its own heuristics.
"""

from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.dynamics.regularisers import Heuristics, solve_with_heuristics

Batching = Literal["state", "vmap"]


class MLPVectorField(eqx.Module):
    """A time-dependent MLP vector field `f(t, y) = MLP([y, t])`, optionally squashed by `tanh` and scaled.

    A plain equinox Module whose `__call__(t, y, args)` a jaxpr interpreter can trace.
    """

    mlp: eqx.nn.MLP
    out_shape: tuple[int, ...] = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    squash: bool = eqx.field(static=True)

    def __init__(
        self,
        size: int,
        width: int,
        depth: int,
        *,
        out_shape: tuple[int, ...] | None = None,
        scale: float = 1.0,
        squash: bool = False,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `size`: the size of the state `y`.
        - `width`, `depth`: the hidden width and number of hidden layers of the MLP.
        - `out_shape`: the shape of the output (`(size,)` by default; `(size, channels)` for a CDE vector field).
        - `scale`: a constant multiplying the output.
        - `squash`: whether to apply `tanh` to the output (bounded vector fields for CDEs and SDE diffusions).
        - `key`: a PRNG key for the initial weights.
        """
        self.out_shape = (size,) if out_shape is None else tuple(out_shape)
        out_size = int(np.prod(self.out_shape))
        self.mlp = eqx.nn.MLP(size + 1, out_size, width, depth, activation=jnp.tanh, key=key)
        self.scale = scale
        self.squash = squash

    def __call__(self, t: Float[Array, ""], y: Float[Array, " size"], args=None) -> Float[Array, "..."]:
        out = self.mlp(jnp.concatenate([y, jnp.reshape(t, (1,)).astype(y.dtype)]))
        if self.squash:
            out = jnp.tanh(out)
        return self.scale * out.reshape(self.out_shape)


class BatchedField(eqx.Module):
    """A per-example vector field mapped over the leading (batch) axis of the state: `y` is `[batch, ...]`."""

    field: eqx.Module

    def __call__(self, t, y, args):
        return jax.vmap(self.field, in_axes=(None, 0, None))(t, y, args)


class NeuralODE(eqx.Module):
    """`y(t1)` where `dy/dt = f(t, y)`, `y(t0) = y0`, with `f` an MLP; an adaptive diffrax solve.

    Call it on one state `[size]` or a batch `[batch, size]`; `solve` also returns the solver's heuristics.
    """

    vector_field: MLPVectorField
    solver: diffrax.AbstractSolver
    controller: diffrax.PIDController
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
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
        solver: diffrax.AbstractSolver | None = None,
        rtol: float = 1e-3,
        atol: float = 1e-6,
        dt0: float | None = None,
        max_steps: int = 4096,
        batching: Batching = "state",
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `size`: the state size.
        - `width`, `depth`: the vector field MLP's hidden width and number of hidden layers.
        - `t0`, `t1`: the integration interval.
        - `solver`: a diffrax solver with an embedded error estimate (default `diffrax.Tsit5()`).
        - `rtol`, `atol`: the PID controller's tolerances.
        - `dt0`: the first step (`None`: diffrax's choice, a step of 0.01 in diffrax 0.7).
        - `max_steps`: the most steps a solve may take.
        - `batching`: `"state"` (the batch is one state) or `"vmap"` (one solve per example).
        - `key`: a PRNG key for the initial weights.
        """
        if batching not in ("state", "vmap"):
            raise ValueError(f"batching must be 'state' or 'vmap', got {batching!r}")
        self.vector_field = MLPVectorField(size, width, depth, key=key)
        self.solver = diffrax.Tsit5() if solver is None else solver
        self.controller = diffrax.PIDController(rtol=rtol, atol=atol)
        self.t0, self.t1, self.dt0 = t0, t1, dt0
        self.max_steps = max_steps
        self.batching = batching

    @eqx.filter_jit
    def solve(
        self, y0: Float[Array, "*batch size"], ts: Float[Array, " times"] | None = None
    ) -> tuple[Float[Array, "..."], Heuristics]:
        """Solve from `y0`.

        **Arguments:**

        - `y0`: the initial state, `[size]` or `[batch, size]`.
        - `ts`: times at which to save (increasing, in `[t0, t1]`); `None` saves only `t1`.

        **Returns:** `(y, heuristics)`: `y` is `y(t1)` shaped like `y0`, or the states at `ts`, `[times, size]`
        (per example) or `[batch, times, size]`; the heuristics are scalars, or `[batch]` with `batching="vmap"`.
        """
        batched = y0.ndim == 2
        if batched and self.batching == "vmap":
            return jax.vmap(lambda y: self.solve(y, ts))(y0)
        saveat = diffrax.SaveAt(t1=True) if ts is None else diffrax.SaveAt(ts=ts)
        sol, heuristics = solve_with_heuristics(
            diffrax.ODETerm(BatchedField(self.vector_field) if batched else self.vector_field),
            self.solver,
            self.t0,
            self.t1,
            self.dt0,
            y0,
            stepsize_controller=self.controller,
            saveat=saveat,
            max_steps=self.max_steps,
        )
        ys = sol.ys
        if ts is None:
            return ys[0], heuristics
        return (jnp.swapaxes(ys, 0, 1) if batched else ys), heuristics

    def __call__(self, y0: Float[Array, "*batch size"]) -> Float[Array, "*batch size"]:
        """`y(t1)` for `y0` of shape `[size]` or `[batch, size]`."""
        return self.solve(y0)[0]


class NeuralODEClassifier(eqx.Module):
    """The P32 MNIST classifier: a `tanh` affine downsampler to `hidden`, a neural ODE on `[0, 1]`, a linear head.

    Takes flattened inputs `[in_size]` or `[batch, in_size]`; `solve` also returns the ODE's heuristics.
    """

    downsample: eqx.nn.Linear
    ode: NeuralODE
    head: eqx.nn.Linear

    def __init__(
        self,
        in_size: int,
        hidden: int,
        classes: int,
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

        - `in_size`: the flattened input size.
        - `hidden`: the ODE state size.
        - `classes`: the number of logits.
        - `width`, `depth`: the vector field MLP's hidden width and number of hidden layers.
        - `solver`, `rtol`, `atol`, `max_steps`, `batching`: as [`models.neural_ode.NeuralODE`][].
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2, k3 = jax.random.split(key, 3)
        self.downsample = eqx.nn.Linear(in_size, hidden, key=k1)
        self.ode = NeuralODE(
            hidden, width, depth, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps, batching=batching, key=k2
        )
        self.head = eqx.nn.Linear(hidden, classes, key=k3)

    @eqx.filter_jit
    def solve(self, x: Float[Array, "*batch in_size"]) -> tuple[Float[Array, "*batch classes"], Heuristics]:
        """The logits and the heuristics of the ODE solve."""
        batched = x.ndim == 2
        maybe_vmap = jax.vmap if batched else (lambda f: f)
        y0 = jnp.tanh(maybe_vmap(self.downsample)(x))
        y1, heuristics = self.ode.solve(y0)
        return maybe_vmap(self.head)(y1), heuristics

    def __call__(self, x: Float[Array, "*batch in_size"]) -> Float[Array, "*batch classes"]:
        """The logits for flattened inputs `[in_size]` or `[batch, in_size]`."""
        return self.solve(x)[0]
