"""Ranked lists: the ranking equals the evaluation's, frames are green/red where they must be."""

import json

import numpy as np
import pytest
from PIL import Image

from tfreid.metrics import evaluate_rank
from tfreid.visualize import ranks
from tfreid.visualize.ranks import CORRECT, QUERY, WRONG, rank_gallery, render_ranked_list


# ----------------------------------------------------------------------------- ranking
def test_rank_gallery_hand_example():
    # Gallery: pid/cam = (1,0) (2,1) (1,1) (1,0) (3,0); query pid 1 cam 0.
    # Distances 0.2 0.2 0.1 0.0 0.2 -> stable order 3, 2, 0, 1, 4; items 3 and 0 are the query's
    # own pid+camera and are dropped, leaving 2, 1, 4 (ties 1 < 4 by gallery index).
    idx, ok = rank_gallery([[0.2, 0.2, 0.1, 0.0, 0.2]], [1], [1, 2, 1, 1, 3], [0], [0, 1, 1, 0, 0],
                           topk=4)
    assert idx.tolist() == [[2, 1, 4, -1]]
    assert ok.tolist() == [[True, False, False, False]]


def test_rank_gallery_agrees_with_evaluate_rank():
    """AP and first-match rank recomputed from the full ranked lists equal evaluate_rank's, per
    query, on data with many ties and same-camera matches."""
    rng = np.random.default_rng(0)
    nq, ng = 25, 40
    q_pids, g_pids = rng.integers(1, 6, nq), rng.integers(0, 6, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    dist = np.round(rng.random((nq, ng)), 1)  # coarse values: plenty of ties
    idx, ok = rank_gallery(dist, q_pids, g_pids, q_cams, g_cams, topk=ng)
    checked = 0
    for i in range(nq):
        if not ok[i].any():
            continue
        hits = np.flatnonzero(ok[i]) + 1  # 1-based ranks of the true matches
        ap = np.mean(np.arange(1, len(hits) + 1) / hits)
        ref = evaluate_rank(dist[i:i + 1], q_pids[i:i + 1], g_pids, q_cams[i:i + 1], g_cams,
                            max_rank=ng)
        assert ap == pytest.approx(ref.mAP, abs=1e-12)
        assert int(np.argmax(ref.cmc >= 1)) + 1 == hits[0]
        checked += 1
    assert checked >= 15
    # A list never holds the query's own pid seen by its own camera.
    for i in range(nq):
        kept = idx[i][idx[i] >= 0]
        assert not np.any((g_pids[kept] == q_pids[i]) & (g_cams[kept] == q_cams[i]))


def test_rank_gallery_rejects_bad_input():
    with pytest.raises(ValueError, match="topk"):
        rank_gallery([[0.1]], [1], [1], [0], [1], topk=0)
    with pytest.raises(ValueError, match="NaN"):
        rank_gallery([[np.nan]], [1], [1], [0], [1])
    with pytest.raises(ValueError, match="shape"):
        rank_gallery([[0.1, 0.2]], [1], [1], [0], [1])


def test_select_queries_skips_invalid_and_spreads():
    # Queries 0, 3 and 5 find their pid only under their own camera (invalid); 1, 2, 4 are valid.
    q_pids, q_cams = [1, 2, 2, 3, 4, 4], [0, 0, 1, 0, 1, 0]
    g_pids, g_cams = [1, 2, 2, 3, 4], [0, 1, 0, 0, 0]
    assert ranks.select_queries(q_pids, g_pids, q_cams, g_cams, 10).tolist() == [1, 2, 4]
    assert ranks.select_queries(q_pids, g_pids, q_cams, g_cams, 2).tolist() == [1, 4]
    with pytest.raises(ValueError, match="num_queries"):
        ranks.select_queries(q_pids, g_pids, q_cams, g_cams, 0)


# ----------------------------------------------------------------------------- rendering
def test_render_frames_and_layout():
    h, w = 16, 8
    q = np.full((h, w, 3), 50, np.uint8)
    gallery = np.stack([np.full((h, w, 3), 100 + 10 * i, np.uint8) for i in range(3)])
    pic = np.asarray(render_ranked_list(q, gallery, [True, False, True],
                                        [("0.100", "id 1"), ("0.200", "id 2"), ("0.300", "id 1")],
                                        title="query"))
    # Hand layout: margin 6, title 13 -> frames start at y = 19; a cell is 8 + 2*4 = 16 wide,
    # cells 6 apart, 18 more after the query: x = 6, 46, 68, 90.
    assert pic.shape == (19 + 16 + 8 + 2 + 2 * 13 + 6, 90 + 16 + 6, 3)
    for x, colour, fill in ((6, QUERY, 50), (46, CORRECT, 100), (68, WRONG, 110), (90, CORRECT, 120)):
        frame = np.concatenate([pic[19:23, x:x + 16].reshape(-1, 3),       # top band
                                pic[19 + 20:19 + 24, x:x + 16].reshape(-1, 3),  # bottom band
                                pic[19:43, x:x + 4].reshape(-1, 3)])       # left band
        assert (frame == colour).all(), (x, colour)
        assert (pic[23:39, x + 4:x + 12] == fill).all()  # the image inside the frame
        assert (pic[19:43, x - 1] == 255).all()  # white just left of the frame
    assert [ranks.cell_origin(i, w) for i in range(4)] == [(6, 19), (46, 19), (68, 19), (90, 19)]


def test_render_rejects_mismatch():
    img = np.zeros((16, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="matches"):
        render_ranked_list(img, [img, img], [True])
    with pytest.raises(ValueError, match="shape"):
        render_ranked_list(img, [np.zeros((8, 8, 3), np.uint8)], [True])


# ----------------------------------------------------------------------------- on a run
def _reference_lists(model, data_root, topk):
    """Independent ranking: the in-memory model's embeddings (eager), NumPy Euclidean distances,
    stable argsort, the query's own pid under its own camera dropped."""
    from tfreid.data import build_dataset
    from tfreid.data.pipeline import build_eval_dataset
    from tfreid.models import embedding_model

    data = build_dataset("market1501", str(data_root))
    embed = embedding_model(model)
    feats = {split: np.concatenate([embed(x, training=False).numpy() for x in
                                    build_eval_dataset(getattr(data, split), (160, 64), 64)])
             for split in ("query", "gallery")}
    ref = {}
    for i, q in enumerate(data.query):
        d = np.linalg.norm(feats["gallery"] - feats["query"][i], axis=1)
        order = [int(j) for j in np.argsort(d, kind="stable")
                 if not (data.gallery[j].pid == q.pid and data.gallery[j].camid == q.camid)]
        ref[i] = (order[:topk], [data.gallery[j].pid == q.pid for j in order[:topk]], d)
    return data, ref


def test_ranks_cli_on_tiny_run(tiny_run, tiny_data, tiny_model, tmp_path):
    """The CLI's lists equal the independent ranking (paths, distances, matches), and every
    frame in the PNGs is green exactly where the gallery image shows the query's identity."""
    from tfreid.visualize.__main__ import main

    out = tmp_path / "ranks"
    topk = 5
    assert main(["ranks", "--run", str(tiny_run), "--output", str(out), "--num-queries", "3",
                 "--topk", str(topk), "--cell-size", "32x16"]) == 0
    data, ref = _reference_lists(tiny_model, tiny_data, topk)
    listing = json.loads((out / "ranks.json").read_text())
    assert listing["metric"] == "euclidean" and len(listing["queries"]) == 3
    assert (out / "ranks_grid.png").is_file()
    colours_seen = set()
    for entry in listing["queries"]:
        order, match, d = ref[entry["query_index"]]
        ranked = entry["ranked"]
        assert [r["path"] for r in ranked] == [data.gallery[j].path for j in order]
        assert [r["match"] for r in ranked] == match
        np.testing.assert_allclose([r["distance"] for r in ranked], d[order], rtol=1e-4, atol=1e-5)
        if any(match):
            assert entry["first_match"] == match.index(True) + 1
        pic = np.asarray(Image.open(out / entry["png"]).convert("RGB"))
        assert pic.shape[0] == 19 + 32 + 8 + 2 + 26 + 6
        x, y = ranks.cell_origin(0, 16)
        assert (pic[y:y + 4, x:x + 24] == QUERY).all()
        for rank, ok in enumerate(match, 1):
            x, y = ranks.cell_origin(rank, 16)
            expected = CORRECT if ok else WRONG
            assert (pic[y:y + 4, x:x + 24] == expected).all(), (entry["png"], rank, ok)
            assert (pic[y:y + 40, x:x + 4] == expected).all()
            colours_seen.add(expected)
        x, y = ranks.cell_origin(len(match) + 1, 16)  # no frame after the last rank
        after = pic[y:y + 4, x:x + 24]
        assert not any((after == c).all(-1).any() for c in (CORRECT, WRONG))
    assert colours_seen == {CORRECT, WRONG}  # the tiny run ranks both right and wrong images


def test_ranks_cli_reports_bad_run(tmp_path, capsys):
    from tfreid.visualize.__main__ import main

    assert main(["ranks", "--run", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
