"""Tests for tfreid.metrics.evaluate_rank / evaluate_features against hand-computed values and a
straightforward per-query loop port of torchreid's eval_market1501 / eval_cuhk03 (+ fast-reid mINP).
"""

import warnings

import numpy as np
import pytest

from tfreid.metrics import compute_distance_matrix, evaluate_features, evaluate_rank
from tfreid.metrics.rank_features import auto_chunk_size


# ---------------------------------------------------------------- loop references (torchreid)
def _kept_matches(distmat, q_pids, g_pids, q_camids, g_camids, q):
    order = np.argsort(distmat[q], kind="stable")
    keep = ~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
    return order[keep], (g_pids[order] == q_pids[q])[keep].astype(np.int32)


def _ap_inp(raw_cmc):
    cum = raw_cmc.cumsum()
    ap = (cum / np.arange(1.0, len(cum) + 1) * raw_cmc).sum() / raw_cmc.sum()
    last = np.max(np.where(raw_cmc == 1))
    return ap, cum[last] / (last + 1.0)


def ref_market(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    cmcs, aps, inps = [], [], []
    for q in range(distmat.shape[0]):
        _, raw = _kept_matches(distmat, q_pids, g_pids, q_camids, g_camids, q)
        if not raw.any():
            continue
        cmc = raw.cumsum()
        cmc[cmc > 1] = 1
        cmc = np.concatenate([cmc, np.ones(max(0, max_rank - len(cmc)))])  # short kept gallery
        cmcs.append(cmc[:max_rank])
        ap, inp = _ap_inp(raw)
        aps.append(ap)
        inps.append(inp)
    return np.mean(cmcs, axis=0), np.mean(aps), np.mean(inps), len(aps)


def ref_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, num_repeats, seed):
    uids = np.unique(g_pids)
    u = np.random.default_rng(seed).random((len(q_pids), num_repeats, len(uids)))
    cmcs, aps, inps = [], [], []
    for q in range(distmat.shape[0]):
        kept_order, raw = _kept_matches(distmat, q_pids, g_pids, q_camids, g_camids, q)
        if not raw.any():
            continue
        cmc = np.zeros(max_rank)
        for r in range(num_repeats):
            chosen = []
            for c, pid in enumerate(uids):
                cand = np.flatnonzero(g_pids == pid)
                if pid == q_pids[q]:
                    cand = cand[g_camids[cand] != q_camids[q]]
                chosen.append(cand[int(np.floor(u[q, r, c] * len(cand)))])
            sub = [g for g in kept_order if g in set(chosen)]  # reduced gallery, ranked
            hit = (g_pids[sub] == q_pids[q]).cumsum()
            hit[hit > 1] = 1
            hit = np.concatenate([hit, np.ones(max(0, max_rank - len(hit)))])
            cmc += hit[:max_rank]
        cmcs.append(cmc / num_repeats)
        ap, inp = _ap_inp(raw)
        aps.append(ap)
        inps.append(inp)
    return np.mean(cmcs, axis=0), np.mean(aps), np.mean(inps), len(aps)


def _random_case(rng, nq, ng, nids, ncams, integer=True):
    q_pids = rng.integers(1, nids + 1, nq)
    g_pids = rng.integers(0, nids + 1, ng)  # 0 = distractors
    q_cams, g_cams = rng.integers(0, ncams, nq), rng.integers(0, ncams, ng)
    d = rng.integers(0, 6, (nq, ng)).astype(np.float32) if integer else rng.random((nq, ng))
    return d, q_pids, g_pids, q_cams, g_cams


def _assert_same(res, ref):
    cmc, m_ap, m_inp, nvalid = ref
    np.testing.assert_allclose(res.cmc, cmc, rtol=0, atol=1e-12)
    assert res.mAP == pytest.approx(m_ap, abs=1e-12)
    assert res.mINP == pytest.approx(m_inp, abs=1e-12)
    assert res.num_valid_queries == nvalid


