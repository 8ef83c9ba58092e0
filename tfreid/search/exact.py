"""Exact k-nearest-neighbour search in NumPy, chunked over the gallery and the queries.

The gallery is read once, one block of rows at a time (it may be a memory-mapped `.npy` larger
than RAM); each block's distances to a block of queries are reduced to their k best and merged
into the running top-k, so the full query x gallery distance matrix never exists. Distances are
`tfreid.metrics`' own (`prepare_gallery` + `distance_chunk`), and ties are broken by gallery
order, so the result is the first k columns of a stable argsort of the full distance matrix.

Example:
    >>> g = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], np.float32)
    >>> idx, dist = exact_topk(np.zeros((1, 2), np.float32), g, k=2)
    >>> idx.tolist(), dist.tolist()
    ([[0, 2]], [[0.0, 1.0]])
"""

from __future__ import annotations

import numpy as np

from tfreid.metrics import distance as _distance
from tfreid.metrics import topk_stable

DEFAULT_MEMORY_MB = 256


def exact_topk(queries, gallery, k: int, metric: str = "euclidean", *,
               memory_mb: float = DEFAULT_MEMORY_MB, query_chunk: int | None = None,
               gallery_chunk: int | None = None):
    """The k nearest gallery rows of each query, exactly, in bounded memory.

    Args:
        queries: float `[num_query, dim]`.
        gallery: float32 `[num_gallery, dim]`; a `np.memmap` is read block by block.
        k: neighbours per query (>= 1; more than the gallery gives the whole gallery).
        metric: `"euclidean"`, `"sqeuclidean"` or `"cosine"` (as `tfreid.metrics`).
        memory_mb: working-memory budget for one block (distances, their selection and the
            gallery block); sets the chunk sizes not given explicitly.
        query_chunk, gallery_chunk: rows per block (override the budget).

    Returns:
        `(indices, distances)`: int64 and float32 `[num_query, min(k, num_gallery)]`, nearest
        first, ties in gallery order.

    Raises:
        ValueError: bad shapes, non-finite features, unknown metric or k < 1.

    Example:
        >>> idx, dist = exact_topk(qf, gf, k=10, metric="cosine")  # doctest: +SKIP
    """
    _distance.check_metric(metric)
    k = check_k(k)
    queries = check_matrix(queries, "queries")
    num_gallery, dim = check_matrix(gallery, "gallery", convert=False).shape
    if queries.shape[1] != dim:
        raise ValueError(f"queries have dim {queries.shape[1]} but the gallery has dim {dim}")
    q_rows, g_rows = chunk_sizes(len(queries), num_gallery, dim, k, memory_mb)
    q_rows, g_rows = query_chunk or q_rows, gallery_chunk or g_rows
    k = min(k, num_gallery)
    best_d = np.empty((len(queries), 0), np.float32)
    best_i = np.empty((len(queries), 0), np.int64)
    buf = np.empty((min(q_rows, len(queries)), min(g_rows, num_gallery)), np.float32)
    for g_start in range(0, num_gallery, g_rows):
        block = np.ascontiguousarray(gallery[g_start:g_start + g_rows], np.float32)
        g, g_sqnorm = _distance.prepare_gallery(block, metric)
        new_d = np.empty((len(queries), min(k, len(block))), np.float32)
        new_i = np.empty(new_d.shape, np.int64)
        for q_start in range(0, len(queries), q_rows):
            q = queries[q_start:q_start + q_rows]
            with np.errstate(invalid="ignore", over="ignore"):  # reported just below
                d = _distance.distance_chunk(q, g, g_sqnorm, metric,
                                             out=buf[:len(q), :len(block)])
            # A NaN/inf gallery value shows in its distances: checking q x g values instead of
            # g x dim saves a pass over the gallery.
            if not np.isfinite(d).all():
                raise ValueError(f"gallery rows {g_start}..{g_start + len(block) - 1} contain NaN "
                                 "or infinite values; embeddings must be finite")
            pick = topk_stable(d, new_d.shape[1])
            new_d[q_start:q_start + len(q)] = np.take_along_axis(d, pick, axis=1)
            new_i[q_start:q_start + len(q)] = pick + g_start
        best_i, best_d = merge_topk(best_i, best_d, new_i, new_d, k)
    return best_i, best_d


