"""Ranked lists: a query, then its top-k gallery images framed green (same id) or red (another id).

The ranking is the one the evaluation scores: the run's distance metric (and re-ranking / flip
averaging if its config evaluates with them), gallery items of the query's own identity seen by
the query's own camera removed, and ties broken by gallery order (a stable sort), exactly as
`tfreid.metrics.evaluate_rank` does. Each list is annotated with the query's AP and the rank of its
first true match, both computed by `evaluate_rank` itself.

Example:
    >>> lists = compute_ranked_lists("runs/hacnn-trained", num_queries=4, topk=5)  # doctest: +SKIP
    >>> write_ranked_lists(lists, "runs/hacnn-trained/visualize/ranks")           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np
from PIL import Image, ImageDraw

from tfreid.checks import check_int
from tfreid.metrics.rank import check_ids, evaluate_rank
from tfreid.visualize import draw

CORRECT = (0, 200, 0)
WRONG = (230, 0, 0)
QUERY = (0, 0, 0)
UNKNOWN = (150, 150, 150)  # identity not known (search galleries without pids)
FRAME = 4  # frame width around every image, pixels
GAP = 6  # between gallery cells
SEPARATOR = 18  # extra space between the query and rank 1
MARGIN = 6
CAPTION_LINES = 2


def rank_gallery(distmat, q_pids, g_pids, q_camids, g_camids, topk: int = 10):
    """Top-k gallery items per query, in the order `evaluate_rank` ranks them.

    Gallery items with the query's pid AND camera are removed; the rest are sorted by distance
    with ties broken by gallery index (stable sort).

    Args:
        distmat: ``(num_query, num_gallery)`` distances, smaller = more similar.
        q_pids, g_pids, q_camids, g_camids: integer ids as for `evaluate_rank`.
        topk: list length (positive int); shorter lists are padded with index -1.

    Returns:
        ``(indices, matches)``: int64 ``[num_query, topk]`` gallery indices (-1 = none) and bool
        ``[num_query, topk]``, True where the gallery item has the query's pid.

    Raises:
        ValueError: bad shapes, NaN distances or a non-positive ``topk``.

    Example:
        >>> idx, ok = rank_gallery([[0.1, 0.5, 0.3]], [1], [2, 1, 1], [0], [1, 1, 0], topk=3)
        >>> idx.tolist(), ok.tolist()   # item 2: same pid and camera as the query, removed
        ([[0, 1, -1]], [[False, True, False]])
    """
    check_int("topk", topk)
    q_pids, g_pids, q_camids, g_camids = check_ids(q_pids, g_pids, q_camids, g_camids)
    distmat = np.asarray(distmat)
    if distmat.shape != (len(q_pids), len(g_pids)) or distmat.dtype.kind not in "fiu":
        raise ValueError(f"distmat must be a real array of shape (len(q_pids), len(g_pids)) = "
                         f"({len(q_pids)}, {len(g_pids)}), got shape {distmat.shape} and dtype "
                         f"{distmat.dtype}")
    if distmat.dtype.kind == "f" and np.isnan(distmat).any():
        raise ValueError("distmat contains NaN values")
    indices = np.full((len(q_pids), topk), -1, np.int64)
    matches = np.zeros((len(q_pids), topk), bool)
    for i, row in enumerate(distmat):
        order = np.argsort(row, kind="stable")
        removed = (g_pids[order] == q_pids[i]) & (g_camids[order] == q_camids[i])
        kept = order[~removed][:topk]
        indices[i, :len(kept)] = kept
        matches[i, :len(kept)] = g_pids[kept] == q_pids[i]
    return indices, matches


def select_queries(q_pids, g_pids, q_camids, g_camids, num_queries: int) -> np.ndarray:
    """Indices of ``num_queries`` valid queries spread evenly over the query list.

    A query is valid (counted by the evaluation) when its pid appears in the gallery under another
    camera. The choice depends only on the ids, so it is the same for every model.
    """
    check_int("num_queries", num_queries)
    q_pids, g_pids, q_camids, g_camids = check_ids(q_pids, g_pids, q_camids, g_camids)
    seen = set(zip(g_pids.tolist(), g_camids.tolist()))
    cams_of = {}
    for pid, cam in seen:
        cams_of.setdefault(pid, set()).add(cam)
    valid = np.array([bool(cams_of.get(p, set()) - {c}) for p, c in zip(q_pids.tolist(),
                                                                     q_camids.tolist())])
    candidates = np.flatnonzero(valid)
    if not len(candidates):
        raise ValueError("no valid query: no query identity appears in the gallery under a "
                         "different camera")
    pick = np.linspace(0, len(candidates) - 1, min(num_queries, len(candidates)))
    return candidates[np.unique(np.round(pick).astype(np.int64))]


@dataclasses.dataclass
class RankedLists:
    """Ranked lists of selected queries (all arrays have one row per selected query).

    Attributes:
        query: the selected query `Sample`s; gallery: the whole gallery.
        query_index: their positions in the dataset's query list.
        indices, matches: as returned by `rank_gallery`; distances: the matching distances (NaN
            where the list is padded).
        ap: each query's average precision; first_match: rank (1-based) of its first true match,
            both from `evaluate_rank` (NaN and 0 for a query the evaluation would skip).
        metric: the distance used (``"+rerank"`` appended when re-ranked).
    """

    query: list
    gallery: list
    query_index: np.ndarray
    indices: np.ndarray
    matches: np.ndarray
    distances: np.ndarray
    ap: np.ndarray
    first_match: np.ndarray
    metric: str


def ranked_lists_from_distances(distmat, query, gallery, query_index, topk, metric) -> RankedLists:
    """`RankedLists` for the rows of ``distmat`` (queries ``query``, all of ``gallery``)."""
    q_pids, q_cams = _ids(query)
    g_pids, g_cams = _ids(gallery)
    indices, matches = rank_gallery(distmat, q_pids, g_pids, q_cams, g_cams, topk)
    distances = np.where(indices >= 0, np.take_along_axis(distmat, np.maximum(indices, 0), 1),
                         np.nan)
    ap, first = [], []
    for i in range(len(query)):  # the evaluation's own numbers for each shown query
        if not np.any((g_pids == q_pids[i]) & (g_cams != q_cams[i])):
            ap.append(np.nan)  # not a valid query (the evaluation skips it)
            first.append(0)
            continue
        r = evaluate_rank(distmat[i:i + 1], q_pids[i:i + 1], g_pids, q_cams[i:i + 1], g_cams,
                          max_rank=len(gallery))
        ap.append(r.mAP)
        first.append(int(np.argmax(r.cmc >= 1.0)) + 1)
    return RankedLists(list(query), list(gallery), np.asarray(query_index), indices, matches,
                       distances, np.array(ap), np.array(first), metric)


def compute_ranked_lists(run_dir, *, dataset: str | None = None, data_root: str | None = None,
                         checkpoint: str | None = None, num_queries: int = 20, topk: int = 10,
                         batch_size: int | None = None, progress: bool = False) -> RankedLists:
    """Ranks the gallery for ``num_queries`` queries with a trained run's model.

    Args:
        run_dir: a run directory written by ``python -m tfreid.train``.
        dataset, data_root: dataset to rank (default: the run's own). Another name or folder
            is cross-domain and loaded without the run's dataset options, as
            ``tfreid.evaluate`` does.
        checkpoint: checkpoint prefix (default: the latest).
        num_queries: how many valid queries to show (spread over the query list).
        topk: gallery images per list.
        batch_size: images per forward pass (default: the run's eval batch size).

    Returns:
        `RankedLists`.
    """
    from tfreid import metrics
    from tfreid.data import build_dataset
    from tfreid.data.pipeline import BadImageReport
    from tfreid.inference import extract_features
    from tfreid.models import embedding_model
    from tfreid.runs import load_run

    cfg, model, _ = load_run(run_dir, checkpoint)
    name = dataset or cfg.data.dataset
    if (dataset and dataset != cfg.data.dataset) or (
            data_root and not _same_folder(data_root, cfg.data.root)):
        # Another set (cross-domain), as tfreid.evaluate treats it: the run's dataset options do
        # not apply, and a synthetic set on disk is read as the Market-format folder it is (the
        # synthetic loader would regenerate it in place under other generation options).
        data = build_dataset("market1501" if name == "synthetic" and data_root else name,
                             data_root)
    else:
        data = build_dataset(name, cfg.data.root, **cfg.data.kwargs)
    embed = embedding_model(model)
    size = (cfg.data.height, cfg.data.width)
    batch = batch_size or cfg.data.eval_batch_size
    policy = cfg.data.on_bad_image
    query, gallery = data.query, data.gallery
    q_pids, q_cams = _ids(query)
    g_pids, g_cams = _ids(gallery)
    chosen = select_queries(q_pids, g_pids, q_cams, g_cams, num_queries)
    # Re-ranking needs every query's feature; the plain distance only the shown ones. One
    # extraction call for both splits: each call traces the model once.
    rows = np.arange(len(query)) if cfg.eval.rerank else chosen
    report = BadImageReport()
    feats = extract_features(embed, [query[i] for i in rows] + list(gallery), size, batch,
                             cfg.eval.flip, policy, report,
                             progress="embedding query + gallery" if progress else None)
    qf, gf = feats[:len(rows)], feats[len(rows):]
    if report.count:  # on_bad_image="skip": unreadable images leave the ranking, as in evaluate
        bad = set(report.paths)
        keep = np.array([s.path not in bad for s in gallery], bool)
        gallery, gf = [s for s, k in zip(gallery, keep) if k], gf[keep]
        good = np.array([query[i].path not in bad for i in rows], bool)
        rows, qf = rows[good], qf[good]
        chosen = chosen[np.isin(chosen, rows)]
        if not len(chosen):
            raise ValueError("every selected query image is unreadable")
    if cfg.eval.rerank:
        dist = metrics.re_ranking(metrics.compute_distance_matrix(qf, gf, cfg.eval.metric),
                                  metrics.compute_distance_matrix(qf, qf, cfg.eval.metric),
                                  metrics.compute_distance_matrix(gf, gf, cfg.eval.metric))
        dist = dist[np.searchsorted(rows, chosen)]
        label = f"{cfg.eval.metric}+rerank"
    else:
        dist = metrics.compute_distance_matrix(qf, gf, cfg.eval.metric)
        dist = dist[np.isin(rows, chosen)]
        label = cfg.eval.metric
    return ranked_lists_from_distances(dist, [query[i] for i in chosen], gallery, chosen, topk,
                                       label)


def cell_origin(position: int, image_width: int, header: bool = True) -> tuple[int, int]:
    """Top-left pixel of the frame of cell ``position`` (0 = query, k = rank k)."""
    x = MARGIN + position * (image_width + 2 * FRAME + GAP) + (SEPARATOR if position else 0)
    return x, MARGIN + (draw.TEXT_HEIGHT if header else 0)


def render_ranked_list(query_image: np.ndarray, gallery_images, matches, captions=None,
                       query_caption=("query",), title: str | None = None) -> Image.Image:
    """Draws one ranked list: the query (black frame), then the gallery images in rank order.

    Args:
        query_image: uint8 ``[h, w, 3]``.
        gallery_images: uint8 ``[k, h, w, 3]`` (same size as the query), rank order.
        matches: ``k`` bools; True frames the image green (correct), False red (incorrect),
            None grey (identity unknown).
        captions: ``k`` tuples of caption lines under each gallery image (at most 2 shown).
        query_caption: caption lines under the query.
        title: a header line above the images (None: no header row).

    Returns:
        RGB `PIL.Image.Image`; cell positions are given by `cell_origin`.
    """
    gallery_images = list(gallery_images)
    matches = [None if m is None else bool(m) for m in matches]
    if len(matches) != len(gallery_images):
        raise ValueError(f"matches has {len(matches)} entries for {len(gallery_images)} gallery "
                         "images")
    h, w = query_image.shape[:2]
    for g in gallery_images:
        if g.shape != query_image.shape:
            raise ValueError(f"gallery image shape {g.shape} differs from the query image shape "
                             f"{query_image.shape}")
    captions = list(captions) if captions is not None else [()] * len(gallery_images)
    header = title is not None
    right, top = cell_origin(len(gallery_images), w, header)
    width = max(right + w + 2 * FRAME + MARGIN, draw.text_width(title or "") + 2 * MARGIN)
    height = top + h + 2 * FRAME + 2 + CAPTION_LINES * draw.TEXT_HEIGHT + MARGIN
    canvas = Image.new("RGB", (width, height), draw.BACKGROUND)
    pen = ImageDraw.Draw(canvas)
    if header:
        draw.text(pen, (MARGIN, MARGIN - 2), title)
    cells = [(query_image, QUERY, query_caption)]
    colours = [UNKNOWN if ok is None else CORRECT if ok else WRONG for ok in matches]
    cells += list(zip(gallery_images, colours, captions))
    for position, (image, colour, lines) in enumerate(cells):
        x, y = cell_origin(position, w, header)
        canvas.paste(draw.framed(image, colour, FRAME), (x, y))
        for j, line in enumerate(tuple(lines)[:CAPTION_LINES]):
            draw.text(pen, (x, y + h + 2 * FRAME + 2 + j * draw.TEXT_HEIGHT), str(line))
    return canvas


def render_ranked_lists(lists: RankedLists, cell_size=(128, 64)) -> list[Image.Image]:
    """One `render_ranked_list` picture per query of ``lists`` (images read from their paths)."""
    pictures = []
    for i, q in enumerate(lists.query):
        shown = lists.indices[i][lists.indices[i] >= 0]
        images = draw.to_uint8(draw.load_images([q.path] + [lists.gallery[j].path for j in shown],
                                                cell_size))
        captions = [(f"{lists.distances[i, r]:.3f}",
                     f"id {lists.gallery[j].pid} c{lists.gallery[j].camid + 1}")
                    for r, j in enumerate(shown)]
        title = (f"query {lists.query_index[i]}: {pathlib.Path(q.path).name}  "
                 f"AP {100 * lists.ap[i]:.1f}%  first match at rank {lists.first_match[i]}  "
                 f"({lists.metric})")
        pictures.append(render_ranked_list(images[0], images[1:], lists.matches[i][:len(shown)],
                                           captions, ("query", f"id {q.pid} c{q.camid + 1}"), title))
    return pictures


def write_ranked_lists(lists: RankedLists, output_dir, cell_size=(128, 64)) -> list[pathlib.Path]:
    """Renders every list of ``lists`` to ``output_dir/q<index>_<name>.png``, all of them stacked
    in ``ranks_grid.png``, and the lists as data in ``ranks.json``; returns the paths written."""
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written, records = [], []
    pictures = render_ranked_lists(lists, cell_size)
    for i, (q, picture) in enumerate(zip(lists.query, pictures)):
        shown = lists.indices[i][lists.indices[i] >= 0]
        path = output_dir / f"q{lists.query_index[i]:05d}_{draw.safe_name(q.path)}.png"
        picture.save(path)
        written.append(path)
        records.append({
            "query_index": int(lists.query_index[i]), "path": str(q.path), "pid": int(q.pid),
            "camid": int(q.camid), "ap": None if np.isnan(lists.ap[i]) else float(lists.ap[i]),
            "first_match": int(lists.first_match[i]), "png": path.name,
            "ranked": [{"path": str(lists.gallery[j].path), "pid": int(lists.gallery[j].pid),
                        "camid": int(lists.gallery[j].camid),
                        "distance": float(lists.distances[i, r]),
                        "match": bool(lists.matches[i, r])} for r, j in enumerate(shown)]})
    grid = output_dir / "ranks_grid.png"
    draw.stack_rows(pictures).save(grid)
    listing = output_dir / "ranks.json"
    listing.write_text(json.dumps({"metric": lists.metric, "queries": records}, indent=1))
    return written + [grid, listing]


def _same_folder(a, b) -> bool:
    try:
        return bool(b) and os.path.samefile(a, b)
    except OSError:  # either is missing: the dataset loader reports a missing root clearly
        return False


def _ids(samples):
    return (np.array([s.pid for s in samples], np.int64),
            np.array([s.camid for s in samples], np.int64))
