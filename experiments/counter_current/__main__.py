from experiments.command_line import run_from_command_line

from .config import CounterCurrentConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    CounterCurrentConfig(),
    CounterCurrentConfig.quick(),
    "fewer training steps on a 10,000-image training subset, about a minute",
    main,
)
