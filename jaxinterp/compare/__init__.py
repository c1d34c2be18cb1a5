"""Comparing representations: aligning the units of two networks (convergent learning), relative representations
and zero-shot stitching, CKA, and neural collapse. See `docs/compare.md`."""

from .alignment import Correlations as Correlations
from .alignment import CorrelationStatistics as CorrelationStatistics
from .alignment import LinearMap as LinearMap
from .alignment import Matching as Matching
from .alignment import SparsePrediction as SparsePrediction
from .alignment import correlations as correlations
from .alignment import entropy as entropy
from .alignment import match_units as match_units
from .alignment import mutual_information as mutual_information
from .alignment import mutual_information_matrix as mutual_information_matrix
from .alignment import paired_correlations as paired_correlations
from .alignment import semi_match as semi_match
from .alignment import sparse_prediction as sparse_prediction
from .alignment import spectral_clusters as spectral_clusters
from .alignment import unit_correlations as unit_correlations
from .cka import cka as cka
from .cka import hsic as hsic
from .cka import hsic_unbiased as hsic_unbiased
from .cka import linear_cka as linear_cka
from .cka import minibatch_cka as minibatch_cka
from .cka import rbf_cka as rbf_cka
from .cka import rbf_gram as rbf_gram
from .collapse import ClassMeans as ClassMeans
from .collapse import class_means as class_means
from .collapse import collapse_metrics as collapse_metrics
from .collapse import nc1 as nc1
from .collapse import nc2 as nc2
from .collapse import nc3 as nc3
from .collapse import nc4 as nc4
from .relative import ANCHOR_STRATEGIES as ANCHOR_STRATEGIES
from .relative import Stitched as Stitched
from .relative import relative_representation as relative_representation
from .relative import select_anchors as select_anchors
from .relative import stitch as stitch
