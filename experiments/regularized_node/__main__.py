import argparse

from . import __doc__ as description
from .config import Config, quick
from .run import main

parser = argparse.ArgumentParser(prog="python -m experiments.regularized_node", description=description)
parser.add_argument("--quick", action="store_true", help="sklearn digits, 2 seeds, 100 steps: a smoke run")
parser.add_argument("--seed", type=int, default=None, help="the first seed (default: the config's)")
arguments = parser.parse_args()
config = quick() if arguments.quick else Config()
if arguments.seed is not None:
    config = config.replace(seed=arguments.seed)
main(config)
