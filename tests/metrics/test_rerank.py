"""Tests for tfreid.metrics.re_ranking against a line-by-line port of the reference implementation
(torchreid / reid-strong-baseline ``re_ranking``; its argsort made stable so ties are defined)."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from tfreid.metrics import evaluate_rank, re_ranking, re_ranking_from_features
from tfreid.metrics.rerank import estimate_memory_bytes


def reference_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    original_dist = np.concatenate(
        [np.concatenate([q_q_dist, q_g_dist], axis=1),
         np.concatenate([q_g_dist.T, g_g_dist], axis=1)], axis=0)
    original_dist = np.power(original_dist, 2).astype(np.float32)
    original_dist = np.transpose(1. * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist, kind="stable").astype(np.int32)
    query_num = q_g_dist.shape[0]
    gallery_num = q_g_dist.shape[0] + q_g_dist.shape[1]
    all_num = gallery_num
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, :k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            half = int(np.around(k1 / 2.)) + 1
            candidate_forward_k_neigh_index = initial_rank[candidate, :half]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index, :half]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > \
                    2. / 3 * len(candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index,
                                                         candidate_k_reciprocal_index)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1. * weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    invIndex = [np.where(V[:, i] != 0)[0] for i in range(gallery_num)]
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(
                V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2. - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]


def _blocks(seed, nq, ng, dim=8, clusters=6):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)) * 2
    qf = centres[rng.integers(0, clusters, nq)] + rng.standard_normal((nq, dim))
    gf = centres[rng.integers(0, clusters, ng)] + rng.standard_normal((ng, dim))
    return qf, gf, cdist(qf, gf), cdist(qf, qf), cdist(gf, gf)


@pytest.mark.parametrize("seed,nq,ng,k1,k2,lam", [
    (0, 10, 30, 20, 6, 0.3), (1, 10, 30, 5, 3, 0.3), (2, 12, 40, 8, 1, 0.5), (3, 6, 20, 30, 6, 0.0),
])
def test_matches_reference_port(seed, nq, ng, k1, k2, lam):
    _, _, qg, qq, gg = _blocks(seed, nq, ng)
    ours = re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    ref = reference_re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    assert ours.shape == (nq, ng) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_ties_match_stable_reference():
    rng = np.random.default_rng(4)
    qf, gf = rng.integers(0, 3, (10, 3)), rng.integers(0, 3, (30, 3))  # many equal distances
    qg, qq, gg = (cdist(a, b, "cityblock") for a, b in ((qf, gf), (qf, qf), (gf, gf)))
    np.testing.assert_allclose(re_ranking(qg, qq, gg, k1=6, k2=3),
                               reference_re_ranking(qg, qq, gg, k1=6, k2=3), rtol=1e-5, atol=1e-6)


def test_float32_inputs_and_from_features_match_reference():
    qf, gf, _, _, _ = _blocks(5, 10, 30)
    qg, qq, gg = (cdist(a, b).astype(np.float32) for a, b in ((qf, gf), (qf, qf), (gf, gf)))
    np.testing.assert_allclose(re_ranking(qg, qq, gg), reference_re_ranking(qg, qq, gg),
                               rtol=1e-5, atol=1e-6)
    ours = re_ranking_from_features(qf, gf, metric="euclidean")
    np.testing.assert_allclose(ours, reference_re_ranking(qg, qq, gg), rtol=1e-4, atol=1e-5)


def test_properties():
    _, _, qg, qq, gg = _blocks(6, 10, 30)
    d = re_ranking(qg, qq, gg)
    assert (d >= 0).all() and (d <= 1 + 1e-6).all()
    # lambda = 1 leaves only the original term: squared distances divided by the joint column
    # maximum, so each query's gallery ranking is unchanged.
    d1 = re_ranking(qg, qq, gg, lambda_value=1.0)
    colmax = np.maximum((qq ** 2).max(axis=0), (qg ** 2).max(axis=1))
    np.testing.assert_allclose(d1, qg ** 2 / colmax[:, None], rtol=1e-6)
    np.testing.assert_array_equal(np.argsort(d1, axis=1, kind="stable"),
                                  np.argsort(qg, axis=1, kind="stable"))
    # lambda = 0 is the pure Jaccard distance, in [0, 1] and different from the original term.
    d0 = re_ranking(qg, qq, gg, lambda_value=0.0)
    assert (d0 >= 0).all() and (d0 <= 1).all() and not np.allclose(d0, d1)
    np.testing.assert_allclose(d, 0.7 * d0 + 0.3 * d1, rtol=1e-5, atol=1e-6)


def test_rerank_improves_clustered_retrieval():
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((8, 16)) * 1.2
    qp, gp = rng.integers(0, 8, 40), np.repeat(np.arange(8), 15)
    qf = centres[qp] + rng.standard_normal((40, 16))
    gf = centres[gp] + rng.standard_normal((120, 16))
    qc, gc = np.zeros(40, int), np.ones(120, int)
    base = evaluate_rank(cdist(qf, gf), qp, gp, qc, gc, max_rank=10)
    rr = evaluate_rank(re_ranking(cdist(qf, gf), cdist(qf, qf), cdist(gf, gf)), qp, gp, qc, gc,
                       max_rank=10)
    assert rr.mAP > base.mAP  # the paper's claim, on well-separated clusters


def test_errors():
    _, _, qg, qq, gg = _blocks(8, 4, 9)
    with pytest.raises(ValueError, match="g_g_dist"):
        re_ranking(qg, qq, gg[:5, :5])
    with pytest.raises(ValueError, match="k1"):
        re_ranking(qg, qq, gg, k1=0)
    with pytest.raises(ValueError, match="lambda_value"):
        re_ranking(qg, qq, gg, lambda_value=1.5)
    with pytest.raises(ValueError, match="NaN"):
        re_ranking(np.where(qg > 2, np.nan, qg), qq, gg)
    with pytest.raises(ValueError, match="max_memory_gb"):
        re_ranking_from_features(np.zeros((11659, 4)), np.zeros((82161, 4)), max_memory_gb=8)
    assert estimate_memory_bytes(10, 30) > 4 * 10 * 30
