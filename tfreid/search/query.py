"""Query a gallery index: embed the queries, find their neighbours, optionally re-rank them.

Neighbours come from one of three searches over the index's embeddings, all returning the
library's distances with ties in gallery order:

- exact in NumPy (default; `tfreid.search.exact`, chunked, bounded memory);
- exact through a faiss flat index (`backend="faiss"`);
- approximate through a faiss IVF-Flat index (`approx=True`), built on first use and cached in
  the index folder; its recall@k against the exact search is measured on a sample of the queries.

Re-ranking (`rerank=True`) applies k-reciprocal re-ranking (`tfreid.metrics.re_ranking`) to each
query's shortlist of `rerank_depth` nearest gallery items, independently per query: it needs the
shortlist's gallery-gallery distances (depth^2 per query), never the whole gallery's.

Example:
    >>> result = search(GalleryIndex.load("crops.index"), ["q.jpg"], k=10)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from tfreid import metrics
from tfreid.search import faiss_index
from tfreid.search import images as images_lib
from tfreid.search.exact import check_k, check_matrix, exact_topk
from tfreid.search.results import SearchResult

BACKENDS = ("numpy", "faiss")
RERANK = {"k1": 20, "k2": 6, "lambda_value": 0.3}  # the paper's values, as tfreid.evaluate


def search(index, images=None, k: int = 10, *, embeddings=None, model=None,
           backend: str | None = None, approx: bool = False, rerank: bool = False,
           rerank_depth: int = 100, nlist: int | None = None, nprobe: int | None = None,
           recall_sample: int = 100, batch_size: int = 64, on_bad_image: str = "error",
           progress: bool = True) -> SearchResult:
    """Top-k gallery items of `index` for query images or query embeddings.

    Args:
        index: a `GalleryIndex`.
        images: query image paths, folders or list files (one, or a list).
        k: results per query (>= 1).
        embeddings: float32 `[Q, D]` query embeddings instead of `images`.
        model: the model embedding `images`, a path or an `Embedder` (default: the index's
            own); another network is refused (`GalleryIndex.check_model`).
        backend: `"numpy"` (default for exact search) or `"faiss"` (flat index).
        approx: search a faiss IVF-Flat index instead (faiss required).
        rerank: k-reciprocal re-ranking of each query's `rerank_depth` nearest items.
        rerank_depth: shortlist length for re-ranking (at least k are used).
        nlist, nprobe: IVF lists and lists visited per query (defaults:
            `faiss_index.default_nlist` / `default_nprobe`).
        recall_sample: queries whose exact search measures the approximate recall@k (0: skip).
        batch_size, on_bad_image, progress: query embedding, as `build_index`.

    Returns:
        `SearchResult`.

    Raises:
        ImportError: faiss requested but not installed (names the extra).
        FileNotFoundError, ValueError: bad arguments, images or model (named).
    """
    k = check_k(k)
    if backend not in (None, *BACKENDS):
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if approx and backend == "numpy":
        raise ValueError("backend 'numpy' is exact only; approximate search uses faiss (IVF-Flat)")
    rerank_depth = max(k, check_k(rerank_depth)) if rerank else k
    if isinstance(recall_sample, bool) or not isinstance(recall_sample, int) or recall_sample < 0:
        raise ValueError(f"recall_sample must be an integer >= 0, got {recall_sample!r}")
    if approx or backend == "faiss":
        faiss_index.require_faiss()  # fail before the (slow) model load
    seconds = {}
    start = time.perf_counter()
    queries, paths, skipped = _query_embeddings(index, images, embeddings, model, batch_size,
                                                on_bad_image, progress)
    seconds["embed"] = time.perf_counter() - start
    found, distances, method = _neighbours(index, queries, rerank_depth, backend, approx, nlist,
                                           nprobe, progress, seconds)
    recall = None
    if approx and recall_sample:
        sample = np.unique(np.linspace(0, len(queries) - 1, min(recall_sample, len(queries)))
                           .round().astype(np.int64))
        exact, _ = exact_topk(queries[sample], index.embeddings, k, index.metric)
        recall = (faiss_index.recall_at_k(found[sample, :exact.shape[1]], exact), len(sample))
    reranked = None
    if rerank:
        start = time.perf_counter()
        found, distances, reranked = rerank_shortlists(queries, index.embeddings, found,
                                                       distances, index.metric, k)
        seconds["rerank"] = time.perf_counter() - start
    labels = _query_labels(index, paths)
    return SearchResult(index=index, query_paths=paths, query_pids=labels[0],
                        query_camids=labels[1], indices=found[:, :k], distances=distances[:, :k],
                        rerank_distances=reranked, metric=index.metric, method=method,
                        recall=recall, skipped=skipped,
                        seconds={n: round(s, 3) for n, s in seconds.items()})


def _neighbours(index, queries, depth, backend, approx, nlist, nprobe, progress, seconds):
    """`(indices, distances, method description)` of the `depth` nearest items per query."""
    gallery, metric = index.embeddings, index.metric
    start = time.perf_counter()
    if approx:
        ivf = approximate_index(index, nlist, progress)
        seconds["build"] = time.perf_counter() - start
        start = time.perf_counter()
        found, distances = faiss_index.ivf_topk(ivf, queries, gallery, depth, metric, nprobe)
        method = f"faiss IVF-Flat nlist={ivf.nlist} nprobe={ivf.nprobe} (approximate)"
    elif backend == "faiss":
        found, distances = faiss_index.flat_topk(queries, gallery, depth, metric)
        method = "faiss flat (exact)"
    else:
        found, distances = exact_topk(queries, gallery, depth, metric)
        method = "numpy (exact)"
    seconds["search"] = time.perf_counter() - start
    return found, distances, method


def approximate_index(index, nlist: int | None = None, progress: bool = True):
    """The index's IVF-Flat faiss index: read from its cache file, or built and cached."""
    nlist = faiss_index.default_nlist(len(index)) if nlist is None else check_k(nlist)
    cache = index.path / f"ivf-flat-{nlist}.faiss"
    if cache.is_file():
        try:
            return faiss_index.read(cache)
        except RuntimeError as err:  # a damaged cache file: build it again
            print(f"warning: rebuilding {cache}: {str(err).splitlines()[0]}", file=sys.stderr)
    if progress:
        print(f"building the approximate index (IVF-Flat, {nlist} lists) over {len(index):,} "
              f"embeddings; cached as {cache}")
    ivf = faiss_index.build_ivf(index.embeddings, index.metric, nlist)
    tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    try:
        faiss_index.write(ivf, tmp)
        os.replace(tmp, cache)
    except (OSError, RuntimeError) as err:  # a read-only index folder: search without caching
        tmp.unlink(missing_ok=True)
        print(f"warning: approximate index not cached in {index.path}: {err}", file=sys.stderr)
    return ivf


