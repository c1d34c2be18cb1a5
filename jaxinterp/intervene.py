"""`intervene`: rewrite named intermediate values (activation patching, steering, ablation)."""

import inspect
from collections.abc import Callable, Mapping

import equinox as eqx

from . import _compat
from .interpreter import Interpreter, trace
from .sites import resolve_patterns, site_names_in


def _takes_name(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


class _Rewriter(Interpreter):
    def __init__(self, edits: Mapping[str, Callable]):
        super().__init__()
        self.edits = edits

    def keeps_custom_rule(self, eqn):
        inside = site_names_in(_compat.call_body(eqn))
        return not any(name in self.edits for name in inside)

    def on_tag(self, value, name):
        fn = self.edits.get(name)
        if fn is None:
            return value
        new = fn(value, name) if _takes_name(fn) else fn(value)
        if getattr(new, "shape", None) != value.shape:
            raise ValueError(
                f"the intervention at site {name!r} returned shape {getattr(new, 'shape', type(new))}, "
                f"but the site has shape {value.shape}"
            )
        return new.astype(value.dtype)


class Intervened(eqx.Module):
    """`f` with chosen sites rewritten; made by :func:`intervene`."""

    f: Callable
    edits: tuple[tuple[str, Callable], ...]

    def __call__(self, *args, **kwargs):
        closed, flat, rebuild = trace(self.f, args, kwargs)
        matched = resolve_patterns([p for p, _ in self.edits], site_names_in(closed))
        by_name = {}
        for pattern, fn in self.edits:
            for name in matched[pattern]:
                by_name.setdefault(name, fn)
        return rebuild(_Rewriter(by_name).eval_jaxpr(closed, *flat))


def intervene(f: Callable, edits: Mapping[str, Callable]) -> Intervened:
    """Transform `f` so that chosen named sites are replaced.

    **Arguments:**

    - `f`: a function that tags values with `jaxinterp.tag`.
    - `edits`: `{pattern: fn}`; at every site matching the glob `pattern` the value `x` becomes `fn(x)`, or
      `fn(x, name)` when `fn` takes two positional arguments. Where several patterns match one site, the first
      listed wins. The replacement must keep the site's shape.

    **Returns:** a function with `f`'s signature. A `custom_jvp`/`custom_vjp` function keeps its own derivative rule
    unless a site inside it is rewritten; then the rewritten body is differentiated. Activation patching is `intervene` with values cached from a
    corrupted run: `intervene(model, {"blocks.3.attn.z": lambda z: z.at[:, 5].set(cache["blocks.3.attn.z"][:, 5])})`.
    """
    return Intervened(f, tuple(edits.items()))
