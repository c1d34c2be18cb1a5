from experiments.command_line import run_from_command_line

from .config import RelativeRepresentationsConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    RelativeRepresentationsConfig(),
    RelativeRepresentationsConfig.quick(),
    "MNIST, two seeds, short training, about a minute on two CPU cores",
    main,
)