def rerank_shortlists(queries, gallery, indices, distances, metric: str, k: int):
    """k-reciprocal re-ranking of each query's shortlist (its row of `indices`), per query.

    Args:
        queries: float32 `[Q, D]`.
        gallery: float32 `[N, D]` (only shortlisted rows are read).
        indices, distances: `[Q, depth]` shortlists, nearest first (-1 = none).
        metric: the distance of `distances`.
        k: results kept per query.

    Returns:
        `(indices, distances, reranked)`, each `[Q, k]`, ordered by the re-ranked distance
        (ties in gallery order); `distances` are the original ones.
    """
    width = min(k, indices.shape[1])
    out_i = np.full((len(queries), width), -1, np.int64)
    out_d = np.full((len(queries), width), np.inf, np.float32)
    out_r = np.full((len(queries), width), np.inf, np.float32)
    for i, query in enumerate(queries):
        valid = indices[i] >= 0
        shortlist, dist = indices[i][valid], distances[i][valid]
        rows = np.asarray(gallery[shortlist], np.float32)
        reranked = metrics.re_ranking(
            dist[None], metrics.compute_distance_matrix(query[None], query[None], metric),
            metrics.compute_distance_matrix(rows, rows, metric), **RERANK, max_memory_gb=None)[0]
        order = np.lexsort((shortlist, reranked))[:width]
        n = len(order)
        out_i[i, :n], out_d[i, :n], out_r[i, :n] = shortlist[order], dist[order], reranked[order]
    return out_i, out_d, out_r


def _query_embeddings(index, images, embeddings, model, batch_size, on_bad_image, progress):
    """`(queries [Q, D], paths or None, skipped paths)` from images or given embeddings."""
    if (images is None) == (embeddings is None):
        raise ValueError("give either query images or query embeddings")
    if embeddings is not None:
        queries = check_matrix(embeddings, "query embeddings")
        if queries.shape[1] != index.meta["dim"]:
            raise ValueError(f"query embeddings have dimension {queries.shape[1]}, index "
                             f"{index.path} holds dimension {index.meta['dim']}")
        return queries, None, []
    sources = [images] if isinstance(images, (str, os.PathLike)) else list(images)
    if not sources:
        raise ValueError("no query images given")
    paths = [p for source in sources for p in images_lib.list_images(source)[1]]
    embedder = index.open_model(model, batch_size)
    skipped: list[str] = []
    queries = np.concatenate(list(embedder.embed_files(paths, batch_size, on_bad_image, progress,
                                                       skipped)))
    if skipped:
        print(f"warning: {len(skipped)} unreadable query image(s) skipped: "
              f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}", file=sys.stderr)
        keep = np.isin(paths, skipped, invert=True)
        if not keep.any():
            raise ValueError(f"every query image is unreadable ({len(skipped)} skipped)")
        queries, paths = queries[keep], [p for p, ok in zip(paths, keep) if ok]
    return queries, paths, skipped


def _query_labels(index, paths):
    """Query pids/camids parsed like the gallery's (-1 where a name does not parse), or None."""
    if paths is None or index.dataset is None:
        return None, None
    return images_lib.parse_labels(paths, index.dataset, strict=False)
