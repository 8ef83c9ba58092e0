"""Exact chunked search against brute force: full distance matrix + stable argsort."""

import tracemalloc

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from tfreid import metrics
from tfreid.search.exact import candidate_distances, chunk_sizes, exact_topk
from tfreid.search.query import rerank_shortlists

SCIPY_METRIC = {"euclidean": "euclidean", "sqeuclidean": "sqeuclidean", "cosine": "cosine"}


def brute_force(q, g, k, metric):
    """float64 SciPy distances, stable argsort: the independent reference."""
    full = cdist(q.astype(np.float64), g.astype(np.float64), SCIPY_METRIC[metric])
    order = np.argsort(full, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(full, order, axis=1)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
@pytest.mark.parametrize("query_chunk,gallery_chunk", [(7, 97), (64, 1003), (1, 5000)])
def test_equals_brute_force(metric, query_chunk, gallery_chunk):
    rng = np.random.default_rng(0)
    g = rng.normal(size=(1003, 48)).astype(np.float32)  # 97 does not divide 1003
    q = rng.normal(size=(37, 48)).astype(np.float32)
    idx, dist = exact_topk(q, g, 10, metric, query_chunk=query_chunk, gallery_chunk=gallery_chunk)
    ref_idx, ref_dist = brute_force(q, g, 10, metric)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)
    assert idx.dtype == np.int64 and dist.dtype == np.float32


def test_equals_library_distance_matrix_and_default_chunks():
    rng = np.random.default_rng(1)
    g, q = rng.normal(size=(500, 16)).astype(np.float32), rng.normal(size=(9, 16)).astype(np.float32)
    full = metrics.compute_distance_matrix(q, g, "cosine")
    order = np.argsort(full, axis=1, kind="stable")[:, :25]
    idx, dist = exact_topk(q, g, 25, "cosine")
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(dist, np.take_along_axis(full, order, 1), atol=1e-6)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_ties_follow_gallery_order_across_chunks(metric):
    # Small-integer vectors: every distance is computed exactly, so there are true ties (many
    # duplicates) and block boundaries (gallery_chunk=13) split tied groups.
    rng = np.random.default_rng(2)
    g = rng.integers(0, 3, size=(400, 4)).astype(np.float32)
    q = rng.integers(0, 3, size=(20, 4)).astype(np.float32)
    g[g.sum(1) == 0] = 1  # cosine of a zero vector is defined but not exact
    q[q.sum(1) == 0] = 1
    full = metrics.compute_distance_matrix(q, g, metric)
    order = np.argsort(full, axis=1, kind="stable")[:, :60]
    idx, dist = exact_topk(q, g, 60, metric, query_chunk=6, gallery_chunk=13)
    assert (np.diff(np.take_along_axis(full, order, 1), axis=1) == 0).any()  # ties exist
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_array_equal(dist, np.take_along_axis(full, order, 1))


def test_k_larger_than_gallery_returns_the_full_ordering():
    g = np.array([[1.0], [0.0], [1.0], [3.0]], np.float32)
    idx, dist = exact_topk(np.zeros((1, 1), np.float32), g, 10, gallery_chunk=3)
    assert idx.tolist() == [[1, 0, 2, 3]] and dist.tolist() == [[0.0, 1.0, 1.0, 3.0]]


def test_memory_mapped_gallery_in_bounded_memory(tmp_path):
    """200k x 64 gallery on disk, 100 queries: the full distance matrix would be 80 MB; a 4 MB
    budget keeps the peak of Python-tracked allocations far below it."""
    rng = np.random.default_rng(3)
    path = tmp_path / "g.npy"
    mm = np.lib.format.open_memmap(path, "w+", np.float32, (200_000, 64))
    for s in range(0, len(mm), 50_000):
        mm[s:s + 50_000] = rng.normal(size=(50_000, 64))
    mm.flush()
    gallery = np.load(path, mmap_mode="r")
    q = rng.normal(size=(100, 64)).astype(np.float32)
    tracemalloc.start()
    idx, dist = exact_topk(q, gallery, 10, memory_mb=4)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 * 2**20, peak  # vs 80 MB for the matrix (and 51 MB for the gallery)
    sample = np.arange(0, 100, 9)
    ref_idx, _ = brute_force(q[sample], np.asarray(gallery), 10, "euclidean")
    np.testing.assert_array_equal(idx[sample], ref_idx)


def test_chunk_sizes_respect_the_budget():
    for nq, ng, dim, k in ((100, 1_000_000, 1024, 10), (10_000, 10_000, 2048, 100), (1, 50, 8, 5)):
        q_rows, g_rows = chunk_sizes(nq, ng, dim, k, memory_mb=256)
        assert 1 <= q_rows <= nq and 1 <= g_rows <= ng
        assert (4 * q_rows * g_rows + 2 * g_rows * dim) * 4 <= 256 * 2**20


def test_candidate_distances_match_the_matrix():
    rng = np.random.default_rng(4)
    g, q = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    cand = np.array([[4, 0, -1], [49, 7, 7], [1, 2, 3]])
    for metric in ("euclidean", "sqeuclidean", "cosine"):
        full = metrics.compute_distance_matrix(q, g, metric)
        d = candidate_distances(q, g, cand, metric)
        expected = np.where(cand >= 0, np.take_along_axis(full, np.maximum(cand, 0), 1), np.inf)
        np.testing.assert_allclose(d, expected, rtol=1e-5, atol=1e-5)


def test_rerank_of_the_whole_gallery_equals_library_reranking():
    """With a shortlist as long as the gallery, per-query re-ranking is exactly
    `tfreid.metrics.re_ranking` of that query against the gallery."""
    rng = np.random.default_rng(5)
    g = (rng.normal(size=(60, 12)) + np.repeat(rng.normal(size=(6, 12)) * 3, 10, 0)).astype(np.float32)
    q = g[[3, 25, 41]] + rng.normal(scale=0.1, size=(3, 12)).astype(np.float32)
    idx, dist = exact_topk(q, g, 60)
    r_idx, r_dist, r_rr = rerank_shortlists(q, g, idx, dist, "euclidean", k=10)
    for i in range(3):
        ref = metrics.re_ranking(metrics.compute_distance_matrix(q[i:i + 1], g),
                                 metrics.compute_distance_matrix(q[i:i + 1], q[i:i + 1]),
                                 metrics.compute_distance_matrix(g, g))[0]
        order = np.argsort(ref, kind="stable")[:10]
        np.testing.assert_array_equal(r_idx[i], order)
        np.testing.assert_allclose(r_rr[i], ref[order], atol=1e-6)
        np.testing.assert_allclose(r_dist[i], np.linalg.norm(g[order] - q[i], axis=1), atol=2e-5)


@pytest.mark.parametrize("bad,match", [
    (dict(k=0), "k must be a positive integer"),
    (dict(metric="manhattan"), "metric must be one of"),
    (dict(queries=np.zeros((2, 3), np.float32)), "dim 3 but the gallery has dim 4"),
    (dict(queries=np.full((1, 4), np.nan, np.float32)), "NaN"),
    (dict(gallery=np.array([[1, 2, 3, 4]] * 3 + [[0, np.inf, 0, 0]] * 2, np.float32)),
     r"gallery rows 0\.\.4 contain NaN or infinite"),
    (dict(gallery=np.zeros((0, 4), np.float32)), "non-empty"),
])
def test_bad_input(bad, match):
    args = dict(queries=np.zeros((1, 4), np.float32), gallery=np.ones((5, 4), np.float32), k=2,
                metric="euclidean")
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        exact_topk(**args)
