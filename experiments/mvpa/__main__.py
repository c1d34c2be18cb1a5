from experiments.command_line import run_from_command_line

from .config import MVPAConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    MVPAConfig(),
    MVPAConfig.quick(),
    "BasicMotions and EyesOpenShut, one seed, 100 steps, one block, about a minute",
    main,
)
