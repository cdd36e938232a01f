"""LVM-Med-style second-order graph-matching pretraining loss (Nguyen et al., "LVM-Med:
Learning Large-Scale Self-Supervised Vision Models for Medical Imaging via Second-order Graph
Matching", NeurIPS 2023) as building blocks: kNN graphs and a GCN, vertex/edge affinities, a
deterministic QAP solver, and I-MLE gradients through it (Niepert et al., NeurIPS 2021).

The names are imported on first use (``from medssl.ssl.graphmatch import X`` works as before), so
that the method registry can read ``medssl.ssl.graphmatch.spec`` without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medssl.ssl.lazy import exports

if TYPE_CHECKING:
    from medssl.ssl.graphmatch.graph import (
        GCNLayer,
        GraphRefiner,
        knn_adjacency,
        normalized_adjacency,
    )
    from medssl.ssl.graphmatch.imle import (
        IMLEMatching,
        imle_match,
        map_matching,
        perturbation_noise,
    )
    from medssl.ssl.graphmatch.loss import (
        GraphMatchingLoss,
        cosine_affinity,
        edge_affinity_matrix,
        graph_groups,
        hamming_loss,
        local_similarity,
        matching_accuracy,
        qap_affinity_matrix,
        vertex_affinity,
    )
    from medssl.ssl.graphmatch.qap import (
        brute_force_qap,
        linear_assignment,
        qap_objective,
        solve_qap,
    )

__all__ = [
    "GCNLayer",
    "GraphMatchingLoss",
    "GraphRefiner",
    "IMLEMatching",
    "brute_force_qap",
    "cosine_affinity",
    "edge_affinity_matrix",
    "graph_groups",
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

_WHERE = {
    "GCNLayer": "medssl.ssl.graphmatch.graph",
    "GraphMatchingLoss": "medssl.ssl.graphmatch.loss",
    "GraphRefiner": "medssl.ssl.graphmatch.graph",
    "IMLEMatching": "medssl.ssl.graphmatch.imle",
    "brute_force_qap": "medssl.ssl.graphmatch.qap",
    "cosine_affinity": "medssl.ssl.graphmatch.loss",
    "edge_affinity_matrix": "medssl.ssl.graphmatch.loss",
    "graph_groups": "medssl.ssl.graphmatch.loss",
    "hamming_loss": "medssl.ssl.graphmatch.loss",
    "imle_match": "medssl.ssl.graphmatch.imle",
    "knn_adjacency": "medssl.ssl.graphmatch.graph",
    "linear_assignment": "medssl.ssl.graphmatch.qap",
    "local_similarity": "medssl.ssl.graphmatch.loss",
    "map_matching": "medssl.ssl.graphmatch.imle",
    "matching_accuracy": "medssl.ssl.graphmatch.loss",
    "normalized_adjacency": "medssl.ssl.graphmatch.graph",
    "perturbation_noise": "medssl.ssl.graphmatch.imle",
    "qap_affinity_matrix": "medssl.ssl.graphmatch.loss",
    "qap_objective": "medssl.ssl.graphmatch.qap",
    "solve_qap": "medssl.ssl.graphmatch.qap",
    "vertex_affinity": "medssl.ssl.graphmatch.loss",
}

__getattr__, __dir__ = exports(__name__, _WHERE)