def merge_topk(indices_a, distances_a, indices_b, distances_b, k: int):
    """Merge two sorted top-k lists per row, where every index of `a` precedes those of `b`.

    Concatenated, equal distances appear in gallery order (each list is sorted by distance then
    index, and `a`'s indices are smaller), so a stable selection keeps the gallery tie-break.

    Returns:
        `(indices, distances)` of the k best per row.
    """
    distances = np.concatenate([distances_a, distances_b], axis=1)
    indices = np.concatenate([indices_a, indices_b], axis=1)
    pick = topk_stable(distances, min(k, distances.shape[1]))
    return np.take_along_axis(indices, pick, axis=1), np.take_along_axis(distances, pick, axis=1)


def candidate_distances(queries, gallery, candidates, metric: str):
    """Distances from each query to its own candidate gallery rows (the library's formulas).

    Args:
        queries: float32 `[num_query, dim]`.
        gallery: float32 `[num_gallery, dim]` (memory-mapped is fine: only candidates are read).
        candidates: int `[num_query, c]` gallery indices; -1 marks "no candidate".
        metric: one of `tfreid.metrics.METRICS`.

    Returns:
        float32 `[num_query, c]`, +inf where the candidate is -1.
    """
    queries = check_matrix(queries, "queries")
    candidates = np.asarray(candidates, np.int64)
    rows = np.asarray(gallery[np.maximum(candidates, 0).ravel()], np.float32)
    g, g_sqnorm = _distance.prepare_gallery(rows, metric)
    q, q_sqnorm = _distance.prepare_gallery(queries, metric)
    dot = np.einsum("qd,qcd->qc", q, g.reshape(*candidates.shape, -1))
    if metric == "cosine":
        d = 1 - dot
    else:
        d = np.maximum(q_sqnorm[:, None] + g_sqnorm.reshape(candidates.shape) - 2 * dot, 0)
        if metric == "euclidean":
            d = np.sqrt(d)
    return np.where(candidates >= 0, d, np.inf).astype(np.float32)


def sort_candidates(candidates, distances, k: int):
    """The k best `(indices, distances)` per row, by distance then gallery index; -1 last."""
    order = np.lexsort((candidates, distances), axis=-1)[:, :k]
    return np.take_along_axis(candidates, order, 1), np.take_along_axis(distances, order, 1)


def chunk_sizes(num_query: int, num_gallery: int, dim: int, k: int, memory_mb: float):
    """`(query_rows, gallery_rows)` per block so one block stays within `memory_mb`.

    A block of q x g distances costs about 4 float32 copies (distances, partition copy, masks);
    the gallery block itself (plus its normalised copy for cosine) costs 2 x g x dim floats.
    """
    if not memory_mb or memory_mb <= 0:
        raise ValueError(f"memory_mb must be positive, got {memory_mb!r}")
    budget = int(memory_mb * 2**20) // 4  # float32 values
    q_rows = max(1, min(num_query, 1024))
    g_rows = budget // (4 * q_rows + 2 * dim)
    if g_rows < max(k, 1):  # a very long query list: give the gallery block room for k rows
        g_rows = max(k, 1024)
        q_rows = max(1, (budget - 2 * dim * g_rows) // (4 * g_rows))
    return q_rows, max(1, min(g_rows, num_gallery))


def check_k(k) -> int:
    """`k` as an int, or ValueError unless it is a positive integer."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def check_matrix(x, name: str, convert: bool = True):
    """A non-empty finite 2-D float32 array (`convert=False` checks the shape only)."""
    if not convert:
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != 2 or 0 in shape:
            raise ValueError(f"{name} must be a non-empty 2-D array (num, dim), got shape {shape}")
        return x
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"{name} must be a non-empty 2-D array (num, dim), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or infinite values; embeddings must be finite")
    return x
