from experiments.command_line import run_from_command_line

from .config import LocalAttributionConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    LocalAttributionConfig(),
    LocalAttributionConfig.quick(),
    "SST-2 only, the small stand-in classifier, four texts: a few minutes",
    main,
)
