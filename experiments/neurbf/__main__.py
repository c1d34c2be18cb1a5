from experiments.command_line import run_from_command_line

from .config import NeuRBFConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    NeuRBFConfig(),
    NeuRBFConfig.quick(),
    "two 32x32 images, one parameter budget, a small distance field, about a minute",
    main,
)
