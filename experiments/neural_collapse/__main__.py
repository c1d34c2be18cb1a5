from experiments.command_line import run_from_command_line

from .config import NeuralCollapseConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    NeuralCollapseConfig(),
    NeuralCollapseConfig.quick(),
    "the unconstrained feature model only, shorter training, under a minute",
    main,
)
