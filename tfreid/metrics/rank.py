"""CMC, mAP and mINP for person re-identification from a query-gallery distance matrix.

Semantics follow the de-facto standard (torchreid ``eval_market1501`` / ``eval_cuhk03`` and
fast-reid's mINP): per query, gallery items with the same pid AND the same camera are dropped;
queries with no remaining true match are skipped; ties are broken by gallery order (a stable
sort).

Only the stable rank of each true match is needed, so the implementation never argsorts a row
(a stable argsort of a Market-size matrix alone takes ~6 s). Per chunk of rows: when few entries
lie no farther than a row's farthest true match (a trained model), just those entries are
ordered by (distance, gallery index); otherwise the row is value-sorted with the SIMD ``np.sort``
and every true match is located by a vectorised binary search, with equal distances resolved
exactly by gallery index. Work is O(B G log G) at worst per chunk of B rows, memory O(B G).

Reference: Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015 (CMC/mAP);
Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook", TPAMI 2021 (mINP).
"""

import dataclasses
import warnings

import numpy as np

PROTOCOLS = ("market", "cuhk03")

# Working memory for one chunk of rows in evaluate_rank (sorted copy, masks).
_CHUNK_BUDGET_BYTES = 256 * 2**20


@dataclasses.dataclass
class RankResult:
    """Result of a ReID evaluation.

    Attributes:
        cmc: float64 array of length ``max_rank``; ``cmc[k]`` is the fraction of valid queries
            whose first true match is at rank <= k + 1.
        mAP: mean average precision over valid queries, in [0, 1].
        mINP: mean inverse negative penalty (fast-reid) over valid queries, in [0, 1].
        num_valid_queries: queries with at least one true match after filtering.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid_queries: int

    @property
    def rank1(self):
        """CMC at rank 1."""
        return float(self.cmc[0])

    def as_dict(self, ranks=(1, 5, 10)):
        """Plain dict (``mAP``, ``mINP``, ``rank{k}``...) for ``metrics.json``; ranks beyond the
        CMC length are omitted."""
        out = {"mAP": float(self.mAP), "mINP": float(self.mINP),
               "num_valid_queries": int(self.num_valid_queries)}
        out.update({f"rank{k}": float(self.cmc[k - 1]) for k in ranks if k <= len(self.cmc)})
        return out


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="market",
                  num_repeats=10, seed=0):
    """Evaluate a query-gallery distance matrix with the standard ReID protocol.

    Args:
        distmat: (num_query, num_gallery) real array; smaller = more similar. float32 is the
            fastest path; any real dtype is ranked exactly (no conversion).
        q_pids, g_pids: integer person ids, shapes (num_query,) and (num_gallery,). pid 0
            (distractors) and -1 (junk) are ordinary ids that never match a real query.
        q_camids, g_camids: integer camera ids, same shapes.
        max_rank: CMC length; clipped (with a warning) to num_gallery.
        protocol: ``"market"`` (multi-shot CMC, as for Market-1501/DukeMTMC/MSMT17) or
            ``"cuhk03"`` (classic single-shot CMC: one gallery image sampled per identity,
            averaged over ``num_repeats`` seeded draws; AP and INP use the full filtered gallery).
        num_repeats, seed: cuhk03 sampling. Query q uses draws ``q`` of
            ``np.random.default_rng(seed).random((num_query, num_repeats, num_gallery_ids))``;
            identity u picks ``candidates[floor(draw * len(candidates))]`` with candidates in
            gallery order (the query's own id: only the items kept after filtering).

    Returns:
        :class:`RankResult`.

    Raises:
        ValueError: bad shapes/lengths/dtypes, NaN distances, unknown protocol, non-positive
            max_rank, or no valid query.

    Example:
        >>> d = np.array([[0.1, 0.5, 0.3]])
        >>> r = evaluate_rank(d, [1], [2, 1, 1], [0], [1, 1, 0], max_rank=3)
        >>> r.cmc.tolist(), r.mAP   # gallery item 2 is same pid + same cam: dropped
        ([0.0, 1.0, 1.0], 0.5)
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2 or distmat.dtype.kind not in "fiu":
        raise ValueError(f"distmat must be a 2-D real array, got shape {distmat.shape} "
                         f"and dtype {distmat.dtype}")
    acc = RankAccumulator(q_pids, g_pids, q_camids, g_camids, max_rank, protocol,
                          num_repeats, seed)
    if distmat.shape != (acc.num_query, acc.num_gallery):
        raise ValueError(f"distmat shape {distmat.shape} does not match "
                         f"(len(q_pids), len(g_pids)) = ({acc.num_query}, {acc.num_gallery})")
    per_row = (acc.num_gallery * (3 * distmat.dtype.itemsize + acc.extra_bytes_per_item)
               + acc.extra_bytes_per_row)
    rows = max(1, _CHUNK_BUDGET_BYTES // per_row)
    for start in range(0, acc.num_query, rows):
        acc.add(distmat[start:start + rows])
    return acc.result()


def check_ids(q_pids, g_pids, q_camids, g_camids):
    """Convert the four id arrays to 1-D int64, raising ValueError on bad shape/length/dtype."""
    out = {}
    for name, x in (("q_pids", q_pids), ("g_pids", g_pids), ("q_camids", q_camids),
                    ("g_camids", g_camids)):
        a = np.asarray(x)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
        if a.dtype.kind not in "iub":
            if a.dtype.kind != "f" or not np.array_equal(a, np.round(a)):
                raise ValueError(f"{name} must hold integers, got dtype {a.dtype}")
        out[name] = a.astype(np.int64)
    for side in ("q", "g"):
        n_p, n_c = len(out[f"{side}_pids"]), len(out[f"{side}_camids"])
        if n_p != n_c:
            raise ValueError(f"{side}_pids has length {n_p} but {side}_camids has length {n_c}")
    return out["q_pids"], out["g_pids"], out["q_camids"], out["g_camids"]


class RankAccumulator:
    """Streaming evaluator: feed consecutive chunks of distance rows, then call ``result()``.

    Shared by :func:`evaluate_rank` and :func:`tfreid.metrics.evaluate_features`, so both give
    identical numbers for identical distance values.

    Args: as :func:`evaluate_rank` (without ``distmat``).
    """

    def __init__(self, q_pids, g_pids, q_camids, g_camids, max_rank=50, protocol="market",
                 num_repeats=10, seed=0):
        self.q_pids, self.g_pids, self.q_camids, self.g_camids = check_ids(
            q_pids, g_pids, q_camids, g_camids)
        self.num_query, self.num_gallery = len(self.q_pids), len(self.g_pids)
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if not _is_positive_int(max_rank):
            raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
        if max_rank > self.num_gallery:
            warnings.warn(f"max_rank={max_rank} exceeds the gallery size {self.num_gallery}; "
                          f"using max_rank={self.num_gallery}", stacklevel=3)
            max_rank = self.num_gallery
        self.max_rank, self.protocol = int(max_rank), protocol
        # Gallery grouped by pid (stable, so each group lists gallery indices in ascending order).
        self._g_order = np.argsort(self.g_pids, kind="stable")
        self._uids, self._starts, self._counts = np.unique(
            self.g_pids[self._g_order], return_index=True, return_counts=True)
        if protocol == "cuhk03":
            if not _is_positive_int(num_repeats):
                raise ValueError(f"num_repeats must be a positive integer, got {num_repeats!r}")
            self.num_repeats = int(num_repeats)
            self._rng = np.random.default_rng(seed)
        # Memory beyond the chunk and its sorted copy: cuhk03 keeps stable rank positions per
        # entry (int64 argsort + int32) and per-row samples (repeats x ids, ~4 arrays of 8 bytes).
        cuhk = protocol == "cuhk03"
        self.extra_bytes_per_item = 12 if cuhk else 0
        self.extra_bytes_per_row = 32 * self.num_repeats * len(self._uids) if cuhk else 0
        self._next_row = 0
        self._sort_buf = None  # reused across chunks: fresh pages per chunk cost more than sorting
        # Integer hit counts and per-query AP/INP: the result does not depend on the chunking.
        self._cmc_hist = np.zeros(self.max_rank, np.int64)
        self._valid = np.zeros(self.num_query, bool)
        self._ap = np.zeros(self.num_query, np.float64)
        self._inp = np.zeros(self.num_query, np.float64)

    def add(self, dist_rows):
        """Consume the next ``len(dist_rows)`` query rows (a (b, num_gallery) array)."""
        b = dist_rows.shape[0]
        lo = self._next_row
        if dist_rows.ndim != 2 or dist_rows.shape[1] != self.num_gallery or lo + b > self.num_query:
            raise ValueError(f"chunk of shape {dist_rows.shape} does not fit rows {lo}.."
                             f"{lo + b} of a ({self.num_query}, {self.num_gallery}) matrix")
        self._next_row += b
        q_pids, q_camids = self.q_pids[lo:lo + b], self.q_camids[lo:lo + b]
        stats = self._match_ranks(dist_rows, q_pids, q_camids)
        valid, first_rank, ap, inp = stats[:4]
        self._valid[lo:lo + b] = valid
        self._ap[lo:lo + b] = np.where(valid, ap, 0.0)
        self._inp[lo:lo + b] = np.where(valid, inp, 0.0)
        if self.protocol == "market":
            hist = np.bincount(np.minimum(first_rank[valid], self.max_rank + 1) - 1,
                               minlength=self.max_rank + 1)[:self.max_rank]
            self._cmc_hist += hist
        else:
            self._cmc_hist += self._single_shot_cmc(dist_rows, q_pids, valid, *stats[4:])

    def result(self):
        """Final :class:`RankResult`; raises ValueError when no query is valid."""
        if self._next_row != self.num_query:
            raise ValueError(f"only {self._next_row} of {self.num_query} query rows were added")
        n = int(self._valid.sum())
        if n == 0:
            raise ValueError("no valid query: no query identity appears in the gallery under a "
                             "different camera, so CMC/mAP are undefined")
        if self.protocol == "market":
            cmc = np.cumsum(self._cmc_hist) / n
        else:
            cmc = self._cmc_hist / (n * self.num_repeats)
        return RankResult(cmc=cmc, mAP=float(self._ap.sum() / n), mINP=float(self._inp.sum() / n),
                          num_valid_queries=n)

    def _match_pairs(self, q_pids):
        """All (row, gallery index) pairs with equal pid; row-major, gallery index ascending."""
        loc = np.minimum(np.searchsorted(self._uids, q_pids), len(self._uids) - 1)
        found = self._uids[loc] == q_pids
        counts = np.where(found, self._counts[loc], 0)
        rows = np.repeat(np.arange(len(q_pids)), counts)
        ends = np.cumsum(counts)
        offset = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)
        gidx = self._g_order[np.repeat(self._starts[loc], counts) + offset]
        return rows, gidx, loc

    def _match_ranks(self, d, q_pids, q_camids):
        """Per-row validity, first kept-match rank, AP and INP for one chunk of distance rows."""
        b, n = d.shape
        if d.dtype.kind == "f" and np.isnan(d.min()):  # min propagates NaN; no mask needed
            raise ValueError("distmat contains NaN values")
        rows, gidx, loc = self._match_pairs(q_pids)
        pos = self._positions(d, rows, gidx)
        removed = self.g_camids[gidx] == q_camids[rows]
        kept_by_index = (rows[~removed], gidx[~removed])  # needed by the cuhk03 sampler
        # Sort the (few) match pairs by position within each row; the kept rank of a match is its
        # position minus the removed same-camera matches in front of it.
        order = np.argsort(rows * n + pos, kind="stable")
        rows, pos, removed = rows[order], pos[order], removed[order]
        ex_removed = np.cumsum(removed) - removed
        row_first = np.searchsorted(rows, np.arange(b))
        base = ex_removed[np.minimum(row_first, max(len(rows) - 1, 0))] if len(rows) else row_first
        kept_rank = (pos - (ex_removed - base[rows]) + 1)[~removed]
        krows = rows[~removed]
        num_pos = np.bincount(krows, minlength=b)
        first = np.searchsorted(krows, np.arange(b))
        valid = num_pos > 0
        kth = np.arange(len(krows)) - first[krows] + 1
        safe = np.maximum(num_pos, 1)
        ap = np.bincount(krows, weights=kth / kept_rank, minlength=b) / safe
        pad = np.append(kept_rank, 1)  # rows without matches index past the end harmlessly
        first_rank = pad[np.where(valid, first, len(kept_rank))]
        last_rank = pad[np.where(valid, first + num_pos - 1, len(kept_rank))]
        inp = num_pos / last_rank
        return valid, first_rank, ap, inp, num_pos, kept_by_index, loc

    def _positions(self, d, rows, cols):
        """Stable positions of the match entries ``d[rows, cols]`` (rows ascending).

        Only entries no farther than a row's farthest match can be in front of a match. Rows
        where those are few ("light": typical for a trained model) are ranked from just those
        entries; the other rows are value-sorted whole and searched (:func:`stable_positions`).
        """
        b, n = d.shape
        pos = np.empty(len(rows), np.int64)
        if not len(rows):
            return pos
        vals = d[rows, cols]
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        thresh = np.empty(b, d.dtype)
        thresh[:] = np.finfo(d.dtype).min if d.dtype.kind == "f" else np.iinfo(d.dtype).min
        thresh[rows[starts]] = np.maximum.reduceat(vals, starts)
        near = d <= thresh[:, None]
        count = np.count_nonzero(near, axis=1)
        has = np.zeros(b, bool)
        has[rows] = True
        light = has & (count <= light_limit(n))
        heavy = np.flatnonzero(has & ~light)
        if len(heavy) < b:
            if len(heavy):
                near[heavy] = False
            flat = np.flatnonzero(near)  # ascending row-major; much faster than 2-D nonzero
            nr, nc = np.divmod(flat, n)
            order = np.lexsort((nc, d[nr, nc], nr))  # stable order within each row
            rank_of = np.empty(len(order), np.int64)
            rank_of[order] = np.arange(len(order))
            m = light[rows]
            idx = np.searchsorted(flat, rows[m] * n + cols[m])
            pos[m] = rank_of[idx] - np.searchsorted(nr, rows[m])
        del near
        if len(heavy):
            if self._sort_buf is None or self._sort_buf.shape[0] < len(heavy) \
                    or self._sort_buf.dtype != d.dtype:
                self._sort_buf = np.empty((b, n), d.dtype)  # sized for a whole chunk once
            srt = self._sort_buf[:len(heavy)]
            np.take(d, heavy, axis=0, out=srt)
            srt.sort(axis=1)
            slot = np.full(b, -1, np.int64)
            slot[heavy] = np.arange(len(heavy))
            m = slot[rows] >= 0
            pos[m] = stable_positions(d, srt, rows[m], cols[m], slot[rows[m]])
        return pos

    def _single_shot_cmc(self, d, q_pids, valid, num_pos, kept_by_index, loc):
        """Hit counts of the cuhk03 single-shot CMC, summed over rows and repeats."""
        b, n = d.shape
        u = self._rng.random((b, self.num_repeats, len(self._uids)))
        if not valid.any():
            return 0
        # Stable rank position of every gallery item for every row of the chunk.
        rank_pos = np.empty((b, n), np.int32)
        np.put_along_axis(rank_pos, np.argsort(d, axis=1, kind="stable"),
                          np.arange(n, dtype=np.int32)[None, :], axis=1)
        rank_pos, u, loc, q_num_pos = rank_pos[valid], u[valid], loc[valid], num_pos[valid]
        pick = np.floor(u * self._counts).astype(np.int64)
        chosen = self._g_order[self._starts + pick]  # (v, repeats, ids)
        # The query's own identity samples among its kept (other-camera) items only.
        krows, kg = kept_by_index
        kfirst = np.searchsorted(krows, np.flatnonzero(valid))
        own_pick = np.floor(u[np.arange(len(loc)), :, loc] * q_num_pos[:, None]).astype(np.int64)
        own = kg[kfirst[:, None] + own_pick]  # (v, repeats)
        p = np.take_along_axis(rank_pos[:, None, :], chosen, axis=2)
        # The own identity's column holds an unfiltered sample of the query pid: replace it by a
        # position nothing can be behind, so only the other identities are counted.
        v = np.arange(len(loc))
        p[v[:, None], np.arange(self.num_repeats)[None, :], loc[:, None]] = n
        p_true = np.take_along_axis(rank_pos, own, axis=1)
        ahead = (p < p_true[:, :, None]).sum(axis=2)
        ranks = ahead + 1  # (v, repeats), rank of the true match in the reduced gallery
        hits = ranks[:, :, None] <= np.arange(1, self.max_rank + 1)
        return hits.sum(axis=(0, 1))


def _is_positive_int(x):
    return not isinstance(x, bool) and isinstance(x, (int, np.integer)) and x >= 1


def light_limit(n):
    """Rows with at most this many entries up to their farthest match skip the full sort."""
    return max(64, n // 16)


def stable_positions(d, s, rows, cols, s_rows=None):
    """Position of ``d[rows, cols]`` in the stable ascending order of its row.

    Args:
        d: (b, n) distances; s: ``np.sort(d[r], axis=1)`` for some rows r of d.
        rows, cols: int arrays of equal length (the entries of ``d`` to locate).
        s_rows: row of ``s`` holding each entry's sorted row (default: ``rows``).

    Returns:
        int64 array: number of entries of the row that are smaller, plus equal entries with a
        smaller column index (i.e. ``np.argsort(d[r], kind="stable")`` inverse at ``cols``).
    """
    n = d.shape[1]
    vals = d[rows, cols]
    flat = s.reshape(-1)
    base = (rows if s_rows is None else s_rows).astype(np.int64) * n
    lo = np.zeros(len(vals), np.int64)
    hi = np.full(len(vals), n, np.int64)
    for _ in range(int(n).bit_length()):  # vectorised lower_bound over all entries at once
        mid = (lo + hi) >> 1
        active = lo < hi
        less = flat[base + np.minimum(mid, n - 1)] < vals
        lo = np.where(active & less, mid + 1, lo)
        hi = np.where(active & ~less, mid, hi)
    # A tie exists iff the next sorted value equals the entry; then count the equal entries with
    # a smaller column index. This is the rare path (a few % of entries for float32 distances at
    # MSMT17 scale, many for integer distances); a prefix scan per tied entry reads only d[r, :c]
    # and copies nothing, far cheaper than gathering (ties, n) row copies.
    nxt = np.minimum(lo + 1, n - 1)
    tied = np.flatnonzero((lo + 1 < n) & (flat[base + nxt] == vals))
    for t, r, c, v in zip(tied.tolist(), rows[tied].tolist(), cols[tied].tolist(),
                          vals[tied].tolist()):
        lo[t] += np.count_nonzero(d[r, :c] == v)
    return lo
