from experiments.command_line import run_from_command_line

from .config import CerebellarDNIConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    CerebellarDNIConfig(),
    CerebellarDNIConfig.quick(),
    "one seed, shorter training on every task, about a minute",
    main,
)
