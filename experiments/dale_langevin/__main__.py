import jax

from experiments.command_line import run_from_command_line

from .config import DaleLangevinConfig
from .run import SLUG, main

jax.config.update("jax_compilation_cache_dir", ".cache/jax")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
run_from_command_line(
    SLUG,
    main.__doc__,
    DaleLangevinConfig(),
    DaleLangevinConfig.quick(),
    "scikit-learn digits, a few minutes on two CPU cores",
    main,
)
