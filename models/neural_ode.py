"""Neural ordinary differential equations (P22) on diffrax, reporting the solver's heuristics (P32) with every solve.

Every model here is written for one example: `solve` and `__call__` take one state (`[size]`), and a batch is solved
per example with `jax.vmap(model)` or `jax.vmap(model.solve)`, each example taking its own steps and reporting its
own heuristics. `solve_batch` instead solves a batch `[batch, size]` as ONE joint state: one sequence of steps for
the whole batch, the controller's RMS norm taken over the batch, and scalar heuristics (the setup of the reference
experiments of P32, which `experiments/regularized_node` and `experiments/latent_ode` follow).

Sites (for `jaxinterp.capture`, `jaxinterp.intervene`, `jaxinterp.cd`):

- `MLPVectorField` with `name` (default `"vector_field"`): `{name}.layers.{i}.pre` (the affine output of hidden
    layer `i`), `{name}.layers.{i}.post` (after the `tanh`) and `{name}.out` (the value of the field, after the
    optional squash, scale and reshape), as `models.mlp.MLP` names its sites. Inside a solve the field is evaluated
    in diffrax's while loop, so `capture` keeps the values of the last evaluation of the last step.
- `NeuralODE`: its field's sites, and `ode.y1` (the solution at `t1`) or `ode.ys` (the solution at the save times).
- `NeuralODEClassifier`: `downsample` (the initial state `tanh(Linear(x))`), the ODE's sites and `logits`.

Under `solve_batch` the same sites hold the values of the whole batch (a leading batch axis).
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.composites import activation
from jaxinterp.dynamics.regularisers import Heuristics, solve_with_heuristics
from jaxinterp.sites import tag


def check_shape(where: str, what: str, value: Array, expected: tuple[int | None, ...], hint: str = "") -> None:
    """Raise a `ValueError` naming the expected and the received shape when `value` does not have shape `expected`.

    **Arguments:**

    - `where`: what takes the value, e.g. `"NeuralODE.solve"`.
    - `what`: the argument's name.
    - `value`: the array.
    - `expected`: the shape; `None` stands for a size of any length (a batch axis).
    - `hint`: appended to the message.
    """
    shape = tuple(jnp.shape(value))
    fits = len(shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, shape))
    if not fits:
        sizes = ["batch" if e is None else str(e) for e in expected]
        shown = f"({sizes[0]},)" if len(sizes) == 1 else f"({', '.join(sizes)})"
        raise ValueError(f"{where}: `{what}` must have shape {shown}, got {shape}{hint}")


ONE_EXAMPLE_HINT = (
    "; the model takes one example: batch it with `jax.vmap`, or solve a batch as one state with `solve_batch`"
)


class MLPVectorField(eqx.Module):
    """A time-dependent MLP vector field `f(t, y) = MLP([y, t])`, optionally squashed by `tanh` and scaled.

    A plain equinox Module for one state whose `__call__(t, y, args)` a jaxpr interpreter can trace. Sites:
    `{name}.layers.{i}.pre`, `{name}.layers.{i}.post` and `{name}.out` (see the module docstring).
    """

    mlp: eqx.nn.MLP
    out_shape: tuple[int, ...] = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    squash: bool = eqx.field(static=True)
    name: str = eqx.field(static=True)

    def __init__(
        self,
        size: int,
        width: int,
        depth: int,
        *,
        out_shape: tuple[int, ...] | None = None,
        scale: float = 1.0,
        squash: bool = False,
        name: str = "vector_field",
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `size`: the size of the state `y`.
        - `width`, `depth`: the hidden width and number of hidden layers of the MLP.
        - `out_shape`: the shape of the output (`(size,)` by default; `(size, channels)` for a CDE vector field).
        - `scale`: a constant multiplying the output.
        - `squash`: whether to apply `tanh` to the output (bounded vector fields for CDEs and SDE diffusions).
        - `name`: the prefix of the field's site names (its role in the model: `"vector_field"`, `"drift"`, ...).
        - `key`: a PRNG key for the initial weights.
        """
        self.out_shape = (size,) if out_shape is None else tuple(out_shape)
        out_size = int(np.prod(self.out_shape))
        self.mlp = eqx.nn.MLP(size + 1, out_size, width, depth, activation=jnp.tanh, key=key)
        self.scale = scale
        self.squash = squash
        self.name = name

    @property
    def size(self) -> int:
        """The size of the state `y`."""
        return self.mlp.in_size - 1

    def __call__(self, t: Float[Array, ""], y: Float[Array, " size"], args=None) -> Float[Array, "..."]:
        """**Arguments:**

        - `t`: the time (a scalar).
        - `y`: one state `[size]`.
        - `args`: ignored.

        **Returns:** `f(t, y)`, of shape `out_shape`.
        """
        check_shape(f"MLPVectorField {self.name!r}", "y", y, (self.size,), ONE_EXAMPLE_HINT)
        x = jnp.concatenate([y, jnp.reshape(t, (1,)).astype(y.dtype)])
        for i, layer in enumerate(self.mlp.layers[:-1]):
            x = tag(layer(x), f"{self.name}.layers.{i}.pre")
            x = tag(activation(x, "tanh"), f"{self.name}.layers.{i}.post")
        out = self.mlp.layers[-1](x)
        if self.squash:
            out = activation(out, "tanh")
        return tag(self.scale * out.reshape(self.out_shape), f"{self.name}.out")


