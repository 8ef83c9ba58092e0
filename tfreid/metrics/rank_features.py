"""Evaluate directly from features without materialising the query-gallery distance matrix.

For MSMT17 (11,659 x 82,161) the full float32 matrix alone is 3.8 GB; here only one chunk of
query rows exists at a time, and the chunk size follows from a memory budget.
"""

import numpy as np

from tfreid.metrics import distance as _distance
from tfreid.metrics import rank as _rank


def evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric="euclidean",
                      max_rank=50, chunk_size=None, protocol="market", memory_budget_mb=1024,
                      num_repeats=10, seed=0, dtype=np.float32):
    """CMC / mAP / mINP from query and gallery features, chunk by chunk.

    Each chunk of query rows gets its distances to the whole gallery (computed exactly as
    :func:`compute_distance_matrix` computes them), is ranked, and only per-query statistics are
    kept. The result equals ``evaluate_rank(compute_distance_matrix(qf, gf, metric, chunk_size),
    ...)`` (same ``chunk_size``), including the stable tie-break on gallery order. With another
    chunking, BLAS may round some distances differently in the last bit (it picks kernels by
    matrix shape), which can only matter for near-exact ties.

    Args:
        qf, gf: (num_query, dim) and (num_gallery, dim) features.
        q_pids, g_pids, q_camids, g_camids: integer ids (see :func:`evaluate_rank`).
        metric: ``"euclidean"``, ``"sqeuclidean"`` or ``"cosine"``.
        max_rank: CMC length (clipped to the gallery size with a warning).
        chunk_size: query rows per chunk; None derives it from ``memory_budget_mb``.
        protocol: ``"market"`` or ``"cuhk03"`` (see :func:`evaluate_rank`).
        memory_budget_mb: approximate bound (MB) on the per-chunk working memory (distance
            block, its sorted copy and temporaries); features and ids are extra.
        num_repeats, seed: cuhk03 sampling, as in :func:`evaluate_rank`.
        dtype: distance computation dtype (float32 default).

    Returns:
        :class:`tfreid.metrics.RankResult`.

    Raises:
        ValueError: bad features/ids/metric/protocol, a budget too small for one row, or no
            valid query.

    Example:
        >>> qf = np.array([[0.0], [5.0]]); gf = np.array([[0.1], [4.0], [9.0]])
        >>> r = evaluate_features(qf, gf, [1, 2], [1, 2, 2], [0, 0], [1, 1, 1], max_rank=2)
        >>> r.cmc.tolist(), r.mAP
        ([1.0, 1.0], 1.0)
    """
    _distance.check_metric(metric)
    qf, gf = _distance.check_features(qf, gf, dtype)
    acc = _rank.RankAccumulator(q_pids, g_pids, q_camids, g_camids, max_rank, protocol,
                                num_repeats, seed)
    if (len(qf), len(gf)) != (acc.num_query, acc.num_gallery):
        raise ValueError(f"features ({len(qf)} query, {len(gf)} gallery rows) do not match the "
                         f"ids ({acc.num_query} query, {acc.num_gallery} gallery)")
    if chunk_size is None:
        chunk_size = auto_chunk_size(len(gf), memory_budget_mb, qf.dtype.itemsize,
                                     acc.extra_bytes_per_item, acc.extra_bytes_per_row)
    chunk_size = _distance.check_chunk_size(chunk_size)
    g, g_sqnorm = _distance.prepare_gallery(gf, metric)
    buf = np.empty((min(chunk_size, len(qf)), len(gf)), qf.dtype)
    for start in range(0, len(qf), chunk_size):
        q = qf[start:start + chunk_size]
        acc.add(_distance.distance_chunk(q, g, g_sqnorm, metric, out=buf[:len(q)]))
    return acc.result()


def auto_chunk_size(num_gallery, memory_budget_mb, itemsize=4, extra_bytes_per_item=0,
                    extra_bytes_per_row=0):
    """Query rows per chunk so the chunk's working memory stays within ``memory_budget_mb``.

    A row costs the distances, their sorted copy and about two more floats of temporaries
    (threshold mask, near-entry lists), plus protocol extras (cuhk03 rank positions).

    Args:
        num_gallery: gallery size.
        memory_budget_mb: budget in MB (> 0).
        itemsize: bytes per distance value.
        extra_bytes_per_item: additional bytes per distance entry.
        extra_bytes_per_row: additional bytes per query row.

    Returns:
        int >= 1.

    Raises:
        ValueError: if the budget cannot hold a single row.
    """
    if not memory_budget_mb or memory_budget_mb <= 0:
        raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb!r}")
    per_row = num_gallery * (4 * itemsize + extra_bytes_per_item) + extra_bytes_per_row
    rows = int(memory_budget_mb * 2**20) // per_row
    if rows < 1:
        raise ValueError(f"memory_budget_mb={memory_budget_mb} is too small for one row of "
                         f"{num_gallery} gallery distances ({per_row / 2**20:.2f} MB needed)")
    return rows
