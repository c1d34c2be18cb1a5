from experiments.command_line import run_from_command_line

from .config import NeuralOperatorsConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    NeuralOperatorsConfig(),
    NeuralOperatorsConfig.quick(),
    "100 training samples per PDE and 200 steps per model, about a minute",
    main,
)
