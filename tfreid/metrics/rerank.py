"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), vectorised and memory-aware.

Numerically this follows the widely used reference implementation (``re_ranking`` in torchreid /
fast-reid / reid-strong-baseline): squared distances of the joint (query + gallery) matrix are
normalised by their column maxima and transposed; k-reciprocal sets use the k1 + 1 nearest
neighbours, each reciprocal neighbour's own (round(k1 / 2) + 1)-reciprocal set is added when more
than 2/3 of it lies in the set; weights are exp(-distance), normalised per row; local query
expansion averages the k2 nearest rows; Jaccard distance 1 - m / (2 - m) with
m = sum_k min(V_ik, V_jk); final = (1 - lambda) Jaccard + lambda original.

Differences from the reference, none changing the result: the reference builds several dense
(N, N) float32 matrices (N = num_query + num_gallery; about 6 N^2 bytes x 4) and loops in Python
over all N rows. Here the joint matrix is never materialised: rows of it are produced in chunks
from the three input blocks, only the (N, k1 + 1) neighbour table is kept, the encoding V is a
sparse matrix, and the Jaccard term is accumulated chunk by chunk. Ties in the neighbour ranking
are broken by index (stable), where the reference's unstable argsort leaves them arbitrary.
Memory: the inputs themselves hold (Nq + Ng)^2 distances; working memory on top is the
(Nq, Ng) float32 output, sparse V and a few bounded chunks.

