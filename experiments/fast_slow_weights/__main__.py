from experiments.command_line import run_from_command_line

from .config import FastSlowWeightsConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    FastSlowWeightsConfig(),
    FastSlowWeightsConfig.quick(),
    "MNIST only, two runs, 500 test images per class, under a minute",
    main,
)
