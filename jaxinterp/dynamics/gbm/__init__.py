"""Multiplicative denoising diffusion with geometric Brownian motion (P4, "Dale meets Langevin").

The forward process `GeometricBrownianMotion` (closed-form log-normal marginals and diffrax terms), the loss
`multiplicative_score_matching_loss`, the prior `LogNormalPrior`, and three samplers: `dale_langevin_sample`
(exponentiated, log space), `ambient_multiplicative_sample` (ambient space) and `reverse_sde_sample` (the log-space
reverse-time SDE with any diffrax solver). The additive baselines live in `jaxinterp.dynamics.additive_diffusion`.
"""

from ._loss import multiplicative_score_matching_loss as multiplicative_score_matching_loss
from ._prior import LogNormalPrior as LogNormalPrior
from ._process import GeometricBrownianMotion as GeometricBrownianMotion
from ._process import ScoreFn as ScoreFn
from ._process import log_normal_marginal_score as log_normal_marginal_score
from ._reverse_sde import reverse_sde_sample as reverse_sde_sample
from ._samplers import ambient_multiplicative_sample as ambient_multiplicative_sample
from ._samplers import ambient_multiplicative_step as ambient_multiplicative_step
from ._samplers import dale_langevin_sample as dale_langevin_sample
from ._samplers import dale_langevin_step as dale_langevin_step
