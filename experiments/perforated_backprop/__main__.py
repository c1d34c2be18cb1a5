from experiments.command_line import run_from_command_line

from .config import PerforatedBackpropConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    PerforatedBackpropConfig(),
    PerforatedBackpropConfig.quick(),
    "MNIST only, three baseline widths, one perforated width with one dendrite round, short training",
    main,
)
