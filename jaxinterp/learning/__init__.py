"""Learning rules as composable training procedures: each is an optax gradient transformation or a training step
with a documented signature, written for pure models so it applies to any model of the zoo.
"""

from .fast_slow import anchor_penalty as anchor_penalty
from .fast_slow import consolidate as consolidate
from .fast_slow import diagonal_fisher as diagonal_fisher
from .fast_slow import fast_adapt as fast_adapt
from .fast_slow import fast_weight_loss as fast_weight_loss
from .fast_slow import learn_task as learn_task
from .fast_slow import zero_importance as zero_importance
