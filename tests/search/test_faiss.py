"""faiss backends: the flat index equals the NumPy exact search; IVF recall on clustered data."""

import sys

import numpy as np
import pytest

from tfreid.search import faiss_index
from tfreid.search.exact import exact_topk
from tfreid.search.index import GalleryIndex

faiss = pytest.importorskip("faiss")


def clustered(num_clusters=50, per_cluster=40, dim=64, seed=0):
    """Identities as tight clusters (like ReID embeddings) and one query near each centre."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, dim)) * 3
    gallery = np.repeat(centres, per_cluster, 0) + rng.normal(scale=0.5, size=(num_clusters * per_cluster, dim))
    queries = centres + rng.normal(scale=0.5, size=centres.shape)
    return queries.astype(np.float32), gallery.astype(np.float32)


def in_memory_index(tmp_path, gallery, metric):
    meta = {"metric": metric, "dim": gallery.shape[1], "images": {"root": "", "dataset": None},
            "model": {"name": "none", "format": "run", "version": "-"}}
    return GalleryIndex(tmp_path, meta, gallery, [f"{i}.jpg" for i in range(len(gallery))])


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_flat_equals_numpy_exact(metric):
    rng = np.random.default_rng(1)
    g, q = rng.normal(size=(2001, 32)).astype(np.float32), rng.normal(size=(40, 32)).astype(np.float32)
    idx, dist = faiss_index.flat_topk(q, g, 10, metric)
    ref_idx, ref_dist = exact_topk(q, g, 10, metric, gallery_chunk=300)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5, atol=1e-5)


def test_flat_keeps_gallery_order_for_ties():
    rng = np.random.default_rng(2)
    g = rng.integers(0, 3, size=(300, 3)).astype(np.float32)  # many exact duplicates
    q = rng.integers(0, 3, size=(15, 3)).astype(np.float32)
    idx, dist = faiss_index.flat_topk(q, g, 5, "sqeuclidean")
    ref_idx, ref_dist = exact_topk(q, g, 5, "sqeuclidean")
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_ivf_recall_on_clustered_data(metric, capsys):
    q, g = clustered()
    ivf = faiss_index.build_ivf(g, metric)
    idx, dist = faiss_index.ivf_topk(ivf, q, g, 10, metric)
    exact_idx, exact_dist = exact_topk(q, g, 10, metric)
    recall = faiss_index.recall_at_k(idx, exact_idx)
    print(f"IVF-Flat {metric}: nlist={ivf.nlist} nprobe={ivf.nprobe} recall@10={recall:.3f}")
    assert recall > 0.9
    # the neighbours it finds carry exact distances
    found = idx == exact_idx
    np.testing.assert_allclose(dist[found], exact_dist[found], rtol=1e-5, atol=1e-5)


def test_ivf_visiting_every_list_is_exact_and_fewer_lists_lose_recall():
    rng = np.random.default_rng(3)  # unclustered data: the hard case for IVF
    g, q = rng.normal(size=(3000, 32)).astype(np.float32), rng.normal(size=(50, 32)).astype(np.float32)
    ivf = faiss_index.build_ivf(g, "euclidean", nlist=40)
    exact_idx, exact_dist = exact_topk(q, g, 10)
    idx, dist = faiss_index.ivf_topk(ivf, q, g, 10, "euclidean", nprobe=40)
    np.testing.assert_array_equal(idx, exact_idx)
    np.testing.assert_allclose(dist, exact_dist, rtol=1e-5, atol=1e-5)
    idx, _ = faiss_index.ivf_topk(ivf, q, g, 10, "euclidean", nprobe=1)
    assert faiss_index.recall_at_k(idx, exact_idx) < 0.8


def test_recall_at_k_by_hand():
    exact = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 9, 1], [-1, -1, -1]])
    assert faiss_index.recall_at_k(found, exact) == pytest.approx(2 / 6)


def test_approximate_query_is_cached_and_reports_recall(tmp_path):
    q, g = clustered(num_clusters=20, per_cluster=50, dim=16)
    index = in_memory_index(tmp_path, g, "euclidean")
    result = index.query(embeddings=q, k=5, approx=True, progress=False)
    cache = tmp_path / f"ivf-flat-{faiss_index.default_nlist(len(g))}.faiss"
    assert cache.is_file()
    recall, sampled = result.recall
    assert sampled == len(q) and recall > 0.9
    assert "recall@5 vs exact" in result.summary()
    again = index.query(embeddings=q, k=5, approx=True, progress=False, recall_sample=0)
    np.testing.assert_array_equal(again.indices, result.indices)  # read back from the cache
    assert again.recall is None and "build" in again.seconds
    exact = index.query(embeddings=q, k=5, backend="faiss")
    np.testing.assert_array_equal(exact.indices, exact_topk(q, g, 5)[0])


def test_missing_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(ImportError, match=r"optional extra 'search'.*tfreid\[search\]"):
        faiss_index.flat_topk(np.zeros((1, 2), np.float32), np.zeros((3, 2), np.float32), 1)
