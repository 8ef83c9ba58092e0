"""ReID evaluation: distances, CMC / mAP / mINP and k-reciprocal re-ranking (NumPy/SciPy only).

This package imports nothing else from tfreid, so evaluation works without TensorFlow.

Example:
    >>> from tfreid.metrics import compute_distance_matrix, evaluate_rank
    >>> distmat = compute_distance_matrix(qf, gf, metric="cosine")          # doctest: +SKIP
    >>> result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids) # doctest: +SKIP
    >>> result.mAP, result.cmc[0]                                            # doctest: +SKIP
"""

from tfreid.metrics.distance import METRICS, compute_distance_matrix
from tfreid.metrics.rank import PROTOCOLS, RankResult, evaluate_rank
from tfreid.metrics.rank_features import evaluate_features
from tfreid.metrics.rerank import re_ranking, re_ranking_from_features, topk_stable

__all__ = [
    "METRICS",
    "PROTOCOLS",
    "RankResult",
    "compute_distance_matrix",
    "evaluate_features",
    "evaluate_rank",
    "re_ranking",
    "re_ranking_from_features",
    "topk_stable",
]
