"""Hard-attention localisation score: do HA-CNN's learned regions cover the person?

The synthetic set records the true person box of every crop (``boxes.csv``). For each image this
tool takes the ``T`` hard-attention regions of one level (default 3, the last), forms the union of
their vertical extents and measures its 1-D IoU with the true box's vertical extent, for

- ``trained``: the run's model (its predicted ``attention/theta_<level>``),
- ``stripes``: the fixed initial layout (``ty = tanh(-0.75, -0.25, 0.25, 0.75)`` for T = 4, what
  HardRegionAttention starts from, the same for every image),
- ``full``: the whole image height (a reference: IoU = the box's height fraction).

Coordinates are normalised image heights in ``[-1, 1]`` (``align_corners=False``: -1 and 1 are the
outer edges of the border rows, as in `tfreid.layers.RegionSampler`). Region ``t`` spans
``[ty_t - s_h, ty_t + s_h]`` clipped to the image (the sampler reads zeros outside it); the box
rows ``[y0, y1)`` of a crop of height ``H`` span ``[2 y0 / H - 1, 2 y1 / H - 1]``. The model input
is the crop resized to the run's input size, which keeps these normalised coordinates (level 3
samples a 20x8 map whose edges are taken as the image edges; TF "same" padding moves its
receptive-field centres 3.5 image rows down, 0.044 in these units, for both layouts alike; not
corrected). Besides the IoU the tool reports ``recall`` (box fraction covered) and
``precision`` (union fraction on the box), which tell a shrinking from a spreading layout, the
mean learned ``ty`` per region, and the correlation across images between the regions' mean
``ty`` and the box centre (does the layout follow the person, whatever its extent?).

Usage:
    python tools/hard_attention_iou.py --run runs/hacnn-trained [--level 3] [--split test]
        [--data-root OTHER_SYNTHETIC_SET] [--output iou.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

SPLITS = ("test", "train", "all")


def union_intervals(intervals) -> np.ndarray:
    """Sorted, disjoint ``[lo, hi]`` intervals covering the union of ``intervals`` ([n, 2])."""
    iv = np.asarray(intervals, np.float64).reshape(-1, 2)
    iv = iv[iv[:, 1] > iv[:, 0]]
    iv = iv[np.argsort(iv[:, 0], kind="stable")]
    merged = []
    for lo, hi in iv:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return np.array(merged, np.float64).reshape(-1, 2)


def union_scores(intervals, box) -> tuple[float, float, float]:
    """``(iou, recall, precision)`` of the union of ``intervals`` against the interval ``box``.

    Example:
        >>> union_scores([[-1.0, 0.0], [-0.5, 0.25]], (0.0, 0.5))  # union [-1, 0.25]
        (0.16666666666666666, 0.5, 0.2)
    """
    union = union_intervals(intervals)
    lo, hi = float(box[0]), float(box[1])
    if hi <= lo:
        raise ValueError(f"box must have hi > lo, got {box!r}")
    inter = float(np.clip(np.minimum(union[:, 1], hi) - np.maximum(union[:, 0], lo), 0, None).sum())
    size = float((union[:, 1] - union[:, 0]).sum())
    return inter / (size + (hi - lo) - inter), inter / (hi - lo), inter / size if size else 0.0


def region_intervals(ty, s_h: float) -> np.ndarray:
    """Vertical extents ``[T, 2]`` of regions at ``ty`` ([T]), clipped to the image [-1, 1]."""
    ty = np.asarray(ty, np.float64)
    return np.clip(np.stack([ty - s_h, ty + s_h], axis=-1), -1.0, 1.0)


def stripe_ty(num_regions: int) -> np.ndarray:
    """``ty`` of the initial stripes: tanh of HardRegionAttention's initial bias."""
    from tfreid.layers.hard_attention import stripe_bias

    return np.tanh(stripe_bias(num_regions).astype(np.float64))[1::2]