class BatchedField(eqx.Module):
    """A per-example vector field mapped over the leading (batch) axis of the state: `y` is `[batch, ...]`."""

    field: eqx.Module

    def __call__(self, t, y, args):
        return jax.vmap(self.field, in_axes=(None, 0, None))(t, y, args)


class NeuralODE(eqx.Module):
    """`y(t1)` where `dy/dt = f(t, y)`, `y(t0) = y0`, with `f` an MLP; an adaptive diffrax solve of one state.

    `__call__` and `solve` take one state `[size]` (batch with `jax.vmap`); `solve_batch` solves a batch as one
    joint state. `solve` and `solve_batch` also return the solver's heuristics. Sites: `vector_field.layers.{i}.pre`,
    `vector_field.layers.{i}.post`, `vector_field.out`, and `ode.y1` or `ode.ys`.
    """

    vector_field: MLPVectorField
    solver: diffrax.AbstractSolver
    controller: diffrax.PIDController
    t0: float = eqx.field(static=True)
    t1: float = eqx.field(static=True)
    dt0: float | None = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

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
        - `key`: a PRNG key for the initial weights.
        """
        self.vector_field = MLPVectorField(size, width, depth, key=key)
        self.solver = diffrax.Tsit5() if solver is None else solver
        self.controller = diffrax.PIDController(rtol=rtol, atol=atol)
        self.t0, self.t1, self.dt0 = t0, t1, dt0
        self.max_steps = max_steps

    @property
    def size(self) -> int:
        """The state size."""
        return self.vector_field.size

    def _solve(self, field, y0, ts):
        saveat = diffrax.SaveAt(t1=True) if ts is None else diffrax.SaveAt(ts=ts)
        sol, heuristics = solve_with_heuristics(
            diffrax.ODETerm(field),
            self.solver,
            self.t0,
            self.t1,
            self.dt0,
            y0,
            stepsize_controller=self.controller,
            saveat=saveat,
            max_steps=self.max_steps,
        )
        return sol.ys, heuristics

    @eqx.filter_jit
    def solve(
        self, y0: Float[Array, " size"], ts: Float[Array, " times"] | None = None
    ) -> tuple[Float[Array, "..."], Heuristics]:
        """Solve from one initial state.

        **Arguments:**

        - `y0`: the initial state, `[size]`.
        - `ts`: times at which to save (increasing, in `[t0, t1]`); `None` saves only `t1`.

        **Returns:** `(y, heuristics)`: `y` is `y(t1)`, `[size]`, or the states at `ts`, `[times, size]`; the
        heuristics are scalars.
        """
        check_shape("NeuralODE.solve", "y0", y0, (self.size,), ONE_EXAMPLE_HINT)
        ys, heuristics = self._solve(self.vector_field, y0, ts)
        if ts is None:
            return tag(ys[0], "ode.y1"), heuristics
        return tag(ys, "ode.ys"), heuristics

    @eqx.filter_jit
    def solve_batch(
        self, y0: Float[Array, "batch size"], ts: Float[Array, " times"] | None = None
    ) -> tuple[Float[Array, "batch ..."], Heuristics]:
        """Solve a batch as ONE joint state `[batch, size]`: one sequence of steps for the whole batch, with the
        controller's RMS norm (and so the step-size choice and the heuristics) taken over the batch, as in the
        reference experiments of P32. For one solve per example use `jax.vmap(model.solve)` instead.

        **Arguments:**

        - `y0`: the initial states, `[batch, size]`.
        - `ts`: times at which to save (increasing, in `[t0, t1]`); `None` saves only `t1`.

        **Returns:** `(y, heuristics)`: `y` is `y(t1)`, `[batch, size]`, or the states at `ts`,
        `[batch, times, size]`; the heuristics of the joint solve are scalars.
        """
        check_shape("NeuralODE.solve_batch", "y0", y0, (None, self.size))
        ys, heuristics = self._solve(BatchedField(self.vector_field), y0, ts)
        if ts is None:
            return tag(ys[0], "ode.y1"), heuristics
        return tag(jnp.swapaxes(ys, 0, 1), "ode.ys"), heuristics

    def __call__(self, y0: Float[Array, " size"]) -> Float[Array, " size"]:
        """`y(t1)` for one initial state `y0`, `[size]`."""
        return self.solve(y0)[0]


class NeuralODEClassifier(eqx.Module):
    """The P32 MNIST classifier: a `tanh` affine downsampler to `hidden`, a neural ODE on `[0, 1]`, a linear head.

    `__call__` and `solve` take one flattened input `[in_size]` (batch with `jax.vmap`); `solve_batch` solves a
    batch as one joint ODE state. `solve` and `solve_batch` also return the ODE's heuristics. Sites: `downsample`,
    the ODE's (`vector_field.*`, `ode.y1`) and `logits`.
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
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: the flattened input size.
        - `hidden`: the ODE state size.
        - `classes`: the number of logits.
        - `width`, `depth`: the vector field MLP's hidden width and number of hidden layers.
        - `solver`, `rtol`, `atol`, `max_steps`: as [`models.neural_ode.NeuralODE`][].
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2, k3 = jax.random.split(key, 3)
        self.downsample = eqx.nn.Linear(in_size, hidden, key=k1)
        self.ode = NeuralODE(hidden, width, depth, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps, key=k2)
        self.head = eqx.nn.Linear(hidden, classes, key=k3)

    @eqx.filter_jit
    def solve(self, x: Float[Array, " in_size"]) -> tuple[Float[Array, " classes"], Heuristics]:
        """**Arguments:** `x`, one flattened input `[in_size]`.

        **Returns:** `(logits, heuristics)`: the logits `[classes]` and the heuristics of the ODE solve (scalars).
        """
        check_shape("NeuralODEClassifier.solve", "x", x, (self.downsample.in_features,), ONE_EXAMPLE_HINT)
        y0 = tag(jnp.tanh(self.downsample(x)), "downsample")
        y1, heuristics = self.ode.solve(y0)
        return tag(self.head(y1), "logits"), heuristics

    @eqx.filter_jit
    def solve_batch(self, x: Float[Array, "batch in_size"]) -> tuple[Float[Array, "batch classes"], Heuristics]:
        """The logits of a batch whose ODE is solved as ONE joint state (see
        [`models.neural_ode.NeuralODE.solve_batch`][]); for one solve per example use `jax.vmap(model.solve)`.

        **Arguments:** `x`, flattened inputs `[batch, in_size]`.

        **Returns:** `(logits, heuristics)`: the logits `[batch, classes]` and the scalar heuristics of the joint
        solve.
        """
        check_shape("NeuralODEClassifier.solve_batch", "x", x, (None, self.downsample.in_features))
        y0 = tag(jnp.tanh(jax.vmap(self.downsample)(x)), "downsample")
        y1, heuristics = self.ode.solve_batch(y0)
        return tag(jax.vmap(self.head)(y1), "logits"), heuristics

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, " classes"]:
        """The logits for one flattened input `[in_size]`."""
        return self.solve(x)[0]
