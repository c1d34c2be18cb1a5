"""Every access to JAX internals that may change between JAX releases lives here.

jaxinterp is tested with the JAX range pinned in pyproject.toml. The interpreter needs the jaxpr data structures
(`jax.extend.core`), the per-primitive rule tables for differentiation, batching and lowering, and the names of the
higher-order primitives it recurses into.
"""

from typing import Any, NamedTuple

import jax
import jax.extend.core as jex_core
from jax.interpreters import ad, batching, mlir

ClosedJaxpr = jex_core.ClosedJaxpr
Jaxpr = jex_core.Jaxpr
Literal = jex_core.Literal
Primitive = jex_core.Primitive
jaxpr_as_fun = jex_core.jaxpr_as_fun

# Names of the higher-order primitives the interpreter handles (as `eqn.primitive.name`).
JIT = frozenset({"jit", "pjit", "closed_call", "core_call"})
CUSTOM_JVP = "custom_jvp_call"
CUSTOM_VJP = frozenset({"custom_vjp_call", "custom_vjp_call_jaxpr"})
REMAT = frozenset({"remat2", "checkpoint", "remat"})
SCAN = "scan"
WHILE = "while"
COND = "cond"


# Primitives of equinox's internals that diffrax's solves emit; each routes its floating-point operands linearly
# (buffer writes, selections by a predicate, identities that only affect differentiation or batching).
EQUINOX_ROUTING = ("maybe_set", "select_if_vmap", "nondifferentiable_backward", "nontraceable", "nonbatchable")


def as_closed(jaxpr) -> ClosedJaxpr:
    """Return `jaxpr` as a ClosedJaxpr (remat carries an open Jaxpr, the other call primitives a closed one)."""
    return jaxpr if isinstance(jaxpr, ClosedJaxpr) else ClosedJaxpr(jaxpr, ())


def call_body(eqn) -> ClosedJaxpr:
    """The sub-jaxpr of a call-like equation (jit, custom_jvp/vjp call, remat)."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in eqn.params:
            return as_closed(eqn.params[key])
    raise KeyError(f"no sub-jaxpr in {eqn.primitive.name} (params {sorted(eqn.params)})")


def sub_jaxprs(eqn):
    """All sub-jaxprs in an equation's parameters, as open Jaxprs."""
    found = []
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, ClosedJaxpr):
                found.append(item.jaxpr)
            elif isinstance(item, Jaxpr):
                found.append(item)
    return found


class ScanParts(NamedTuple):
    """A `scan` equation taken apart: its body, its operands split by role, and the loop's settings."""

    body: ClosedJaxpr
    consts: list
    carry: list
    xs: list
    length: int
    reverse: bool
    unroll: int | bool


def scan_parts(eqn, invals) -> ScanParts:
    """Split the operands of a `scan` equation into constants, initial carry and scanned-over values."""
    params = eqn.params
    n_consts, n_carry = params["num_consts"], params["num_carry"]
    return ScanParts(
        params["jaxpr"],
        list(invals[:n_consts]),
        list(invals[n_consts : n_consts + n_carry]),
        list(invals[n_consts + n_carry :]),
        params["length"],
        params["reverse"],
        params["unroll"],
    )


class WhileParts(NamedTuple):
    """A `while` equation taken apart: predicate and body programs with their constants, and the initial carry."""

    cond: ClosedJaxpr
    cond_consts: list
    body: ClosedJaxpr
    body_consts: list
    carry: list


def while_parts(eqn, invals) -> WhileParts:
    """Split the operands of a `while` equation into the predicate's constants, the body's constants and the carry."""
    params = eqn.params
    n_cond, n_body = params["cond_nconsts"], params["body_nconsts"]
    return WhileParts(
        params["cond_jaxpr"],
        list(invals[:n_cond]),
        params["body_jaxpr"],
        list(invals[n_cond : n_cond + n_body]),
        list(invals[n_cond + n_body :]),
    )


def cond_parts(eqn, invals) -> tuple[list, Any, list]:
    """A `cond` equation taken apart. **Returns:** `(branches, index, operands)`."""
    return list(eqn.params["branches"]), invals[0], list(invals[1:])


def is_concrete(x) -> bool:
    """Whether `x` is an array with a known value (not a tracer of `jit`, `vmap` or `grad`)."""
    return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)


def define_identity_primitive(name: str) -> Primitive:
    """A primitive `p.bind(x, **params) -> x` that costs nothing when compiled.

    Differentiation passes the tangent through unchanged (the primal keeps the primitive, so transformations that
    trace after `jax.grad` still see it); batching keeps the batch axis where it is.
    """
    prim = Primitive(name)
    prim.def_impl(lambda x, **params: x)
    prim.def_abstract_eval(lambda x, **params: x)
    mlir.register_lowering(prim, lambda ctx, x, **params: [x])

    def jvp(primals, tangents, **params):
        return prim.bind(primals[0], **params), tangents[0]

    def batch(args, dims, **params):
        return prim.bind(args[0], **params), dims[0]

    ad.primitive_jvps[prim] = jvp
    batching.primitive_batchers[prim] = batch
    return prim


def define_call_primitive(name: str) -> Primitive:
    """A primitive `p.bind(*args, jaxpr=ClosedJaxpr, **static)` that evaluates `jaxpr` on `args`.

    It marks a named composite operation in a traced program. Compiled, it is inlined; differentiated, it is
    replaced by the derivative of its body; batched, it stays one marked operation with a batched body.
    """
    prim = Primitive(name)
    prim.multiple_results = True

    def impl(*args, jaxpr, **params):
        return jaxpr_as_fun(jaxpr)(*args)

    def abstract_eval(*args, jaxpr, **params):
        return list(jaxpr.out_avals)

    def lowering(ctx, *args, jaxpr, **params):
        return mlir.lower_fun(jaxpr_as_fun(jaxpr), multiple_results=True)(ctx, *args)

    def jvp(primals, tangents, *, jaxpr, **params):
        tangents = [ad.instantiate_zeros(t) for t in tangents]
        return jax.jvp(jaxpr_as_fun(jaxpr), list(primals), tangents)

    def batch(args, dims, *, jaxpr, **params):
        args = [a if d is None else jax.numpy.moveaxis(a, d, 0) for a, d in zip(args, dims)]
        in_axes = [None if d is None else 0 for d in dims]
        batched = jax.make_jaxpr(jax.vmap(jaxpr_as_fun(jaxpr), in_axes=in_axes))(*args)
        outs = prim.bind(*args, jaxpr=batched, **params)
        return outs, [0] * len(outs)

    prim.def_impl(impl)
    prim.def_abstract_eval(abstract_eval)
    mlir.register_lowering(prim, lowering)
    ad.primitive_jvps[prim] = jvp
    batching.primitive_batchers[prim] = batch
    return prim


def bind_equation(eqn, invals) -> list:
    """Evaluate one jaxpr equation on new inputs, as `jax.core.eval_jaxpr` does (call primitives such as
    `custom_jvp_call` need their parameters turned back into bind arguments). **Returns:** the list of outputs."""
    out = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]
