"""Retrieval evaluation of a model on a dataset's query/gallery splits."""

from __future__ import annotations

import time

import numpy as np

from tfreid import metrics
from tfreid.data.pipeline import BadImageReport
from tfreid.inference import extract_features


def evaluate(embed, dataset, image_size, *, metric: str = "euclidean", rerank: bool = False,
             flip: bool = False, max_rank: int = 50, protocol: str = "market",
             batch_size: int = 128, on_bad_image: str = "error", progress: bool = False,
             ranked_lists: int = 0, topk: int = 5) -> dict:
    """Query/gallery retrieval metrics of `embed` on `dataset` (a `ReIDDataset`); `progress`
    shows a progress bar while each split is embedded.

    Returns a dict with `mAP`, `rank1`, `rank5`, `rank10`, `mINP` (fractions in [0, 1]),
    `num_query`, `num_gallery`, `num_valid_queries` and `seconds`; with `ranked_lists` = n > 0
    also `"ranked_lists"`: the `tfreid.visualize.ranks.RankedLists` (top `topk`, plain
    `metric` distance) of n valid queries spread over the query split (none if none is valid).
    """
    start = time.perf_counter()
    report = BadImageReport()
    query, gallery = dataset.query, dataset.gallery
    qf = extract_features(embed, query, image_size, batch_size, flip, on_bad_image, report,
                          progress="embedding query" if progress else None)
    gf = extract_features(embed, gallery, image_size, batch_size, flip, on_bad_image, report,
                          progress="embedding gallery" if progress else None)
    if report.count:  # on_bad_image="skip": leave unreadable images out of the ranking
        bad = set(report.paths)
        print(f"warning: {report.count} unreadable images left out of the evaluation: "
              f"{', '.join(report.paths[:5])}{' ...' if report.count > 5 else ''}")
        q_keep = np.array([s.path not in bad for s in query])
        g_keep = np.array([s.path not in bad for s in gallery])
        qf, gf = qf[q_keep], gf[g_keep]
        query = [s for s, k in zip(query, q_keep) if k]
        gallery = [s for s, k in zip(gallery, g_keep) if k]
    q_pids, q_cams = _labels(query)
    g_pids, g_cams = _labels(gallery)
    if rerank:
        dist = metrics.re_ranking(
            metrics.compute_distance_matrix(qf, gf, metric),
            metrics.compute_distance_matrix(qf, qf, metric),
            metrics.compute_distance_matrix(gf, gf, metric),
        )
        result = metrics.evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams,
                                       max_rank=max_rank, protocol=protocol)
    else:
        result = metrics.evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric,
                                           max_rank=max_rank, protocol=protocol)
    cmc = np.asarray(result.cmc)
    extra = {"ranked_lists": _ranked_lists(qf, gf, query, gallery, metric, ranked_lists, topk)} \
        if ranked_lists else {}
    return {**extra,
        "mAP": float(result.mAP),
        "rank1": float(cmc[0]),
        "rank5": float(cmc[min(4, len(cmc) - 1)]),
        "rank10": float(cmc[min(9, len(cmc) - 1)]),
        "mINP": float(result.mINP),
        "num_query": len(query),
        "num_gallery": len(gallery),
        "num_bad_images": report.count,
        "num_valid_queries": int(result.num_valid_queries),
        "seconds": round(time.perf_counter() - start, 2),
    }


def _ranked_lists(qf, gf, query, gallery, metric, count, topk):
    from tfreid.visualize.ranks import ranked_lists_from_distances, select_queries

    q_pids, q_cams = _labels(query)
    g_pids, g_cams = _labels(gallery)
    try:
        chosen = select_queries(q_pids, g_pids, q_cams, g_cams, count)
    except ValueError:  # no valid query: nothing to show
        return None
    dist = metrics.compute_distance_matrix(qf[chosen], gf, metric)
    return ranked_lists_from_distances(dist, [query[i] for i in chosen], gallery, chosen, topk, metric)


def _labels(samples):
    pids = np.fromiter((s.pid for s in samples), dtype=np.int64, count=len(samples))
    cams = np.fromiter((s.camid for s in samples), dtype=np.int64, count=len(samples))
    return pids, cams


def format_table(results: dict[str, dict]) -> str:
    """Rows of rank-1/5/10, mAP, mINP (percent) for named results, e.g. {"trained": ...}."""
    lines = [f"{'':<12} {'rank-1':>7} {'rank-5':>7} {'rank-10':>7} {'mAP':>7} {'mINP':>7}"]
    for name, r in results.items():
        lines.append(
            f"{name:<12} {100 * r['rank1']:7.2f} {100 * r['rank5']:7.2f} "
            f"{100 * r['rank10']:7.2f} {100 * r['mAP']:7.2f} {100 * r['mINP']:7.2f}"
        )
    return "\n".join(lines)
