"""Contextual decomposition carried through an ODE solve: which features of the initial state made the final one.

The plain adaptive solve (diffrax) fixes the accepted steps; the same explicit Runge-Kutta tableau is then run on
the decomposed state `(rel, irr)`, every vector-field evaluation decomposed by `jaxinterp.cdt.propagate`. The
stages combine linearly, so `rel + irr` is the plain solution, and for a linear vector field `rel` is exactly the
solution started from the selected features.
"""

import diffrax
import jax
import jax.numpy as jnp
from jax import lax

from ..cdt import Pair, Rules, propagate


def _combine(y: Pair, h, weights, stages: list[Pair]) -> Pair:
    """`y + h * sum_j weights[j] * stages[j]`, part by part."""
    parts = []
    for part in (0, 1):
        increment = sum(w * k[part] for w, k in zip(weights, stages))
        parts.append(y[part] + h * increment)
    return Pair(*parts)


def decompose_solution(
    vector_field,
    y0: jax.Array,
    mask,
    t0: float,
    t1: float,
    args=None,
    *,
    solver: diffrax.AbstractSolver | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    dt0: float | None = None,
    max_steps: int = 1024,
    rules: Rules | None = None,
) -> tuple[Pair, diffrax.Solution]:
    """Decompose `y(t1)` of `dy/dt = vector_field(t, y, args)`, `y(t0) = y0`, into the contribution of the
    features of `y0` selected by `mask` and the rest.

    **Arguments:**

    - `vector_field`: `f(t, y, args)`, e.g. an equinox Module.
    - `y0`: the initial state (an array).
    - `mask`: 0/1 array broadcastable to `y0`; the selected features are the source.
    - `t0`, `t1`, `args`: as for `diffrax.diffeqsolve`.
    - `solver`: an explicit Runge-Kutta solver with a Butcher tableau (`Tsit5`, `Dopri5`, `Bosh3`, ...; `None`:
        `Tsit5`).
    - `rtol`, `atol`, `dt0`, `max_steps`: the adaptive step-size control of the plain solve.
    - `rules`: the decomposition rules (`None`: the default `Rules()`).

    **Returns:** `(Pair(rel, irr) of y(t1), the plain diffrax solution)`. Under differentiation the accepted
    steps are held fixed (they are a discretisation choice), so gradients are those of the Runge-Kutta map.
    """
    solver = diffrax.Tsit5() if solver is None else solver
    rules = Rules() if rules is None else rules
    tableau = getattr(solver, "tableau", None)
    if tableau is None or tableau.implicit:
        raise TypeError(f"decompose_solution needs an explicit Runge-Kutta solver, got {type(solver).__name__}")
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0,
        t1,
        dt0,
        y0,
        args,
        saveat=diffrax.SaveAt(t1=True, steps=True),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    ends = solution.ts[:max_steps]
    accepted = jnp.arange(max_steps) < solution.stats["num_accepted_steps"]
    starts = jnp.concatenate([jnp.asarray([t0], ends.dtype), ends[:-1]])
    starts = lax.stop_gradient(jnp.where(accepted, starts, t0))
    steps = lax.stop_gradient(jnp.where(accepted, ends - starts, 0.0))

    def rk_step(y: Pair, step):
        t, h = step
        stages = [propagate(vector_field, t, y, args, rules=rules)]
        for c, a in zip(tableau.c, tableau.a_lower):
            stage_state = _combine(y, h, a, stages)
            stages.append(propagate(vector_field, t + c * h, stage_state, args, rules=rules))
        return _combine(y, h, tableau.b_sol, stages), None

    mask = jnp.asarray(mask, y0.dtype)
    final, _ = lax.scan(rk_step, Pair(y0 * mask, y0 * (1 - mask)), (starts, steps))
    return final, solution
