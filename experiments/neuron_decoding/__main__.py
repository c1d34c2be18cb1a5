from experiments.command_line import run_from_command_line

from .config import NeuronDecodingConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    NeuronDecodingConfig(),
    NeuronDecodingConfig.quick(),
    "the last layer of SmolLM2 decoded, shorter training of the small models, fewer texts and one layer labelled",
    main,
)
