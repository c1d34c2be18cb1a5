"""jaxinterp: interpretability methods as JAX function transformations."""

from . import assets as assets
from . import data as data
from .capture import capture as capture
from .cdt import Input as Input
from .cdt import Rules as Rules
from .cdt import Site as Site
from .cdt import head_mask as head_mask
from .cdt import position_mask as position_mask
from .cdt import scores as cd_scores
from .cdt.decomposition import cd as cd
from .composites import activation as activation
from .composites import attention as attention
from .composites import layer_norm as layer_norm
from .composites import rms_norm as rms_norm
from .intervene import intervene as intervene
from .sites import UnknownSiteError as UnknownSiteError
from .sites import site_names as site_names
from .sites import tag as tag

__version__ = "0.1.0"
