"""`capture`: read named intermediate values."""

from collections.abc import Callable
from typing import Any

import equinox as eqx

from .interpreter import Interpreter, trace
from .sites import resolve_patterns, site_names_in


class _Recorder(Interpreter):
    def __init__(self, wanted: frozenset[str]):
        super().__init__()
        self.wanted = wanted

    def on_tag(self, value, name):
        if name in self.wanted:
            self.records[name] = value
        return value


class Captured(eqx.Module):
    """`f` with chosen sites read out; made by :func:`capture`. An equinox Module, so `eqx.filter_jit` treats
    the arrays of `f` as arguments, not constants."""

    f: Callable
    patterns: tuple[str, ...] = eqx.field(static=True)

    def __call__(self, *args, **kwargs) -> tuple[Any, dict[str, Any]]:
        closed, flat, rebuild = trace(self.f, args, kwargs)
        names = site_names_in(closed)
        matched = resolve_patterns(self.patterns or ("*",), names)
        recorder = _Recorder(frozenset(n for found in matched.values() for n in found))
        outs = recorder.eval_jaxpr(closed, *flat)
        return rebuild(outs), {n: recorder.records[n] for n in names if n in recorder.records}


def capture(f: Callable, *patterns: str) -> Captured:
    """Transform `f` so that it also returns the values of its named sites.

    **Arguments:**

    - `f`: any function of arrays (an equinox Module, a plain function, a Flax `apply`) that tags values with
      `jaxinterp.tag`.
    - `*patterns`: glob patterns over site names (`"blocks.*.attn.z"`); none means every site.

    **Returns:** a function with `f`'s signature returning `(output, {site_name: value})`. Sites inside a
    `lax.scan` body are stacked over iterations; inside a `while_loop`, the last iteration's value is kept.
    A pattern that matches no site raises `UnknownSiteError` naming the closest sites.
    """
    return Captured(f, tuple(patterns))
