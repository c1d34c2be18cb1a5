"""Neural differential equations: solver-heuristic regularisers (P32), multiplicative diffusion (P4), and for
generative neural SDEs (P22, P31): path signatures, signature MMD, simulated mean-field particle systems and scores of
generated paths; the Burgers and Darcy solvers of operator learning (P34, `pdes`)."""

from . import additive_diffusion as additive_diffusion
from . import gbm as gbm
from . import generative_scores as generative_scores
from . import mean_field as mean_field
from . import pdes as pdes
from . import signature_kernels as signature_kernels
from . import signatures as signatures
from .decomposed_solve import decompose_solution as decompose_solution
from .generative_scores import discriminative_score as discriminative_score
from .generative_scores import marginal_modes as marginal_modes
from .generative_scores import marginal_wasserstein as marginal_wasserstein
from .generative_scores import predictive_score as predictive_score
from .mean_field import FitzHughNagumoParameters as FitzHughNagumoParameters
from .mean_field import fitzhugh_nagumo as fitzhugh_nagumo
from .mean_field import opinion_dynamics as opinion_dynamics
from .regularisers import Heuristics as Heuristics
from .regularisers import HeuristicsSolver as HeuristicsSolver
from .regularisers import evaluations_per_step as evaluations_per_step
from .regularisers import solve_with_heuristics as solve_with_heuristics
from .regularisers import supports_stiffness as supports_stiffness
from .signature_kernels import median_bandwidth as median_bandwidth
from .signature_kernels import mmd_squared as mmd_squared
from .signature_kernels import signature_kernel_matrix as signature_kernel_matrix
from .signature_kernels import signature_mmd_squared as signature_mmd_squared
from .signatures import augment_path as augment_path
from .signatures import logsignature as logsignature
from .signatures import signature as signature
from .signatures import signature_combine as signature_combine
from .signatures import signature_size as signature_size
from .signatures import split_levels as split_levels
from .training import RegularisationWeights as RegularisationWeights
from .training import fit as fit
from .training import penalty as penalty
