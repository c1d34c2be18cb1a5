from experiments.command_line import run_from_command_line

from .config import SNMFvsSAEConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    SNMFvsSAEConfig(),
    SNMFvsSAEConfig.quick(),
    "sentiment only, few texts, one KL target, four prompts, six new tokens, the stand-in judge: a few minutes",
    main,
)
