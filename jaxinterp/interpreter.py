"""The one jaxpr interpreter that `capture`, `intervene` and `cd` share.

Semi-public: subclass `Interpreter` to write a new transformation over tagged sites; the hooks below are documented
and tested, but may change between minor versions (the version-sensitive access to JAX internals lives in
`jaxinterp._compat`).

A transformation traces the function to a jaxpr once and evaluates it here, equation by equation, on values of its
own domain: plain arrays for `capture`/`intervene`, (relevant, irrelevant) pairs for `cd`. Subclasses decide what
happens at a named site (`on_tag`) and how an ordinary primitive is evaluated (`apply`); this class recurses into
nested `jit` calls, `custom_jvp`/`custom_vjp` calls, `remat`, marked composites, `scan`, `while_loop` and `cond`.
Because every equation is re-bound on the caller's values, the result composes with `jit`, `vmap` and `grad`.

Sites inside a `scan` body are recorded once per iteration and stacked along a new leading axis; sites inside a
`while_loop` body keep the value of the last iteration.
"""

import copy
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from . import _compat
from .composites import composite_p
from .sites import tag_p


def trace(f, args: tuple, kwargs: dict):
    """Trace `f(*args, **kwargs)` to a jaxpr whose inputs are every array in `f` (if a pytree such as an equinox
    Module), `args` and `kwargs`.

    **Returns:** `(closed_jaxpr, flat_inputs, rebuild_output)`: evaluating the jaxpr on `flat_inputs` gives the flat
    outputs, and `rebuild_output(flat_outputs)` gives `f`'s output structure.
    """
    dynamic, static = eqx.partition((f, args, kwargs), eqx.is_array)
    flat, treedef = jax.tree_util.tree_flatten(dynamic)
    out_store = {}

    def flat_fn(*leaves):
        fn, a, k = eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)
        out = fn(*a, **k)
        out_leaves, out_store["tree"] = jax.tree_util.tree_flatten(out)
        return out_leaves

    closed = jax.make_jaxpr(flat_fn)(*flat)
    return closed, flat, lambda outs: jax.tree_util.tree_unflatten(out_store["tree"], outs)


def contains(jaxpr, primitive) -> bool:
    """Whether `primitive` occurs in `jaxpr` (an open Jaxpr) or any of its sub-jaxprs."""
    return any(
        eqn.primitive is primitive or any(contains(sub, primitive) for sub in _compat.sub_jaxprs(eqn))
        for eqn in jaxpr.eqns
    )


