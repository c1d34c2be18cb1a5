"""Contextual decomposition (CD-T, paper P1) as a JAX transformation; the formulas are in `docs/cd.md`."""

from . import rule_table as rule_table
from . import rules as rules
from . import scores as scores
from .decomposition import Decomposed as Decomposed
from .decomposition import UnsupportedOperationError as UnsupportedOperationError
from .decomposition import cd as cd
from .decomposition import propagate as propagate
from .rule_table import Equation as Equation
from .rule_table import register_cd_rule as register_cd_rule
from .rule_table import register_composite_rule as register_composite_rule
from .rules import Rules as Rules
from .scores import classification_score as classification_score
from .scores import logit_difference as logit_difference
from .sources import Input as Input
from .sources import Pair as Pair
from .sources import Site as Site
from .sources import as_data as as_data
from .sources import head_mask as head_mask
from .sources import position_mask as position_mask
from .sweep import SourceStack as SourceStack
from .sweep import Swept as Swept
from .sweep import cd_sweep as cd_sweep
from .sweep import every_head as every_head
from .sweep import every_position as every_position
from .sweep import every_span as every_span
