"""jaxinterp: interpretability methods as JAX function transformations.

The public API is what this module exports. `jaxinterp.interpreter` is semi-public: the jaxpr interpreter that
`capture`, `intervene` and `cd` share, documented for those who write a new transformation, and allowed to change
between minor versions.
"""

from . import assets as assets
from . import circuits as circuits
from . import compare as compare
from . import compilation_cache as compilation_cache
from . import data as data
from . import features as features
from . import generative_metrics as generative_metrics
from . import interpreter as interpreter
from . import learning as learning
from . import neurons as neurons
from . import patching as patching
from . import sharding as sharding
from .capture import Captured as Captured
from .capture import capture as capture
from .cdt import Decomposed as Decomposed
from .cdt import Equation as Equation
from .cdt import Input as Input
from .cdt import Pair as Pair
from .cdt import Rules as Rules
from .cdt import Site as Site
from .cdt import SourceStack as SourceStack
from .cdt import Swept as Swept
from .cdt import UnsupportedOperationError as UnsupportedOperationError
from .cdt import as_data as as_data
from .cdt import cd as cd
from .cdt import cd_sweep as cd_sweep
from .cdt import classification_score as classification_score
from .cdt import every_head as every_head
from .cdt import every_position as every_position
from .cdt import every_span as every_span
from .cdt import head_mask as head_mask
from .cdt import logit_difference as logit_difference
from .cdt import position_mask as position_mask
from .cdt import propagate as propagate
from .cdt import register_cd_rule as register_cd_rule
from .cdt import register_composite_rule as register_composite_rule
from .composites import activation as activation
from .composites import attention as attention
from .composites import composite as composite
from .composites import layer_norm as layer_norm
from .composites import rms_norm as rms_norm
from .intervene import Intervened as Intervened
from .intervene import intervene as intervene
from .sites import UnknownSiteError as UnknownSiteError
from .sites import site_names as site_names
from .sites import tag as tag
from .training import LossFn as LossFn
from .training import minibatches as minibatches
from .training import train as train

__version__ = "0.1.0"


def __getattr__(name: str):
    # `jaxinterp.dynamics` pulls in diffrax, lineax and optimistix (about 0.6 s): imported on first use only
    if name == "dynamics":
        import importlib

        return importlib.import_module(".dynamics", __name__)
    raise AttributeError(f"module 'jaxinterp' has no attribute {name!r}")
