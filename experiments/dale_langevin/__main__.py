from experiments.command_line import run_from_command_line

from .config import DaleLangevinConfig
from .run import SLUG, main

run_from_command_line(
    SLUG,
    main.__doc__,
    DaleLangevinConfig(),
    DaleLangevinConfig.quick(),
    "scikit-learn digits, a few minutes on two CPU cores",
    main,
)
