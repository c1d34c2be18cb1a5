"""The model zoo: equinox Modules for one example, with named sites, and loaders for real checkpoints."""

from .cnn import CNN as CNN
from .latent_ode import LatentODE as LatentODE
from .latent_sde import LatentSDE as LatentSDE
from .loading import WeightFileError as WeightFileError
from .loading import from_arrays as from_arrays
from .loading import load as load
from .loading import load_minilm as load_minilm
from .loading import load_smollm2 as load_smollm2
from .loading import sentence_embedding as sentence_embedding
from .mlp import MLP as MLP
from .neural_cde import NeuralCDE as NeuralCDE
from .neural_ode import BatchedField as BatchedField
from .neural_ode import MLPVectorField as MLPVectorField
from .neural_ode import NeuralODE as NeuralODE
from .neural_ode import NeuralODEClassifier as NeuralODEClassifier
from .neural_sde import DiagonalNoiseTerm as DiagonalNoiseTerm
from .neural_sde import DiagonalSDESolve as DiagonalSDESolve
from .neural_sde import NeuralSDE as NeuralSDE
from .rnn import GRUClassifier as GRUClassifier
from .rnn import LSTMClassifier as LSTMClassifier
from .transformer import Transformer as Transformer
from .transformer import TransformerConfig as TransformerConfig
from .transformer import bert_config as bert_config
from .transformer import gpt2_config as gpt2_config
from .transformer import llama_config as llama_config