Reference: Z. Zhong, L. Zheng, D. Cao, S. Li, "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017.
"""

import numpy as np
import scipy.sparse

from tfreid.metrics import distance as _distance

_CHUNK_BYTES = 128 * 2**20


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3, max_memory_gb=8.0):
    """k-reciprocal re-ranked query-gallery distances.

    Args:
        q_g_dist: (num_query, num_gallery) distances.
        q_q_dist: (num_query, num_query) distances.
        g_g_dist: (num_gallery, num_gallery) distances.
        k1: size of the k-reciprocal neighbourhood (paper: 20).
        k2: local query expansion size (paper: 6); 1 disables expansion.
        lambda_value: weight of the original distance (paper: 0.3).
        max_memory_gb: budget for inputs + output + working memory; exceeding it raises
            ValueError before any work (None disables the check).

    Returns:
        (num_query, num_gallery) float32 array with values in [0, 1].

    Raises:
        ValueError: bad shapes, non-finite distances, bad k1/k2/lambda, or memory over budget.

    Example:
        >>> d = re_ranking(qg, qq, gg, k1=20, k2=6, lambda_value=0.3)  # doctest: +SKIP
        >>> evaluate_rank(d, q_pids, g_pids, q_camids, g_camids)      # doctest: +SKIP
    """
    qg, qq, gg = (np.asarray(x) for x in (q_g_dist, q_q_dist, g_g_dist))
    for name, x in (("q_g_dist", qg), ("q_q_dist", qq), ("g_g_dist", gg)):
        if x.ndim != 2 or x.size == 0 or x.dtype.kind not in "fiu":
            raise ValueError(f"{name} must be a non-empty 2-D real array, got shape {x.shape} "
                             f"and dtype {x.dtype}")
    nq, ng = qg.shape
    if qq.shape != (nq, nq) or gg.shape != (ng, ng):
        raise ValueError(f"shapes do not fit: q_g_dist {qg.shape} needs q_q_dist ({nq}, {nq}) and "
                         f"g_g_dist ({ng}, {ng}), got {qq.shape} and {gg.shape}")
    _check_params(k1, k2, lambda_value)
    input_bytes = qg.nbytes + qq.nbytes + gg.nbytes
    _check_memory(nq, ng, k1, k2, input_bytes, max_memory_gb)
    return _Reranker(qg, qq, gg).run(int(k1), int(k2), float(lambda_value))


def re_ranking_from_features(qf, gf, metric="euclidean", k1=20, k2=6, lambda_value=0.3,
                             max_memory_gb=8.0):
    """Re-ranking from features: computes the three distance blocks, then :func:`re_ranking`.

    Note that torchreid's default pipeline feeds *squared* Euclidean distances (its
    "euclidean"); pass ``metric="sqeuclidean"`` to reproduce it.

    Args:
        qf, gf: (num_query, dim) and (num_gallery, dim) features.
        metric: see :func:`tfreid.metrics.compute_distance_matrix`.
        k1, k2, lambda_value, max_memory_gb: see :func:`re_ranking`. The budget check counts the
            (Nq + Ng)^2 float32 distances this function allocates and runs before computing them.

    Returns:
        (num_query, num_gallery) float32 array.

    Raises:
        ValueError: as :func:`re_ranking` and :func:`compute_distance_matrix`.

    Example:
        >>> d = re_ranking_from_features(qf, gf, metric="cosine")  # doctest: +SKIP
    """
    _distance.check_metric(metric)
    qf, gf = _distance.check_features(qf, gf)
    _check_params(k1, k2, lambda_value)
    nq, ng = len(qf), len(gf)
    _check_memory(nq, ng, k1, k2, 4 * (nq + ng) ** 2, max_memory_gb)
    qg = _distance.compute_distance_matrix(qf, gf, metric)
    qq = _distance.compute_distance_matrix(qf, qf, metric)
    gg = _distance.compute_distance_matrix(gf, gf, metric)
    return re_ranking(qg, qq, gg, k1, k2, lambda_value, max_memory_gb=None)


def estimate_memory_bytes(num_query, num_gallery, k1=20, k2=6):
    """Rough working-memory need of :func:`re_ranking` beyond its inputs (bytes)."""
    n = num_query + num_gallery
    sparse_v = n * (k1 + 1) * (k1 // 2 + 2) * 12 * (1 + max(k2, 1))
    return 4 * num_query * num_gallery + sparse_v + 4 * _CHUNK_BYTES


def _check_params(k1, k2, lambda_value):
    for name, k in (("k1", k1), ("k2", k2)):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} must be a positive integer, got {k!r}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value!r}")


def _check_memory(nq, ng, k1, k2, input_bytes, max_memory_gb):
    if max_memory_gb is None:
        return
    need = input_bytes + estimate_memory_bytes(nq, ng, k1, k2)
    if need > max_memory_gb * 2**30:
        raise ValueError(
            f"re-ranking {nq} queries x {ng} gallery items needs about {need / 2**30:.1f} GB "
            f"(the joint distances alone are O((Nq+Ng)^2) = {(nq + ng) ** 2:,} entries), over "
            f"max_memory_gb={max_memory_gb}; raise max_memory_gb or evaluate without re-ranking")


class _Reranker:
    """Holds the three blocks and produces rows of the reference's normalised joint matrix."""

    def __init__(self, qg, qq, gg):
        self.qg, self.qq, self.gg = qg, qq, gg
        self.nq, self.ng = qg.shape
        self.n = self.nq + self.ng
        # Column maxima of the squared joint matrix [[qq, qg], [qg^T, gg]]; max of squares is
        # the square of the largest magnitude, so no squared copy is needed.
        def max_abs(x, axis):
            return np.maximum(x.max(axis=axis), -x.min(axis=axis))
        top = np.maximum(max_abs(qq, 0), max_abs(qg, 1))
        bottom = np.maximum(max_abs(qg, 0), max_abs(gg, 0))
        colmax = np.concatenate([top, bottom])
        if not np.isfinite(colmax).all():
            raise ValueError("distance matrices contain NaN or infinite values")
        self.colmax = _sq32(colmax)
        self.colmax[self.colmax == 0] = 1  # an all-zero column stays zero instead of NaN
        self.rows_per_chunk = max(1, _CHUNK_BYTES // (16 * self.n))

    def orig_rows(self, start, stop):
        """Rows [start, stop) of the reference's ``original_dist`` (after normalise+transpose)."""
        nq = self.nq
        out = np.empty((stop - start, self.n), np.float32)
        if stop <= nq:  # row i = column i of the joint matrix = [qq[:, i], qg[i, :]]
            out[:, :nq] = _sq32(self.qq[:, start:stop].T)
            out[:, nq:] = _sq32(self.qg[start:stop])
        else:  # start >= nq: column nq + r = [qg[:, r], gg[:, r]]
            out[:, :nq] = _sq32(self.qg[:, start - nq:stop - nq].T)
            out[:, nq:] = _sq32(self.gg[:, start - nq:stop - nq].T)
        out /= self.colmax[start:stop, None]
        return out

    def orig_entries(self, i, j):
        """``original_dist[i, j]`` for index arrays: joint-matrix entry (j, i) / colmax[i]."""
        nq = self.nq
        vals = np.empty(len(i), np.float64)
        for jq in (True, False):
            for iq in (True, False):
                m = ((j < nq) == jq) & ((i < nq) == iq)
                ii, jj = i[m], j[m]
                if jq and iq:
                    vals[m] = self.qq[jj, ii]
                elif jq:
                    vals[m] = self.qg[jj, ii - nq]
                elif iq:
                    vals[m] = self.qg[ii, jj - nq]
                else:
                    vals[m] = self.gg[jj - nq, ii - nq]
        sq = _sq32(vals.astype(np.result_type(self.qg, self.qq, self.gg)))
        return sq / self.colmax[i]

    def chunks(self):
        for lo, hi in ((0, self.nq), (self.nq, self.n)):  # never straddle the block boundary
            for start in range(lo, hi, self.rows_per_chunk):
                yield start, min(start + self.rows_per_chunk, hi)

    def run(self, k1, k2, lam):
        n, nq = self.n, self.nq
        kk = min(n, max(k1 + 1, k2))
        rank = np.empty((n, kk), np.int64)
        for start, stop in self.chunks():
            rank[start:stop] = topk_stable(self.orig_rows(start, stop), kk)
        big, half = rank[:, :min(k1 + 1, n)], rank[:, :min(int(np.around(k1 / 2.0)) + 1, n)]
        recip = _reciprocal(big)
        half_recip = _reciprocal(half)
        rows, cols = _expansion(big, recip, half, half_recip)
        w = np.exp(-self.orig_entries(rows, cols)).astype(np.float32)
        row_sum = np.bincount(rows, weights=w, minlength=n)
        v = scipy.sparse.csr_matrix(((w / row_sum[rows]).astype(np.float32), (rows, cols)),
                                    shape=(n, n))
        if k2 != 1:
            k2e = min(k2, n)
            a = scipy.sparse.csr_matrix(
                (np.ones(n * k2e, np.float32), (np.repeat(np.arange(n), k2e),
                                                rank[:, :k2e].ravel())), shape=(n, n))
            v = scipy.sparse.csr_matrix((a @ v) / np.float32(k2e), dtype=np.float32)
        return self._final(v.tocsr(), lam)

    def _final(self, v, lam):
        """(1 - lam) * Jaccard(V_query, V_gallery) + lam * original, query chunk by chunk."""
        nq, ng = self.nq, self.ng
        vg = v[nq:].tocsc()  # column k -> gallery rows with V[g, k] != 0
        col_nnz = np.diff(vg.indptr)
        vq = v[:nq]
        entry_row = np.repeat(np.arange(nq), np.diff(vq.indptr))
        work = np.bincount(entry_row, weights=col_nnz[vq.indices], minlength=nq)
        out = np.empty((nq, ng), np.float32)
        max_triplets = _CHUNK_BYTES // 40  # ~40 bytes of temporaries per (query, k, gallery)
        max_rows = max(1, _CHUNK_BYTES // (8 * ng))  # dense float64 accumulator per chunk
        start = 0
        while start < nq:
            fit = int(np.searchsorted(np.cumsum(work[start:]), max_triplets, side="right"))
            stop = min(nq, start + max(1, min(fit, max_rows)))
            m = _min_overlap(vq[start:stop], vg, col_nnz, ng).astype(np.float32)
            jac = 1 - m / (2 - m)
            orig = _sq32(self.qg[start:stop]) / self.colmax[start:stop, None]
            out[start:stop] = jac * np.float32(1 - lam) + orig * np.float32(lam)
            start = stop
        return out


def _sq32(x):
    """Square in the input dtype, then float32 -- the reference's ``power(d, 2).astype(f32)``."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    return np.square(x).astype(np.float32)


def topk_stable(x, k):
    """Indices of the k smallest entries per row, ascending, ties by column index.

    Equals ``np.argsort(x, axis=1, kind="stable")[:, :k]`` in O(n) per row instead of a sort.

    Args:
        x: ``(b, n)`` real array.
        k: how many per row (``k >= n`` gives the full stable argsort).

    Returns:
        int64 ``(b, min(k, n))`` column indices.

    Example:
        >>> topk_stable(np.array([[3.0, 1.0, 1.0, 0.5]]), 3).tolist()
        [[3, 1, 2]]
    """
    b, n = x.shape
    if k >= n:
        return np.argsort(x, axis=1, kind="stable")
    kth = np.partition(x, k - 1, axis=1)[:, k - 1:k]
    less = x < kth
    need = k - less.sum(axis=1, keepdims=True)
    eq = x == kth
    sel = less | eq
    # Only rows with more ties at the k-th value than slots need the (costly) running count.
    over = np.flatnonzero(eq.sum(axis=1) > need[:, 0])
    if len(over):
        sel[over] = less[over] | (eq[over] & (np.cumsum(eq[over], axis=1) <= need[over]))
    idx = np.nonzero(sel)[1].reshape(b, k)  # row-major: ascending column within each row
    order = np.argsort(np.take_along_axis(x, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def _reciprocal(nn):
    """mask[i, a]: row i is among the neighbours of its neighbour nn[i, a]."""
    out = np.empty(nn.shape, bool)
    step = max(1, 2**24 // (nn.shape[1] ** 2))
    for s in range(0, len(nn), step):
        block = nn[s:s + step]
        out[s:s + step] = (nn[block] == np.arange(s, s + len(block))[:, None, None]).any(axis=2)
    return out


def _expansion(big, recip, half, half_recip):
    """(row, col) pairs of each row's expanded k-reciprocal set, unique and sorted."""
    n, kb = big.shape
    pairs = []
    step = max(1, 2**24 // (kb * kb * half.shape[1]))
    for s in range(0, n, step):
        r, rm = big[s:s + step], recip[s:s + step]
        cand, cand_m = half[r], half_recip[r]  # (b, kb, kh): each neighbour's half-size set
        inside = ((cand[..., None] == r[:, None, None, :]) & rm[:, None, None, :]).any(axis=3)
        inter = (inside & cand_m).sum(axis=2)
        accept = rm & (inter > 2.0 / 3 * cand_m.sum(axis=2))
        rows = np.arange(s, s + len(r))
        pairs.append(np.where(rm, rows[:, None] * n + r, -1))
        take = accept[..., None] & cand_m
        pairs.append(np.where(take, rows[:, None, None] * n + cand, -1).reshape(len(r), -1))
    flat = np.unique(np.concatenate([p.ravel() for p in pairs]))
    flat = flat[flat >= 0]
    return flat // n, flat % n


def _min_overlap(vq, vg, col_nnz, ng):
    """m[i, g] = sum_k min(vq[i, k], vg[g, k]) using only the non-zeros of both."""
    b = vq.shape[0]
    qrow = np.repeat(np.arange(b), np.diff(vq.indptr))
    cnt = col_nnz[vq.indices]
    starts = np.repeat(vg.indptr[vq.indices], cnt)
    offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    pos = starts + offs
    vals = np.minimum(np.repeat(vq.data, cnt), vg.data[pos])
    idx = np.repeat(qrow, cnt) * ng + vg.indices[pos]
    return np.bincount(idx, weights=vals, minlength=b * ng).reshape(b, ng)
