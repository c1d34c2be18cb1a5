import argparse

import jax

from .config import DaleLangevinConfig
from .run import main

parser = argparse.ArgumentParser(prog="python -m experiments.dale_langevin", description=main.__doc__)
parser.add_argument("--quick", action="store_true", help="scikit-learn digits, a few minutes on two CPU cores")
args = parser.parse_args()
jax.config.update("jax_compilation_cache_dir", ".cache/jax")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
main(DaleLangevinConfig.quick() if args.quick else DaleLangevinConfig())
