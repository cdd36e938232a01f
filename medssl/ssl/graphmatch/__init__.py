"""LVM-Med-style second-order graph-matching pretraining loss (Nguyen et al., "LVM-Med:
Learning Large-Scale Self-Supervised Vision Models for Medical Imaging via Second-order Graph
Matching", NeurIPS 2023) as building blocks: kNN graphs and a GCN, vertex/edge affinities, a
deterministic QAP solver, and I-MLE gradients through it (Niepert et al., NeurIPS 2021)."""

from medssl.ssl.graphmatch.graph import (
    GCNLayer,
    GraphRefiner,
    knn_adjacency,
    normalized_adjacency,
)
from medssl.ssl.graphmatch.imle import IMLEMatching, imle_match, map_matching, perturbation_noise
from medssl.ssl.graphmatch.loss import (
    GraphMatchingLoss,
    cosine_affinity,
    edge_affinity_matrix,
    hamming_loss,
    local_similarity,
    matching_accuracy,
    qap_affinity_matrix,
    vertex_affinity,
)
from medssl.ssl.graphmatch.qap import brute_force_qap, linear_assignment, qap_objective, solve_qap

__all__ = [
    "GCNLayer",
    "GraphMatchingLoss",
    "GraphRefiner",
    "IMLEMatching",
    "brute_force_qap",
    "cosine_affinity",
    "edge_affinity_matrix",
    "hamming_loss",
    "imle_match",
    "knn_adjacency",
    "linear_assignment",
    "local_similarity",
    "map_matching",
    "matching_accuracy",
    "normalized_adjacency",
    "perturbation_noise",
    "qap_affinity_matrix",
    "qap_objective",
    "solve_qap",
    "vertex_affinity",
]
