from experiments.command_line import run_from_command_line

from .config import LatentSteeringConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    LatentSteeringConfig(),
    LatentSteeringConfig.quick(),
    "sentiment only, four layers, four prompts, eight new tokens, the stand-in judge",
    main,
)
