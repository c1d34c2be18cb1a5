"""Contextual decomposition (CD-T, paper P1) as a JAX transformation."""

from . import scores as scores
from .decomposition import Decomposed as Decomposed
from .decomposition import UnsupportedOperationError as UnsupportedOperationError
from .decomposition import cd as cd
from .decomposition import propagate as propagate
from .rules import Rules as Rules
from .sources import Input as Input
from .sources import Pair as Pair
from .sources import Site as Site
from .sources import head_mask as head_mask
from .sources import position_mask as position_mask
