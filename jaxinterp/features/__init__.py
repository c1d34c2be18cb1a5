"""Feature directions and their use: concept directions by difference-in-means, linear probes, activation
steering (ACT and G-ACT, P25), model-native skills (P36), k-means (see `docs/steering.md`), sparse autoencoders
with SAELens's conventions (P12, see `docs/sae.md`), semi-NMF of activations (P5) and an on-disk activation store
(see `docs/snmf.md`)."""

from .activation_store import ActivationStore as ActivationStore
from .activation_store import StoreError as StoreError
from .activation_store import StoreSettings as StoreSettings
from .activation_store import build_activation_store as build_activation_store
from .clustering import Clusters as Clusters
from .clustering import kmeans as kmeans
from .directions import diff_in_means as diff_in_means
from .directions import mean_pool as mean_pool
from .feature_cards import FeatureCard as FeatureCard
from .feature_cards import FeatureContext as FeatureContext
from .feature_cards import feature_card_html as feature_card_html
from .feature_cards import feature_cards as feature_cards
from .feature_cards import feature_density as feature_density
from .feature_cards import write_feature_card as write_feature_card
from .probes import Probe as Probe
from .probes import fit_probe as fit_probe
from .probes import probe_accuracy as probe_accuracy
from .probes import refine_probe as refine_probe
from .sae import SAE_ARCHITECTURES as SAE_ARCHITECTURES
from .sae import SAEConfig as SAEConfig
from .sae import SparseAutoencoder as SparseAutoencoder
from .sae import head_attribution as head_attribution
from .sae import init_sae as init_sae
from .sae import sae_metrics as sae_metrics
from .sae import train_sae as train_sae
from .sae_format import SAELENS_FORMAT_VERSION as SAELENS_FORMAT_VERSION
from .sae_format import load_saelens as load_saelens
from .sae_format import save_saelens as save_saelens
from .skills import SkillBasis as SkillBasis
from .skills import select_along as select_along
from .skills import select_for_coverage as select_for_coverage
from .skills import skill_basis as skill_basis
from .snmf import SNMF as SNMF
from .snmf import HierarchicalSNMF as HierarchicalSNMF
from .snmf import hierarchical_snmf as hierarchical_snmf
from .snmf import snmf as snmf
from .snmf import snmf_init as snmf_init
from .snmf import winner_take_all as winner_take_all
from .steering import GACT as GACT
from .steering import Strength as Strength
from .steering import act_direction as act_direction
from .steering import direction_accuracy as direction_accuracy
from .steering import fit_gact as fit_gact
from .steering import kl_divergence as kl_divergence
from .steering import refine_gact as refine_gact
from .steering import steer as steer
from .steering import strength_for_divergence as strength_for_divergence
