"""Named sites: `tag(x, name)` marks an intermediate value so transformations can read or rewrite it."""

import difflib
import fnmatch
from collections.abc import Iterable, Sequence

import jax

from . import _compat

tag_p = _compat.define_identity_primitive("jaxinterp_tag")


def tag(x: jax.Array, name: str) -> jax.Array:
    """Name an intermediate value.

    Under plain execution, `jit`, `vmap` and `grad` this is the identity and costs nothing once compiled;
    `capture`, `intervene` and `cd` see it and act there.

    **Arguments:**

    - `x`: the value (a JAX array).
    - `name`: its site name, dotted in the TransformerLens spirit, e.g. `"blocks.3.attn.z"`.

    **Returns:** `x`, unchanged.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"a site name must be a non-empty string, got {name!r}")
    return tag_p.bind(x, name=name)


class UnknownSiteError(KeyError):
    """A site pattern matched no tagged value of the traced function."""

    def __str__(self):
        return str(self.args[0])


def site_names_in(closed_jaxpr) -> list[str]:
    """Every site name tagged in a traced program, sub-programs included, in program order (no repeats)."""
    names: dict[str, None] = {}

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive is tag_p:
                names[eqn.params["name"]] = None
            for sub in _compat.sub_jaxprs(eqn):
                walk(sub)

    walk(closed_jaxpr.jaxpr)
    return list(names)


def site_names(f, *args, **kwargs) -> list[str]:
    """The site names `f(*args, **kwargs)` tags, in the order it tags them (traced, not run)."""
    return site_names_in(jax.make_jaxpr(lambda a, k: f(*a, **k))(args, kwargs))


def resolve_patterns(patterns: Iterable[str], available: Sequence[str]) -> dict[str, list[str]]:
    """Match glob patterns (`*` spans dots) against site names.

    **Arguments:**

    - `patterns`: glob patterns such as `"blocks.*.attn.z"`, or exact names.
    - `available`: the site names the traced function has.

    **Returns:** a dict from each pattern to the names it matches.

    **Raises:** `UnknownSiteError` when a pattern matches nothing, naming the closest existing sites.
    """
    matches = {}
    for pattern in patterns:
        found = [name for name in available if fnmatch.fnmatchcase(name, pattern)]
        if not found:
            close = difflib.get_close_matches(pattern, available, n=5, cutoff=0.4)
            hint = f" Closest sites: {', '.join(close)}." if close else ""
            shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
            raise UnknownSiteError(
                f"no site matches {pattern!r}.{hint} The function tags {len(available)} sites: {shown or 'none'}."
            )
        matches[pattern] = found
    return matches