def read_boxes(root) -> tuple[dict, int]:
    """``({relative path: (x0, y0, x1, y1)}, crop height)`` of a synthetic set."""
    root = pathlib.Path(root)
    path = root / "boxes.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the localisation score needs a synthetic set "
                                "(python -m tfreid.data.synthetic writes boxes.csv)")
    boxes = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                boxes[row["filename"]] = tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1"))
            except (KeyError, ValueError, TypeError):
                raise ValueError(f"{path}: bad row {row!r}; expected filename,x0,y0,x1,y1") from None
    params = root / "synthetic.json"
    height = json.loads(params.read_text())["image_size"][0] if params.is_file() else None
    if height is None:
        from PIL import Image

        with Image.open(root / next(iter(boxes))) as im:
            height = im.height
    return boxes, int(height)


def measure(run_dir, level: int = 3, split: str = "test", checkpoint: str | None = None,
            batch_size: int = 64, max_images: int | None = None,
            data_root: str | None = None) -> dict:
    """Localisation scores of a run's hard attention (see the module docstring).

    Args:
        run_dir: an HA-CNN run directory; its dataset must be a synthetic set (boxes.csv)
            unless ``data_root`` names another one (any Market-format folder with boxes.csv,
            e.g. a synthetic set generated with stronger misalignment).
        level: hard-attention level scored. split: ``test`` (query + gallery), ``train``, ``all``.
        checkpoint: checkpoint prefix (default: the latest). batch_size: images per forward
            pass. max_images: score an evenly spaced subset.

    Returns:
        A JSON-able dict: ``iou`` / ``recall`` / ``precision`` for ``trained``, ``stripes`` and
        ``full`` at ``level``; ``per_level`` IoUs; ``ty_mean``/``ty_std`` of the learned
        regions; ``trained_beats_stripes`` (fraction of images); counts.
    """
    import keras

    from tfreid.data import build_dataset
    from tfreid.data.pipeline import build_eval_dataset
    from tfreid.runs import load_run
    from tfreid.visualize.attention import THETA_PREFIX, attention_keys, region_scales

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    cfg, model, checkpoint = load_run(run_dir, checkpoint)
    keys = [k for k in attention_keys(model) if k.startswith(THETA_PREFIX)]
    if not keys:
        raise ValueError(f"{cfg.model.name} has no hard attention (no {THETA_PREFIX}* output)")
    levels = sorted(int(k[len(THETA_PREFIX):]) for k in keys)
    if level not in levels:
        raise ValueError(f"level must be one of {levels} for this model, got {level!r}")
    if data_root:
        data = build_dataset("market1501", str(data_root))
    else:
        data = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.kwargs)
    boxes, crop_h = read_boxes(data.root)
    samples = {"test": data.query + data.gallery, "train": data.train,
               "all": data.train + data.query + data.gallery}[split]
    root = pathlib.Path(data.root).resolve()
    chosen, spans, empty = [], [], 0
    for s in samples:
        rel = pathlib.Path(s.path).resolve().relative_to(root).as_posix()
        if rel not in boxes:
            raise ValueError(f"{rel} has no row in {root / 'boxes.csv'}")
        x0, y0, x1, y1 = boxes[rel]
        if y1 <= y0 or x1 <= x0:
            empty += 1  # the person is entirely outside the crop: nothing to localise
            continue
        chosen.append(s)
        spans.append((2.0 * y0 / crop_h - 1.0, 2.0 * y1 / crop_h - 1.0))
    if max_images:
        step = max(1, len(chosen) // max_images)
        chosen, spans = chosen[::step][:max_images], spans[::step][:max_images]
    if not chosen:
        raise ValueError(f"no image with a person box in split {split!r}")
    net = keras.Model(model.input, {k: model.output[k] for k in keys})
    images = build_eval_dataset(chosen, (cfg.data.height, cfg.data.width), batch_size)
    outs = [net(x, training=False) for x in images]
    theta = {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in keys}
    scales = region_scales(model)

    def scores(ty_rows, s_h):
        return np.array([union_scores(region_intervals(ty, s_h), box)
                         for ty, box in zip(ty_rows, spans)])

    per_level, main = {}, None
    for lv in levels:
        key = f"{THETA_PREFIX}{lv}"
        s_h = scales[key][0]
        ty = theta[key][..., 1].astype(np.float64)
        trained = scores(ty, s_h)
        stripes = scores(np.broadcast_to(stripe_ty(ty.shape[1]), ty.shape), s_h)
        per_level[lv] = {"trained": float(trained[:, 0].mean()),
                         "stripes": float(stripes[:, 0].mean())}
        if lv == level:
            main = (trained, stripes, ty, s_h)
    trained, stripes, ty, s_h = main
    full = scores(np.zeros((len(spans), 1)), 1.0)  # one region spanning [-1, 1]
    names = ("iou", "recall", "precision")
    result = {
        "run": str(run_dir), "checkpoint": str(checkpoint), "dataset": str(data.root),
        "split": split, "level": level, "s_h": s_h, "num_images": len(chosen),
        "num_empty_boxes": empty,
        **{n: {"trained": float(trained[:, i].mean()), "stripes": float(stripes[:, i].mean()),
               "full": float(full[:, i].mean())} for i, n in enumerate(names)},
        "trained_beats_stripes": float((trained[:, 0] > stripes[:, 0]).mean()),
        "per_level": per_level,
        "ty_mean": ty.mean(axis=0).round(4).tolist(), "ty_std": ty.std(axis=0).round(4).tolist(),
        "stripes_ty": stripe_ty(ty.shape[1]).round(4).tolist(),
        "box_mean": np.mean(spans, axis=0).round(4).tolist(),
        "centre_corr": _corr(ty.mean(axis=1), np.mean(spans, axis=1)),
    }
    return result


def _corr(a, b) -> float | None:
    """Pearson correlation across images (None when either side does not vary)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or a.std() < 1e-9 or b.std() < 1e-9:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def format_report(r: dict) -> str:
    lines = [f"hard-attention localisation, level {r['level']} (s_h={r['s_h']:g}), "
             f"{r['num_images']} {r['split']} images ({r['num_empty_boxes']} without a person box "
             "skipped)",
             f"{'':<10} {'IoU':>7} {'recall':>7} {'precision':>9}"]
    for m in ("trained", "stripes", "full"):
        lines.append(f"{m:<10} {r['iou'][m]:7.4f} {r['recall'][m]:7.4f} {r['precision'][m]:9.4f}")
    lines.append(f"trained IoU > stripes IoU on {100 * r['trained_beats_stripes']:.1f}% of images")
    lines.append("per level IoU (trained / stripes): " + ", ".join(
        f"{lv}: {v['trained']:.4f} / {v['stripes']:.4f}" for lv, v in r["per_level"].items()))
    lines.append(f"learned ty mean {r['ty_mean']} std {r['ty_std']}; stripes ty {r['stripes_ty']}; "
                 f"mean true box [{r['box_mean'][0]:.3f}, {r['box_mean'][1]:.3f}]")
    corr = r["centre_corr"]
    lines.append("correlation of the regions' mean ty with the box centre across images: "
                 + ("n/a (regions do not move)" if corr is None else f"{corr:.3f}"))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="HA-CNN run directory trained on a synthetic set")
    parser.add_argument("--checkpoint", help="checkpoint prefix (default: the latest)")
    parser.add_argument("--level", type=int, default=3, help="hard-attention level (default 3)")
    parser.add_argument("--split", default="test", choices=SPLITS,
                        help="images scored: test = query + gallery (default), train, all")
    parser.add_argument("--max-images", type=int, help="score an evenly spaced subset")
    parser.add_argument("--data-root", help="score another Market-format set with boxes.csv "
                                            "(default: the run's dataset)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        if args.max_images is not None and args.max_images < 1:
            raise ValueError(f"--max-images must be positive, got {args.max_images}")
        result = measure(args.run, args.level, args.split, args.checkpoint, args.batch_size,
                         args.max_images, args.data_root)
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("TFREID_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(result))
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
