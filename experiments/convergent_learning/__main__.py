from experiments.command_line import run_from_command_line

from .config import ConvergentLearningConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    ConvergentLearningConfig(),
    ConvergentLearningConfig.quick(),
    "two small CNNs, short training, about a minute on two CPU cores",
    main,
)