# ---------------------------------------------------------------- hand-computed case
G_PIDS = np.array([1, 2, 1, 0, 3, 1, 2, 4])
G_CAMS = np.array([0, 1, 1, 2, 0, 2, 0, 1])
Q_PIDS = np.array([1, 2, 4, 3])
Q_CAMS = np.array([0, 0, 1, 1])
DIST = np.array([
    # q0: g0 same pid+cam dropped; kept order g1 g3 g4 g2* g5* g6 g7 -> matches at ranks 4, 5
    [0.1, 0.2, 0.5, 0.3, 0.4, 0.6, 0.7, 0.8],
    # q1: g6 dropped; tie at 0.3 between g1* g2 g4 g7 resolved by gallery order -> match rank 2
    [0.5, 0.3, 0.3, 0.1, 0.3, 0.9, 0.2, 0.3],
    # q2: the only pid-4 item (g7) is in the query's camera -> no valid match, skipped
    [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2],
    # q3: g4 (pid 3, other camera) is nearest -> rank 1
    [0.5, 0.6, 0.7, 0.8, 0.05, 0.9, 0.95, 0.99],
], dtype=np.float32)


def test_hand_computed_market():
    res = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    # valid: q0 (first match rank 4), q1 (rank 2), q3 (rank 1)
    np.testing.assert_allclose(res.cmc, [1 / 3, 2 / 3, 2 / 3, 1.0, 1.0])
    # AP: q0 (1/4 + 2/5) / 2 = 0.325, q1 1/2, q3 1;  INP: q0 2/5, q1 1/2, q3 1
    assert res.mAP == pytest.approx((0.325 + 0.5 + 1.0) / 3)
    assert res.mINP == pytest.approx((0.4 + 0.5 + 1.0) / 3)
    assert res.num_valid_queries == 3
    assert res.as_dict()["rank1"] == pytest.approx(1 / 3)


def test_hand_case_single_queries_and_float64():
    r0 = evaluate_rank(DIST[:1].astype(np.float64), Q_PIDS[:1], G_PIDS, Q_CAMS[:1], G_CAMS,
                       max_rank=8)
    np.testing.assert_allclose(r0.cmc, [0, 0, 0, 1, 1, 1, 1, 1])
    assert (r0.mAP, r0.mINP) == (pytest.approx(0.325), pytest.approx(0.4))
    r1 = evaluate_rank(DIST[1:2], Q_PIDS[1:2], G_PIDS, Q_CAMS[1:2], G_CAMS, max_rank=3)
    np.testing.assert_allclose(r1.cmc, [0, 1, 1])


