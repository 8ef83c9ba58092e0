"""Pairwise distances between query and gallery features, computed in row chunks.

Only NumPy is used. The functions here are also the building blocks of
:func:`tfreid.metrics.evaluate_features`, which calls :func:`distance_chunk` with the same
arguments as :func:`compute_distance_matrix` so both paths produce the same float values.
"""

import numpy as np

METRICS = ("euclidean", "sqeuclidean", "cosine")

# Norms below this are treated as this value for cosine, like torch's F.normalize(eps=1e-12),
# so an all-zero feature gets distance 1 to everything instead of NaN.
_COSINE_EPS = 1e-12


def check_features(qf, gf, dtype=np.float32):
    """Validate and convert query/gallery feature matrices.

    Args:
        qf: array-like (num_query, dim).
        gf: array-like (num_gallery, dim).
        dtype: floating dtype the features are converted to.

    Returns:
        ``(qf, gf)`` as C-contiguous arrays of ``dtype``.

    Raises:
        ValueError: if an input is not 2-D, is empty, has NaN/inf or the dims differ.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    out = []
    for name, x in (("qf", qf), ("gf", gf)):
        x = np.ascontiguousarray(x, dtype=dtype)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"{name} must be a non-empty 2-D array (num, dim), "
                             f"got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or infinite values; features must be finite")
        out.append(x)
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(
            f"feature dims differ: qf has dim {out[0].shape[1]}, gf has dim {out[1].shape[1]}; "
            "query and gallery features must have the same dim")
    return out[0], out[1]


def check_metric(metric):
    """Raise ValueError unless ``metric`` is one of :data:`METRICS`."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def prepare_gallery(gf, metric):
    """Precompute what every query chunk needs from the gallery.

    Args:
        gf: (num_gallery, dim) float array (already validated).
        metric: one of :data:`METRICS`.

    Returns:
        ``(g, g_sqnorm)``: for cosine ``g`` is L2-normalised and ``g_sqnorm`` is None; otherwise
        ``g`` is ``gf`` and ``g_sqnorm`` its squared row norms.
    """
    if metric == "cosine":
        return _l2_normalize(gf), None
    return gf, np.einsum("ij,ij->i", gf, gf)


def distance_chunk(q, g, g_sqnorm, metric, out=None):
    """Distances from a chunk of query rows to the whole (prepared) gallery.

    Args:
        q: (b, dim) query rows, same dtype as ``g`` (raw, not normalised).
        g, g_sqnorm: output of :func:`prepare_gallery`.
        metric: one of :data:`METRICS`.
        out: optional preallocated (b, num_gallery) C-contiguous array of ``g.dtype`` to write
            into (reusing one buffer avoids page-faulting a fresh block for every chunk).

    Returns:
        (b, num_gallery) array of ``g.dtype`` (``out`` when given).
    """
    if metric == "cosine":
        d = np.matmul(_l2_normalize(q), g.T, out=out)
        # 1 - cos computed in place; the product is the only (b, n) allocation.
        np.subtract(1, d, out=d)
        return d
    d = np.matmul(q, g.T, out=out)
    d *= -2
    d += np.einsum("ij,ij->i", q, q)[:, None]
    d += g_sqnorm[None, :]
    # The expansion |q|^2 + |g|^2 - 2 q.g can go slightly negative by cancellation.
    np.maximum(d, 0, out=d)
    if metric == "euclidean":
        np.sqrt(d, out=d)
    return d


def compute_distance_matrix(qf, gf, metric="euclidean", chunk_size=1024, dtype=np.float32):
    """Query-gallery distance matrix, computed ``chunk_size`` query rows at a time.

    Extra memory beyond the (num_query, num_gallery) result and the inputs is one
    (chunk_size, num_gallery) block, so large galleries stay bounded.

    Args:
        qf: (num_query, dim) query features.
        gf: (num_gallery, dim) gallery features.
        metric: ``"euclidean"`` (L2 distance), ``"sqeuclidean"`` (squared L2) or ``"cosine"``
            (``1 - cosine similarity``; zero vectors get similarity 0).
        chunk_size: number of query rows per block (positive int).
        dtype: computation and output dtype (float32 by default; float64 for more precision).

    Returns:
        (num_query, num_gallery) array of ``dtype``.

    Raises:
        ValueError: unknown metric, bad shapes, mismatched dims, non-finite features or a
            non-positive chunk_size.

    Example:
        >>> q = np.array([[0.0, 0.0]]); g = np.array([[3.0, 4.0], [0.0, 1.0]])
        >>> compute_distance_matrix(q, g).tolist()
        [[5.0, 1.0]]
    """
    check_metric(metric)
    chunk_size = check_chunk_size(chunk_size)
    qf, gf = check_features(qf, gf, dtype)
    g, g_sqnorm = prepare_gallery(gf, metric)
    out = np.empty((qf.shape[0], gf.shape[0]), dtype=qf.dtype)
    for start in range(0, qf.shape[0], chunk_size):
        stop = min(start + chunk_size, qf.shape[0])
        out[start:stop] = distance_chunk(qf[start:stop], g, g_sqnorm, metric)
    return out


def check_chunk_size(chunk_size):
    """Return ``chunk_size`` as an int, or raise ValueError if it is not a positive integer."""
    if not _is_positive_int(chunk_size):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _is_positive_int(x):
    return not isinstance(x, bool) and isinstance(x, (int, np.integer)) and x >= 1


def _l2_normalize(x):
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.maximum(norm, _COSINE_EPS)[:, None]
