"""Regularising a solver's internal heuristics (P32): the embedded error estimate and the stiffness estimate.

`HeuristicsSolver` wraps a diffrax solver and accumulates, in its solver state, what the step-size controller saw on
every accepted step. diffrax keeps the previous solver state when it rejects a step, so only accepted steps count.

For an accepted step j from `t_j` to `t_j + h_j` with embedded error estimate `e_j`:

- the error estimate is the number the PID controller compares to 1,
  `E_j = norm(e_j / (atol + rtol * max(|y_j|, |y_{j+1}|)))` (RMS norm by default), and the regulariser is
  `R_E = sum_j E_j |h_j|`;
- the stiffness estimate (Hairer & Wanner II, IV.2) uses the last two stages of an explicit Runge-Kutta method whose
  last two stages sit at the same time (`c_{s-1} = c_s = 1` for Tsit5 and Dopri5):
  `rho_j = ||k_s - k_{s-1}||_2 / (|h_j| ||g_s - g_{s-1}||_2)`, with `k_i = h_j f(t_j + c_i h_j, g_i)` the stage
  increments and `g_i = y_j + sum_l a_il k_l` the stage points (for Tsit5 and Dopri5 `g_s = y_{j+1}`). It estimates
  the modulus of the dominant eigenvalue of the Jacobian along the step. Two regularisers come from it:
  `R_S = max_j rho_j` and `R_S_int = sum_j rho_j |h_j|`.

Everything is differentiable through the solve with diffrax's discrete adjoint (`RecursiveCheckpointAdjoint`).
diffrax stops gradients through its step-size choices, so the step sizes `h_j` are constants to the gradient.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float, Int, PyTree


class Heuristics(eqx.Module):
    """What a solver's internal heuristics measured over one solve.

    **Fields:**

    - `error`: `R_E = sum_j E_j |h_j|` over accepted steps.
    - `stiffness`: `R_S = max_j rho_j` over accepted steps (zero when not estimated).
    - `stiffness_integral`: `sum_j rho_j |h_j|` over accepted steps (zero when not estimated).
    - `num_steps`, `num_accepted_steps`, `num_rejected_steps`: diffrax's step counts.
    - `nfe`: vector-field evaluations made by the steps (each evaluation of all terms of an SDE counts once): the
        solver's evaluations per step times `num_steps`, plus those its first step adds (the first stage of a
        first-same-as-last method). Not included: the first stage re-evaluated after a rejected first step. With
        `dt0=None` diffrax 0.7 makes no evaluations to choose the first step: it starts with a step of 0.01 (its
        initial-step heuristic sees the terms wrapped, not as an `ODETerm`, and falls back to that constant).
    """

    error: Float[Array, "*batch"]
    stiffness: Float[Array, "*batch"]
    stiffness_integral: Float[Array, "*batch"]
    num_steps: Int[Array, "*batch"]
    num_accepted_steps: Int[Array, "*batch"]
    num_rejected_steps: Int[Array, "*batch"]
    nfe: Int[Array, "*batch"]


class _Accumulated(eqx.Module):
    error: Float[Array, ""]
    stiffness: Float[Array, ""]
    stiffness_integral: Float[Array, ""]


def _safe_norm(tree: PyTree[Array]) -> Float[Array, ""]:
    squares = sum(jnp.sum(jnp.square(x)) for x in jtu.tree_leaves(tree))
    positive = squares > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1.0)), 0.0)


def _stage_combination(coefficients: np.ndarray, ks: PyTree[Array]) -> PyTree[Array]:
    def combine(k):
        c = jnp.asarray(coefficients, dtype=k.dtype)
        return jnp.tensordot(c, k[: len(coefficients)], axes=1)

    return jtu.tree_map(combine, ks)


def supports_stiffness(solver: diffrax.AbstractSolver) -> bool:
    """Whether the stiffness estimate is defined for `solver`: an explicit Runge-Kutta method with one tableau whose
    last two stages are at the same time (Tsit5, Dopri5)."""
    if isinstance(solver, diffrax.AbstractWrappedSolver) or not isinstance(solver, diffrax.AbstractERK):
        return False
    tableau = solver.tableau
    if not isinstance(tableau, diffrax.ButcherTableau) or len(tableau.c) < 2:
        return False
    return bool(tableau.c[-1] == tableau.c[-2])


def _stiffness(solver: diffrax.AbstractERK, h, dense_info) -> Float[Array, ""]:
    tableau = solver.tableau
    ks = dense_info["k"]
    last, before = tableau.a_lower[-1], tableau.a_lower[-2]
    dg = _stage_combination(np.asarray(last) - np.append(before, 0.0), ks)
    dk = jtu.tree_map(lambda k: k[-1] - k[-2], ks)
    numerator = _safe_norm(dk)
    denominator = jnp.abs(h) * _safe_norm(dg)
    positive = denominator > 0
    return jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)


class HeuristicsSolver(diffrax.AbstractAdaptiveSolver, diffrax.AbstractWrappedSolver):
    """Wraps a diffrax solver and accumulates the error and stiffness regularisers of P32 in its solver state.

    The solver state is `(inner_state, accumulated)`; read `accumulated` from `sol.solver_state` with
    `diffrax.SaveAt(solver_state=True)`, or use [`jaxinterp.dynamics.solve_with_heuristics`][], which does that.

    **Arguments:**

    - `solver`: the wrapped solver; it must return an embedded error estimate (Tsit5, Dopri5, Heun, SPaRK, ...).
    - `rtol`, `atol`, `norm`: the step-size controller's tolerances and norm, so that `E_j` is the number it
        compares to 1.
    - `stiffness`: whether to estimate stiffness (needs `supports_stiffness(solver)` and an ODE).
    """

    solver: diffrax.AbstractSolver
    rtol: float
    atol: float
    norm: Callable[[PyTree], Float[Array, ""]] = optx.rms_norm
    stiffness: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.stiffness and not supports_stiffness(self.solver):
            raise ValueError(
                f"the stiffness estimate needs an explicit Runge-Kutta solver whose last two stages share a time "
                f"(Tsit5, Dopri5); got {type(self.solver).__name__}"
            )

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    def order(self, terms):
        return self.solver.order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        dtype = jnp.result_type(*jtu.tree_leaves(y0))
        zero = jnp.zeros((), dtype)
        return self.solver.init(terms, t0, t1, y0, args), _Accumulated(zero, zero, zero)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner_state, accumulated = solver_state
        y1, y_error, dense_info, inner_state, result = self.solver.step(terms, t0, t1, y0, args, inner_state, made_jump)
        if y_error is None:
            raise ValueError(f"{type(self.solver).__name__} returns no error estimate")
        h = jnp.abs(t1 - t0)

        def scale(_y0, _y1, _error):
            _y1 = jnp.where(jnp.isnan(_y1).any(), _y0, _y1)
            return _error / (self.atol + jnp.maximum(jnp.abs(_y0), jnp.abs(_y1)) * self.rtol)

        error = self.norm(jtu.tree_map(scale, y0, y1, y_error))
        dtype = accumulated.error.dtype
        error_sum = accumulated.error + (h * error).astype(dtype)
        if self.stiffness:
            rho = _stiffness(self.solver, t1 - t0, dense_info).astype(dtype)
            stiffness = jnp.maximum(accumulated.stiffness, rho)
            stiffness_integral = accumulated.stiffness_integral + (h * rho).astype(dtype)
        else:
            stiffness, stiffness_integral = accumulated.stiffness, accumulated.stiffness_integral
        accumulated = _Accumulated(error_sum, stiffness, stiffness_integral)
        return y1, y_error, dense_info, (inner_state, accumulated), result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


def evaluations_per_step(solver: diffrax.AbstractSolver) -> tuple[int, int]:
    """Vector-field evaluations a solver makes: `(per_step, at_init)`.

    First-same-as-last Runge-Kutta methods (Tsit5, Dopri5) make `s - 1` evaluations a step and one at the start;
    other Runge-Kutta methods `s` a step; reversible Heun one a step and one at the start.

    **Arguments:**

    - `solver`: a diffrax Runge-Kutta, stochastic Runge-Kutta or reversible Heun solver (or a wrapper of one).

    **Returns:** a pair of ints.
    """
    if isinstance(solver, diffrax.AbstractWrappedSolver):
        per_step, at_init = evaluations_per_step(solver.solver)
        return (3 if isinstance(solver, diffrax.HalfSolver) else 1) * per_step, at_init
    if isinstance(solver, diffrax.AbstractRungeKutta):
        tableau = solver.tableau
        tableaus = tableau.tableaus if isinstance(tableau, diffrax.MultiButcherTableau) else (tableau,)
        stages = tableaus[0].num_stages
        fsal = all(t.fsal for t in tableaus)
        return stages - int(fsal), int(fsal)
    if isinstance(solver, diffrax.AbstractSRK):
        return len(solver.tableau.b_sol), 0
    if isinstance(solver, diffrax.ReversibleHeun):
        return 1, 1
    raise ValueError(f"no evaluation count known for {type(solver).__name__}")


def solve_with_heuristics(
    terms: PyTree[diffrax.AbstractTerm],
    solver: diffrax.AbstractSolver,
    t0: float | Array,
    t1: float | Array,
    dt0: float | Array | None,
    y0: PyTree[Array],
    args: Any = None,
    *,
    stepsize_controller: diffrax.AbstractStepSizeController,
    rtol: float | None = None,
    atol: float | None = None,
    stiffness: bool | None = None,
    saveat: diffrax.SaveAt = diffrax.SaveAt(t1=True),
    adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint(),
    max_steps: int | None = 4096,
    throw: bool = True,
) -> tuple[diffrax.Solution, Heuristics]:
    """`diffrax.diffeqsolve` that also returns the solver's heuristics (error and stiffness regularisers, NFE).

    **Arguments:**

    - `terms`, `solver`, `t0`, `t1`, `dt0`, `y0`, `args`, `stepsize_controller`, `adjoint`, `max_steps`, `throw`: as
        `diffrax.diffeqsolve`.
    - `rtol`, `atol`: the tolerances that scale the error estimate; taken from the controller when it is a
        `diffrax.PIDController` (possibly clipped to `step_ts`; then they must not be given), required otherwise.
    - `stiffness`: whether to estimate stiffness; defaults to whether the solver supports it and `terms` is an ODE.
    - `saveat`: what to save; `solver_state=True` is added.

    **Returns:** `(solution, heuristics)`; `solution.solver_state` is `HeuristicsSolver`'s state.
    """
    norm = optx.rms_norm
    pid = stepsize_controller
    if isinstance(pid, diffrax.ClipStepSizeController):
        pid = pid.controller
    if isinstance(pid, diffrax.PIDController):
        if rtol is not None or atol is not None:
            raise ValueError("rtol and atol come from the PIDController; do not pass them")
        rtol, atol, norm = pid.rtol, pid.atol, pid.norm
    elif rtol is None or atol is None:
        raise ValueError("pass rtol and atol to scale the error estimate when the controller is not a PIDController")
    if stiffness is None:
        stiffness = (
            supports_stiffness(solver)
            and isinstance(terms, diffrax.AbstractTerm)
            and not isinstance(terms, diffrax.MultiTerm)
        )
    wrapped = HeuristicsSolver(solver, rtol, atol, norm, stiffness)
    sol = diffrax.diffeqsolve(
        terms,
        wrapped,
        t0,
        t1,
        dt0,
        y0,
        args,
        saveat=diffrax.SaveAt(
            subs=saveat.subs,
            dense=saveat.dense,
            solver_state=True,
            controller_state=saveat.controller_state,
            made_jump=saveat.made_jump,
        ),
        stepsize_controller=stepsize_controller,
        adjoint=adjoint,
        max_steps=max_steps,
        throw=throw,
    )
    _, accumulated = sol.solver_state
    per_step, at_init = evaluations_per_step(solver)
    stats = sol.stats
    heuristics = Heuristics(
        error=accumulated.error,
        stiffness=accumulated.stiffness,
        stiffness_integral=accumulated.stiffness_integral,
        num_steps=stats["num_steps"],
        num_accepted_steps=stats["num_accepted_steps"],
        num_rejected_steps=stats["num_rejected_steps"],
        nfe=at_init + per_step * stats["num_steps"],
    )
    return sol, heuristics
