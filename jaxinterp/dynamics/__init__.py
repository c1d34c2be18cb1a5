"""Neural differential equations: solver-heuristic regularisers (P32) and multiplicative diffusion (P4)."""

from . import additive_diffusion as additive_diffusion
from . import gbm as gbm
from .decomposed_solve import decompose_solution as decompose_solution
from .regularisers import Heuristics as Heuristics
from .regularisers import HeuristicsSolver as HeuristicsSolver
from .regularisers import evaluations_per_step as evaluations_per_step
from .regularisers import solve_with_heuristics as solve_with_heuristics
from .regularisers import supports_stiffness as supports_stiffness
from .training import RegularisationWeights as RegularisationWeights
from .training import fit as fit
from .training import penalty as penalty
