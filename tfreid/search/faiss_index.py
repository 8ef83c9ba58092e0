"""faiss backends: an exact flat index and an approximate IVF-Flat index (optional extra).

Both return the library's distances: faiss' own scores (squared L2, or inner products of
L2-normalised vectors for cosine) only choose a shortlist of `2 k` candidates, whose distances
are then recomputed with `tfreid.metrics`' formulas and sorted by (distance, gallery index). So
the flat index gives the NumPy search's neighbours, distances and tie order (up to float32
rounding of near-equal distances), and the approximate index's distances are exact for the
neighbours it finds.

IVF-Flat rather than HNSW: its build is a k-means on a sample plus one assignment pass, which
stays practical for a million 1024-D vectors on a CPU, where an HNSW graph takes much longer to
build and adds 2 M links per vector.

Example:
    >>> idx, dist = flat_topk(qf, gf, k=10, metric="euclidean")          # doctest: +SKIP
    >>> ivf = build_ivf(gf, "euclidean"); idx, dist = ivf_topk(ivf, qf, gf, 10, "euclidean")
"""

from __future__ import annotations

import math

import numpy as np

from tfreid.metrics import distance as _distance
from tfreid.search.exact import candidate_distances, check_k, check_matrix, sort_candidates

INSTALL_HINT = "pip install 'tfreid[search]' (or pip install faiss-cpu)"
ADD_ROWS = 65536  # gallery rows copied into faiss at a time (bounds the extra memory)
TRAIN_POINTS_PER_LIST = 40  # faiss warns below 39 training points per list


def require_faiss():
    """Import faiss, or raise ImportError naming the optional extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise ImportError(f"faiss is not installed; the faiss backend and --approx need the "
                          f"optional extra 'search': {INSTALL_HINT}") from None
    return faiss


def flat_topk(queries, gallery, k: int, metric: str = "euclidean"):
    """Exact top-k through a faiss flat index (IndexFlatL2, or IndexFlatIP for cosine).

    Args:
        queries: float32 `[num_query, dim]`.
        gallery: float32 `[num_gallery, dim]` (a `np.memmap` is copied in blocks).
        k: neighbours per query.
        metric: `"euclidean"`, `"sqeuclidean"` or `"cosine"`.

    Returns:
        `(indices, distances)` as `tfreid.search.exact.exact_topk`.
    """
    return search(build_flat(gallery, metric), queries, gallery, k, metric)


def build_flat(gallery, metric: str = "euclidean"):
    """A faiss flat index holding a copy of `gallery` (L2-normalised for cosine)."""
    faiss = require_faiss()
    _distance.check_metric(metric)
    dim = gallery.shape[1]
    index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    _add(index, gallery, metric)
    return index


def build_ivf(gallery, metric: str = "euclidean", nlist: int | None = None, seed: int = 0):
    """An IVF-Flat index over `gallery`: k-means lists trained on a sample, then every row added.

    Args:
        gallery: float32 `[num_gallery, dim]`.
        metric: the search metric (cosine indexes L2-normalised vectors by inner product).
        nlist: number of inverted lists (default `default_nlist(num_gallery)`).
        seed: sampling and k-means seed.

    Returns:
        a trained, filled `faiss.IndexIVFFlat`.
    """
    faiss = require_faiss()
    _distance.check_metric(metric)
    num, dim = gallery.shape
    nlist = default_nlist(num) if nlist is None else int(nlist)
    if not 1 <= nlist <= num:
        raise ValueError(f"nlist must be in 1..{num} (the gallery size), got {nlist}")
    cosine = metric == "cosine"
    quantizer = faiss.IndexFlatIP(dim) if cosine else faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist,
                               faiss.METRIC_INNER_PRODUCT if cosine else faiss.METRIC_L2)
    index.cp.seed = seed
    index.cp.niter = 10  # k-means converges well enough for list assignment
    index.cp.min_points_per_centroid = 1  # tiny galleries: the sample below is all there is
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(num, min(num, TRAIN_POINTS_PER_LIST * nlist), replace=False))
    index.train(_prepared(gallery[sample], metric))
    _add(index, gallery, metric)
    return index


def ivf_topk(index, queries, gallery, k: int, metric: str, nprobe: int | None = None):
    """Approximate top-k with an IVF index from `build_ivf`, visiting `nprobe` lists.

    Returns:
        `(indices, distances)`; a query may get fewer than k neighbours when the visited lists
        hold fewer rows (index -1, distance +inf).
    """
    index.nprobe = min(index.nlist, default_nprobe(index.nlist) if nprobe is None else int(nprobe))
    return search(index, queries, gallery, k, metric)


def search(index, queries, gallery, k: int, metric: str):
    """Shortlist `2 k` candidates with a faiss index, re-score them exactly, keep k."""
    k = min(check_k(k), gallery.shape[0])
    queries = check_matrix(queries, "queries")
    if queries.shape[1] != index.d:
        raise ValueError(f"queries have dim {queries.shape[1]} but the index has dim {index.d}")
    _, candidates = index.search(_prepared(queries, metric), min(2 * k, gallery.shape[0]))
    distances = candidate_distances(queries, gallery, candidates, metric)
    return sort_candidates(candidates, distances, k)


def recall_at_k(found, exact) -> float:
    """Mean fraction of each query's exact top-k neighbours that `found` also returned."""
    found, exact = np.asarray(found), np.asarray(exact)
    hits = (exact[:, :, None] == found[:, None, :]).any(axis=2)
    return float(hits.mean())


def default_nlist(num_gallery: int) -> int:
    """`sqrt(N)` lists (at least 40 training points each), the usual IVF starting point."""
    return max(1, min(round(math.sqrt(num_gallery)), num_gallery // TRAIN_POINTS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: 1/16 of them, so a query scans about 6% of the gallery."""
    return max(1, math.ceil(nlist / 16))


def write(index, path) -> None:
    """Save a faiss index (used to cache the approximate index next to the embeddings)."""
    require_faiss().write_index(index, str(path))


def read(path):
    """Load a faiss index written by `write`."""
    return require_faiss().read_index(str(path))


def _prepared(x, metric: str) -> np.ndarray:
    x = check_matrix(x, "embeddings")
    return _distance.prepare_gallery(x, metric)[0] if metric == "cosine" else x


def _add(index, gallery, metric: str) -> None:
    for start in range(0, gallery.shape[0], ADD_ROWS):
        index.add(_prepared(gallery[start:start + ADD_ROWS], metric))