class Interpreter:
    """Evaluates a ClosedJaxpr on values of a domain; subclass and override the hooks.

    **Hooks:**

    - `on_tag(value, name)`: what a named site does (record, replace, inject).
    - `apply(eqn, invals)`: evaluate an ordinary equation; returns the list of outputs. Default: bind it.
    - `enters(eqn, invals)`: whether to recurse into a higher-order equation rather than `apply` it whole.
    - `literal(value)`: lift a literal constant into the domain.
    - `keeps_custom_rule(eqn)`: whether an entered `custom_jvp`/`custom_vjp` function keeps its own derivative rule
      (its outputs take the values of the evaluated body and the derivatives of the rule). Default: yes; a
      transformation that rewrites a site inside such a function says no, since the rule no longer describes it.
    - `loop_values(values)`: normalise values that cross a loop or branch boundary, so that the carry keeps one
      pytree structure across iterations.
    - `concrete(value)`: the plain array a domain value stands for (used for loop predicates and branch indices).
    """

    def __init__(self):
        self.records: dict[str, Any] = {}

    # ---------------------------------------------------------------- hooks
    def on_tag(self, value, name: str):
        return value

    def apply(self, eqn, invals) -> list:
        return _compat.bind_equation(eqn, invals)

    def enters(self, eqn, invals) -> bool:
        return any(contains(sub, tag_p) for sub in _compat.sub_jaxprs(eqn))

    def literal(self, value):
        return value

    def keeps_custom_rule(self, eqn) -> bool:
        return True

    def loop_values(self, values: list) -> list:
        return values

    def concrete(self, value):
        return value

    # ------------------------------------------------------------ machinery
    def child(self) -> "Interpreter":
        """A copy with the same configuration and no records, for a loop body or branch."""
        sub = copy.copy(self)
        sub.records = {}
        return sub

    def eval_jaxpr(self, closed, *args) -> list:
        """Evaluate `closed` (a ClosedJaxpr) on domain values `args`; returns the list of outputs."""
        jaxpr = closed.jaxpr
        env = {}

        def read(var):
            return self.literal(var.val) if isinstance(var, _compat.Literal) else env[var]

        for var, val in zip(jaxpr.constvars, closed.consts):
            env[var] = self.literal(val)
        if len(args) != len(jaxpr.invars):
            raise ValueError(f"jaxpr takes {len(jaxpr.invars)} inputs, got {len(args)}")
        for var, val in zip(jaxpr.invars, args):
            env[var] = val
        for eqn in jaxpr.eqns:
            invals = [read(v) for v in eqn.invars]
            outvals = self.eval_eqn(eqn, invals)
            for var, val in zip(eqn.outvars, outvals):
                env[var] = val
        return [read(v) for v in jaxpr.outvars]

    def eval_eqn(self, eqn, invals) -> list:
        prim = eqn.primitive
        if prim is tag_p:
            return [self.on_tag(invals[0], eqn.params["name"])]
        name = prim.name
        call_like = (
            name in _compat.JIT
            or name == _compat.CUSTOM_JVP
            or name in _compat.CUSTOM_VJP
            or name in _compat.REMAT
            or prim is composite_p
        )
        if (call_like or name in (_compat.SCAN, _compat.WHILE, _compat.COND)) and self.enters(eqn, invals):
            if call_like:
                outs = self.eval_jaxpr(_compat.call_body(eqn), *invals)
                if (name == _compat.CUSTOM_JVP or name in _compat.CUSTOM_VJP) and self.keeps_custom_rule(eqn):
                    return self._keep_custom_derivative(eqn, invals, outs)
                return outs
            if name == _compat.SCAN:
                return self._scan(eqn, invals)
            if name == _compat.WHILE:
                return self._while(eqn, invals)
            return self._cond(eqn, invals)
        return self.apply(eqn, invals)

    def _keep_custom_derivative(self, eqn, invals, outs) -> list:
        """Outputs of an entered `custom_jvp`/`custom_vjp` function whose values are those of the evaluated body
        (`outs`, sites read or rewritten) and whose derivatives are those of the function's own rule: `orig +
        stop_gradient(outs - orig)`. Only for plain-array domains; other domains keep `outs`."""
        if not all(eqx.is_array(v) for v in [*invals, *outs]):
            return outs
        originals = _compat.bind_equation(eqn, invals)
        return [
            o + lax.stop_gradient(v - o) if jnp.issubdtype(v.dtype, jnp.inexact) else v for o, v in zip(originals, outs)
        ]

    def _scan(self, eqn, invals) -> list:
        loop = _compat.scan_parts(eqn, invals)
        n_carry = len(loop.carry)

        def step(carry, x):
            sub = self.child()
            outs = sub.eval_jaxpr(loop.body, *loop.consts, *carry, *x)
            return self.loop_values(outs[:n_carry]), (outs[n_carry:], sub.records)

        carry, (ys, records) = lax.scan(
            step, self.loop_values(loop.carry), loop.xs, length=loop.length, reverse=loop.reverse, unroll=loop.unroll
        )
        self.records.update(records)
        return [*carry, *ys]

    def _while(self, eqn, invals) -> list:
        loop = _compat.while_parts(eqn, invals)

        def body_step(carry):
            sub = self.child()
            outs = sub.eval_jaxpr(loop.body, *loop.body_consts, *carry)
            return self.loop_values(outs), sub.records

        def cond_fn(state):
            (pred,) = self.child().eval_jaxpr(loop.cond, *loop.cond_consts, *state[0])
            return self.concrete(pred)

        carry = self.loop_values(loop.carry)
        record_shapes = jax.eval_shape(lambda c: body_step(c)[1], carry)
        records = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), record_shapes)
        carry, records = lax.while_loop(cond_fn, lambda state: body_step(state[0]), (carry, records))
        self.records.update(records)
        return list(carry)

    def _cond(self, eqn, invals) -> list:
        branches, index, operands = _compat.cond_parts(eqn, invals)
        index, operands = self.concrete(index), self.loop_values(operands)

        def branch_fn(branch):
            def run(ops):
                sub = self.child()
                return self.loop_values(sub.eval_jaxpr(branch, *ops)), sub.records

            return run

        branches = [branch_fn(b) for b in branches]
        structures = {jax.tree_util.tree_structure(jax.eval_shape(b, operands)[1]) for b in branches}
        if len(structures) > 1:
            raise ValueError(
                "sites tagged in only some branches of a lax.cond/lax.switch cannot be read or rewritten: "
                "tag the value after the branch, or tag it in every branch"
            )
        outs, records = lax.switch(index, branches, operands)
        self.records.update(records)
        return list(outs)
