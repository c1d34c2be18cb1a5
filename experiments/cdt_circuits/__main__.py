from experiments.command_line import run_from_command_line

from . import __doc__ as description
from .config import Config, quick
from .run import SLUG, main

run_from_command_line(
    SLUG, description, Config(), quick(), "tracr-reverse and the induction model, small batches", main
)
