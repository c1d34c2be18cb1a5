"""The command line every experiment shares: `python -m experiments.<slug> [--quick] [--seed N] [--devices N]`."""

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from jaxinterp import compilation_cache, sharding


def run_from_command_line(slug: str, description: str, full: Any, quick: Any, quick_help: str, main: Callable) -> None:
    """Parse `--quick`, `--seed` and `--devices` and call `main` with the chosen configuration (inside a
    `jaxinterp.sharding.training_mesh` over that many devices when `--devices` is given).

    **Arguments:**

    - `slug`: the experiment's folder name (for the usage line).
    - `description`: what the experiment does (for `--help`).
    - `full`, `quick`: the full run's and the smoke run's configurations (frozen dataclasses with a `seed` field).
    - `quick_help`: what `--quick` runs.
    - `main`: the experiment's entry point, called with the configuration.
    """
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{slug}", description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--seed", type=int, default=None, help="the first seed (default: the config's)")
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        help="train data-parallel on this many devices (default: one); see docs/sharding.md",
    )
    arguments = parser.parse_args()
    compilation_cache.enable()
    config = quick if arguments.quick else full
    if arguments.seed is not None:
        config = dataclasses.replace(config, seed=arguments.seed)
    mesh = None if arguments.devices is None else sharding.mesh(arguments.devices)
    with sharding.training_mesh(mesh):
        main(config)
