"""JAX's persistent compilation cache, configured in one place for the command line, the experiments and the tests.

Compiled programs are kept under `jaxinterp.assets.cache_dir() / "jax-compilation"` (or `$JAXINTERP_JAX_CACHE`;
`JAXINTERP_JAX_CACHE=off` switches the cache off), so a second process that compiles the same program (a
transformer forward, a decomposition) loads it in a fraction of the time.

Two choices guard against what the cache can do wrong:

- Only programs whose compilation takes at least `MIN_COMPILE_SECONDS` are written. Those are the ones worth
  keeping, and each write serialises an executable, which jaxlib 0.10's CPU client has been seen to crash in
  (a segmentation fault inside `serialize()`, a few times in a few thousand writes); fewer writes, fewer chances.
- A size limit (`MAX_BYTES`). Without one JAX writes an entry in place and reads it without a lock, so a process
  sharing the folder (the second of two experiments, a notebook) could load an executable another is still writing.
  With a limit JAX holds a file lock around every read and write, and evicts the least recently used programs.

The tests cache every program, however short, without a size limit (`tests/conftest.py`): they build many functions
anew whose programs were compiled before, and with a limit JAX lists the whole folder at every write, which costs
more than the writes themselves once thousands of small programs are cached.

The two kinds of cache live in separate subfolders, `bounded/` and `unbounded/`. JAX keeps an access-time file
beside every entry only when there is a size limit, and its eviction fails on an entry without one, so a bounded
process sharing a folder with the tests' entries could never write again (each write warned "Error writing
persistent compilation cache entry").
"""

import os
import pathlib

import jax

from .assets import cache_dir

MAX_BYTES = 4 * 2**30
"""The cache's size limit: beyond it the least recently used compiled programs are evicted."""

MIN_COMPILE_SECONDS = 1.0
"""Programs that compile faster than this are not written to the cache."""

BOUNDED, UNBOUNDED = "bounded", "unbounded"
"""The subfolders of `location()` for caches with and without a size limit."""

OFF = "off"
"""The value of `$JAXINTERP_JAX_CACHE` that switches the cache off."""


def location() -> pathlib.Path | None:
    """The folder compiled programs are cached in: `$JAXINTERP_JAX_CACHE`, else `cache_dir()/jax-compilation`;
    `None` when `$JAXINTERP_JAX_CACHE` is `off`."""
    configured = os.environ.get("JAXINTERP_JAX_CACHE")
    if configured == OFF:
        return None
    return pathlib.Path(configured) if configured else cache_dir() / "jax-compilation"


def enable(min_compile_seconds: float = MIN_COMPILE_SECONDS, max_bytes: int | None = MAX_BYTES) -> pathlib.Path | None:
    """Switch the persistent compilation cache on, unless a cache folder is configured already or
    `$JAXINTERP_JAX_CACHE` is `off`.

    **Arguments:** `min_compile_seconds` (programs compiling faster are not written); `max_bytes` (the size limit,
    under which JAX locks the folder for every read and write and evicts the least recently used programs; `None`
    for no limit and no lock).

    **Returns:** the folder in use (`location() / "bounded"` or `/ "unbounded"`), or `None` when the cache is off.
    """
    folder = location()
    if folder is not None:
        folder = folder / (UNBOUNDED if max_bytes is None else BOUNDED)
    if jax.config.jax_compilation_cache_dir is None and folder is not None:
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
        jax.config.update("jax_compilation_cache_max_size", -1 if max_bytes is None else max_bytes)
    configured = jax.config.jax_compilation_cache_dir
    return None if configured is None else pathlib.Path(configured)
