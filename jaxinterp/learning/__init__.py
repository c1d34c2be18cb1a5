"""Learning rules as composable training procedures: each is an optax gradient transformation or a training step
with a documented signature, written for pure models so it applies to any model of the zoo.
"""

from .counter_current import counter_current_activations as counter_current_activations
from .counter_current import counter_current_loss as counter_current_loss
from .counter_current import counter_current_losses as counter_current_losses
from .counter_current import mean_squared_pair_loss as mean_squared_pair_loss
from .counter_current import prototype_alignment_loss as prototype_alignment_loss
from .feedback_alignment import FeedbackAlignmentLinear as FeedbackAlignmentLinear
from .feedback_alignment import feedback_alignment as feedback_alignment
from .feedback_alignment import feedback_alignment_dense as feedback_alignment_dense
