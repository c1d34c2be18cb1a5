from experiments.command_line import run_from_command_line

from . import __doc__ as description
from .config import Config
from .run import SLUG, main

run_from_command_line(
    SLUG, description, Config(), Config.quick(), "opinion dynamics only, small sizes, few steps: about a minute", main
)