def test_cuhk03_equals_market_when_one_image_per_identity():
    # Every gallery identity has exactly one image, so single-shot sampling is deterministic.
    g_pids, g_cams = np.array([5, 6, 7, 8, 9]), np.array([1, 1, 1, 1, 1])
    d = np.array([[0.4, 0.1, 0.3, 0.2, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    q_pids, q_cams = np.array([7, 5]), np.array([0, 0])
    c = evaluate_rank(d, q_pids, g_pids, q_cams, g_cams, max_rank=5, protocol="cuhk03")
    np.testing.assert_allclose(c.cmc, [0.5, 0.5, 1, 1, 1])  # ranks 3 and 1
    assert c.mAP == pytest.approx((1 / 3 + 1) / 2)


# ---------------------------------------------------------------- against the loop reference
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_market_matches_loop_reference_with_ties(seed):
    d, qp, gp, qc, gc = _random_case(np.random.default_rng(seed), 40, 120, 12, 3)
    _assert_same(evaluate_rank(d, qp, gp, qc, gc, max_rank=20),
                 ref_market(d, qp, gp, qc, gc, 20))


@pytest.mark.parametrize("limit", [-1, 10**9], ids=["all-rows-sorted", "all-rows-near-only"])
@pytest.mark.parametrize("protocol", ["market", "cuhk03"])
def test_both_ranking_paths_match_loop_reference(monkeypatch, limit, protocol):
    # Rows are ranked either from their entries up to the farthest match or by a full sort,
    # depending on how many such entries there are; force each path and check it alone.
    import tfreid.metrics.rank as rank_module
    monkeypatch.setattr(rank_module, "light_limit", lambda n: limit)
    rng = np.random.default_rng(11)
    d, qp, gp, qc, gc = _random_case(rng, 30, 150, 10, 3)
    d += np.where(qp[:, None] == gp[None, :], 0, 3).astype(np.float32)  # matches mostly in front
    if protocol == "market":
        ref = ref_market(d, qp, gp, qc, gc, 20)
    else:
        ref = ref_cuhk03(d, qp, gp, qc, gc, 20, 10, 0)
    _assert_same(evaluate_rank(d, qp, gp, qc, gc, max_rank=20, protocol=protocol), ref)


def test_market_matches_loop_reference_continuous_and_short_kept_gallery():
    d, qp, gp, qc, gc = _random_case(np.random.default_rng(7), 30, 9, 3, 2, integer=False)
    _assert_same(evaluate_rank(d, qp, gp, qc, gc, max_rank=9), ref_market(d, qp, gp, qc, gc, 9))


@pytest.mark.parametrize("seed", [0, 3])
def test_cuhk03_matches_loop_reference(seed):
    d, qp, gp, qc, gc = _random_case(np.random.default_rng(seed), 25, 60, 8, 2)
    res = evaluate_rank(d, qp, gp, qc, gc, max_rank=10, protocol="cuhk03", seed=seed)
    _assert_same(res, ref_cuhk03(d, qp, gp, qc, gc, 10, 10, seed))
    # AP/INP use the full filtered gallery, exactly as the market protocol does.
    market = evaluate_rank(d, qp, gp, qc, gc, max_rank=10)
    assert (res.mAP, res.mINP) == (market.mAP, market.mINP)


# ---------------------------------------------------------------- properties
def test_perfect_distances_give_perfect_scores():
    rng = np.random.default_rng(0)
    _, qp, gp, qc, gc = _random_case(rng, 30, 100, 10, 3)
    same = qp[:, None] == gp[None, :]
    d = np.where(same, rng.random(same.shape) * 0.5, 1 + rng.random(same.shape))
    res = evaluate_rank(d, qp, gp, qc, gc, max_rank=10)
    assert res.num_valid_queries > 20
    assert (res.mAP, res.mINP, res.rank1) == (1.0, 1.0, 1.0)


def test_same_pid_same_camera_item_changes_nothing():
    d, qp, gp, qc, gc = _random_case(np.random.default_rng(4), 12, 50, 5, 3, integer=False)
    for q in range(12):
        base = evaluate_rank(d[q:q + 1], qp[q:q + 1], gp, qc[q:q + 1], gc, max_rank=10)
        d2 = np.concatenate([d[q:q + 1], [[0.0]]], axis=1)  # the nearest item of all
        more = evaluate_rank(d2, qp[q:q + 1], np.append(gp, qp[q]), qc[q:q + 1],
                             np.append(gc, qc[q]), max_rank=10)
        np.testing.assert_array_equal(base.cmc, more.cmc)
        assert (base.mAP, base.mINP) == (more.mAP, more.mINP)


def test_gallery_permutation_without_ties_changes_nothing():
    d, qp, gp, qc, gc = _random_case(np.random.default_rng(5), 30, 80, 10, 3, integer=False)
    p = np.random.default_rng(6).permutation(80)
    a = evaluate_rank(d, qp, gp, qc, gc, max_rank=15)
    b = evaluate_rank(d[:, p], qp, gp[p], qc, gc[p], max_rank=15)
    np.testing.assert_allclose(a.cmc, b.cmc, atol=1e-12)
    assert (a.mAP, a.mINP) == (pytest.approx(b.mAP, abs=1e-12), pytest.approx(b.mINP, abs=1e-12))


# ---------------------------------------------------------------- features path
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("protocol", ["market", "cuhk03"])
def test_features_equal_full_matrix_with_ties(metric, protocol):
    rng = np.random.default_rng(8)
    _, qp, gp, qc, gc = _random_case(rng, 37, 90, 9, 3)
    qf = rng.integers(-2, 3, (37, 4)).astype(np.float32)  # small ints -> many exact ties
    gf = rng.integers(-2, 3, (90, 4)).astype(np.float32)
    gf[:5] = 0  # zero vectors: cosine distance 1 to everything
    # Same chunking on both sides: BLAS may round a row differently for different chunk shapes.
    for chunk in (1, 5, 37):
        full = evaluate_rank(compute_distance_matrix(qf, gf, metric, chunk_size=chunk), qp, gp,
                             qc, gc, max_rank=12, protocol=protocol)
        part = evaluate_features(qf, gf, qp, gp, qc, gc, metric, max_rank=12, chunk_size=chunk,
                                 protocol=protocol)
        np.testing.assert_array_equal(part.cmc, full.cmc)
        assert (part.mAP, part.mINP, part.num_valid_queries) == \
            (full.mAP, full.mINP, full.num_valid_queries)
    loop = (ref_market if protocol == "market" else
            lambda *a: ref_cuhk03(*a, num_repeats=10, seed=0))
    _assert_same(full, loop(compute_distance_matrix(qf, gf, metric, chunk_size=37), qp, gp, qc,
                            gc, 12))


def test_features_equal_full_matrix_real_valued():
    rng = np.random.default_rng(9)
    _, qp, gp, qc, gc = _random_case(rng, 200, 700, 60, 6)
    qf, gf = rng.standard_normal((200, 64)), rng.standard_normal((700, 64))
    full = evaluate_rank(compute_distance_matrix(qf, gf, chunk_size=33), qp, gp, qc, gc)
    part = evaluate_features(qf, gf, qp, gp, qc, gc, chunk_size=33)
    np.testing.assert_array_equal(part.cmc, full.cmc)
    assert (part.mAP, part.mINP) == (full.mAP, full.mINP)


def test_auto_chunk_size_follows_budget():
    assert auto_chunk_size(82161, 1024) == (1024 * 2**20) // (82161 * 16)
    with pytest.raises(ValueError, match="memory_budget_mb"):
        auto_chunk_size(10**9, 1)


# ---------------------------------------------------------------- errors and edge cases
@pytest.mark.filterwarnings("ignore:max_rank")
def test_errors_name_the_argument():
    ok = (Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    with pytest.raises(ValueError, match="no valid query"):
        evaluate_rank(DIST[2:3], Q_PIDS[2:3], G_PIDS, Q_CAMS[2:3], G_CAMS)
    with pytest.raises(ValueError, match=r"distmat shape \(4, 7\)"):
        evaluate_rank(DIST[:, :7], *ok)
    with pytest.raises(ValueError, match="g_camids has length 7"):
        evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS[:7])
    with pytest.raises(ValueError, match="protocol"):
        evaluate_rank(DIST, *ok, protocol="duke")
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_rank(DIST, *ok, max_rank=0)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.where(DIST > 0.85, np.nan, DIST), *ok)
    with pytest.raises(ValueError, match="q_pids must hold integers"):
        evaluate_rank(DIST, Q_PIDS + 0.5, G_PIDS, Q_CAMS, G_CAMS)
    with pytest.raises(ValueError, match="do not match"):
        evaluate_features(np.ones((3, 2)), np.ones((8, 2)), *ok)


def test_max_rank_clipped_with_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = evaluate_rank(DIST, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=50)
    assert len(res.cmc) == 8 and res.cmc[-1] == 1.0
    assert any("max_rank=50" in str(w.message) for w in caught)
