"""tools/hard_attention_iou.py: 1-D IoU of the union of hard-attention regions with the true box."""

import csv
import importlib.util
import json
import pathlib

import numpy as np
import pytest

_TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "hard_attention_iou.py"
_spec = importlib.util.spec_from_file_location("hard_attention_iou", _TOOL)
iou_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(iou_tool)

EDGE = np.tanh(0.75) + 0.25  # the initial stripes' union is [-EDGE, EDGE]


def test_union_scores_hand_computed():
    # overlapping regions: union [-1, 0.25]; box [0, 0.5]; intersection 0.25
    assert iou_tool.union_scores([[-1.0, 0.0], [-0.5, 0.25]], (0.0, 0.5)) == pytest.approx(
        (0.25 / 1.5, 0.5, 0.2))
    # disjoint regions: union size 1; intersection 0.25 + 0.25 with a box of 1.5
    assert iou_tool.union_scores([[-1.0, -0.5], [0.5, 1.0]], (-0.75, 0.75)) == pytest.approx(
        (0.25, 1 / 3, 0.5))
    assert iou_tool.union_scores([[0.2, 0.4]], (0.2, 0.4)) == pytest.approx((1.0, 1.0, 1.0))
    assert iou_tool.union_scores([[0.5, 0.6]], (0.0, 0.1)) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="box"):
        iou_tool.union_scores([[0.0, 1.0]], (0.5, 0.5))


def test_regions_and_stripes():
    np.testing.assert_allclose(iou_tool.region_intervals([0.9, -0.9, 0.0], 0.25),
                               [[0.65, 1.0], [-1.0, -0.65], [-0.25, 0.25]])
    np.testing.assert_allclose(iou_tool.stripe_ty(4), np.tanh([-0.75, -0.25, 0.25, 0.75]), atol=1e-7)


def _true_spans(root):
    """Normalised vertical extents of the test-split person boxes, read straight from the CSV."""
    spans = []
    with open(root / "boxes.csv") as f:
        for row in csv.DictReader(f):
            if row["filename"].split("/")[0] in ("query", "bounding_box_test"):
                y0, y1 = int(row["y0"]), int(row["y1"])
                if y1 > y0 and int(row["x1"]) > int(row["x0"]):
                    spans.append((2 * y0 / 128 - 1, 2 * y1 / 128 - 1))
    return np.array(spans)


def _iou(lo, hi, spans):
    inter = np.clip(np.minimum(hi, spans[:, 1]) - np.maximum(lo, spans[:, 0]), 0, None)
    return inter / ((hi - lo) + (spans[:, 1] - spans[:, 0]) - inter)


def test_fresh_network_scores_as_the_stripes(tiny_run, tiny_data, tmp_path, capsys):
    out = tmp_path / "iou.json"
    assert iou_tool.main(["--run", str(tiny_run), "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    spans = _true_spans(tiny_data)
    assert r["num_images"] == len(spans) and r["level"] == 3
    expected = _iou(-EDGE, EDGE, spans).mean()
    assert r["iou"]["stripes"] == pytest.approx(expected, abs=1e-6)
    assert r["iou"]["trained"] == pytest.approx(expected, abs=1e-6)  # untrained: the stripes
    assert r["iou"]["full"] == pytest.approx(((spans[:, 1] - spans[:, 0]) / 2).mean(), abs=1e-9)
    assert "stripes" in capsys.readouterr().out


def test_learned_regions_are_read_from_the_model(tiny_model, make_run, tiny_data):
    """Moving level 3's regions (Dense bias, kernel zero) changes the trained score exactly as
    hand-computed; levels 1-2 keep the stripes."""
    bias = tiny_model.get_layer("ha3").hard.fc.bias
    saved = bias.numpy()
    ty = np.array([-0.2, 0.0, 0.1, 0.3])  # union [-0.45, 0.55]
    try:
        bias.assign(np.stack([np.zeros(4), np.arctanh(ty)], 1).reshape(-1).astype(np.float32))
        run = make_run(tiny_model)
    finally:
        bias.assign(saved)
    r = iou_tool.measure(run, level=3)
    spans = _true_spans(tiny_data)
    assert r["iou"]["trained"] == pytest.approx(_iou(-0.45, 0.55, spans).mean(), abs=1e-5)
    assert r["iou"]["stripes"] == pytest.approx(_iou(-EDGE, EDGE, spans).mean(), abs=1e-6)
    np.testing.assert_allclose(r["ty_mean"], ty, atol=1e-4)
    assert r["per_level"][2]["trained"] == pytest.approx(r["per_level"][2]["stripes"], abs=1e-6)


def test_bad_level_is_a_clear_error(tiny_run, capsys):
    assert iou_tool.main(["--run", str(tiny_run), "--level", "7"]) == 2
    assert "level must be one of [1, 2, 3]" in capsys.readouterr().err
