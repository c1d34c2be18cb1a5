from experiments.command_line import run_from_command_line

from .config import PointerNetworksConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    PointerNetworksConfig(),
    PointerNetworksConfig.quick(),
    "small sets, a small network and 150 steps per problem, about a minute",
    main,
)
