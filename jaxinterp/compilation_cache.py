"""JAX's persistent compilation cache, configured in one place for the command line, the experiments and the tests.

Compiled programs are kept under `jaxinterp.assets.cache_dir() / "jax-compilation"` (or `$JAXINTERP_JAX_CACHE`),
so a second process that compiles the same program (a transformer forward, a decomposition) loads it in a fraction
of the time. Every compilation is cached, however short: on CPU most of ours take well under a second each, and
many of them add up.
"""

import os
import pathlib

import jax

from .assets import cache_dir


def location() -> pathlib.Path:
    """The folder compiled programs are cached in: `$JAXINTERP_JAX_CACHE`, else `cache_dir()/jax-compilation`."""
    configured = os.environ.get("JAXINTERP_JAX_CACHE")
    return pathlib.Path(configured) if configured else cache_dir() / "jax-compilation"


def enable() -> pathlib.Path:
    """Switch the persistent compilation cache on, unless a cache folder is configured already.

    **Returns:** the folder in use.
    """
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(location()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return pathlib.Path(jax.config.jax_compilation_cache_dir)
