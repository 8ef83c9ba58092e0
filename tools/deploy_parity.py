"""Parity of every deployment format with Keras on a run's test split: cosine, mAP, rank-1.

Exports the run's checkpoint in every format (`python -m tfreid.export --format all`: SavedModel,
`.keras`, TFLite float32/float16/dynamic/int8 — int8 calibrated on the run's training images),
embeds the run dataset's query and gallery images (never seen in training or calibration) with
`tfreid.inference.FeatureExtractor` for each export, and compares with the Keras checkpoint
(`tfreid.inference.extract_features`, the pipeline `python -m tfreid.evaluate` uses, no
flip): per-image cosine similarity of the embeddings (min / mean over all query+gallery images)
and retrieval mAP / rank-1 with the run's distance (`eval.metric`) and protocol.

Bounds (the deployment issue's): float32, SavedModel and `.keras` cosine >= 0.9999 on every image;
float16 / dynamic >= 0.999 on every image and mAP within 1 point of Keras; int8 mean cosine
>= 0.98 and mAP within 2 points. Exit status 1 when a bound fails.

Usage:
    python tools/deploy_parity.py --run runs/hacnn-trained [--json parity.json] [--markdown t.md]
    python tools/deploy_parity.py --run runs/ccan-default --formats tflite-dynamic  # one variant
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402

# format -> (minimum per-image cosine, minimum mean cosine, maximum |mAP difference| in points)
BOUNDS = {
    "savedmodel": (0.9999, 0.9999, 1.0),
    "keras": (0.9999, 0.9999, 1.0),
    "tflite-float32": (0.9999, 0.9999, 1.0),
    "tflite-float16": (0.999, 0.999, 1.0),
    "tflite-dynamic": (0.999, 0.999, 1.0),
    "tflite-int8": (None, 0.98, 2.0),
}
QUANTIZE = {"tflite-float32": "none", "tflite-float16": "float16", "tflite-dynamic": "dynamic",
            "tflite-int8": "int8"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="training run directory")
    parser.add_argument("--checkpoint", default=None, help="checkpoint prefix (default latest)")
    parser.add_argument("--output", default=None, help="export root (default: a temporary folder)")
    parser.add_argument("--calibration-images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--formats", nargs="+", choices=list(BOUNDS), default=list(BOUNDS),
                        help="formats to export and compare (default all)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--markdown", default=None, help="also write the table here")
    return parser.parse_args(argv)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows."""
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def retrieval(qf, gf, query, gallery, metric: str, protocol: str) -> dict:
    from tfreid import metrics

    ids = [np.array([getattr(s, k) for s in split]) for split in (query, gallery)
           for k in ("pid", "camid")]
    result = metrics.evaluate_features(qf, gf, ids[0], ids[2], ids[1], ids[3], metric=metric,
                                       protocol=protocol)
    return {"mAP": float(result.mAP), "rank1": float(np.asarray(result.cmc)[0])}


def check(fmt: str, row: dict) -> list[str]:
    """The bounds `row` breaks (empty when it passes)."""
    per_image, mean, points = BOUNDS[fmt]
    failures = []
    if per_image is not None and row["cos_min"] < per_image:
        failures.append(f"min cosine {row['cos_min']:.6f} < {per_image}")
    if row["cos_mean"] < mean:
        failures.append(f"mean cosine {row['cos_mean']:.6f} < {mean}")
    if abs(row["mAP_delta_points"]) > points:
        failures.append(f"mAP differs by {row['mAP_delta_points']:+.2f} points (> {points})")
    return failures


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "",
             "| format | kernels (XNNPACK nodes) | cosine min | cosine mean | mAP % | Δ mAP | "
             "rank-1 % | Δ rank-1 | bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        kernels = r["kernels"] + (f" ({r['delegation']['delegated']}/{r['delegation']['nodes']})"
                                  if r.get("delegation") else "")
        lines.append(
            f"| {r['format']} | {kernels} | {r['cos_min']:.6f} | {r['cos_mean']:.6f} | "
            f"{100 * r['mAP']:.2f} | {r['mAP_delta_points']:+.2f} | {100 * r['rank1']:.2f} | "
            f"{r['rank1_delta_points']:+.2f} | {'pass' if not r['failures'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    from tfreid.data import build_dataset
    from tfreid.export.run_export import export_run
    from tfreid.inference import FeatureExtractor, extract_features
    from tfreid.models import embedding_model
    from tfreid.runs import load_run

    cfg, model, checkpoint = load_run(args.run, args.checkpoint)
    data = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.kwargs)
    size = (cfg.data.height, cfg.data.width)
    query, gallery = data.query, data.gallery
    print(f"{cfg.model.name} {checkpoint}: {len(query)} query + {len(gallery)} gallery images",
          flush=True)
    embed = embedding_model(model)
    reference = {split: extract_features(embed, samples, size, args.batch_size)
                 for split, samples in (("query", query), ("gallery", gallery))}
    keras_rank = retrieval(reference["query"], reference["gallery"], query, gallery,
                           cfg.eval.metric, cfg.eval.protocol)
    print(f"Keras checkpoint: mAP {100 * keras_rank['mAP']:.2f}  rank-1 "
          f"{100 * keras_rank['rank1']:.2f}", flush=True)

    out = pathlib.Path(args.output or tempfile.mkdtemp(prefix="tfreid-parity-"))
    start = time.perf_counter()
    kinds = sorted({fmt.split("-")[0] for fmt in args.formats})
    variants = [QUANTIZE[fmt] for fmt in args.formats if fmt in QUANTIZE] or ["none"]
    paths = export_run(args.run, kinds, variants, output=out,
                       checkpoint=args.checkpoint, calibration_images=args.calibration_images)
    print(f"exported to {out} in {time.perf_counter() - start:.0f} s", flush=True)
    rows = []
    for fmt in args.formats:
        extractor = FeatureExtractor(paths[fmt], batch_size=args.batch_size)
        feats = {split: extractor([s.path for s in samples])
                 for split, samples in (("query", query), ("gallery", gallery))}
        cos = np.concatenate([row_cosine(feats[s], reference[s]) for s in ("query", "gallery")])
        rank = retrieval(feats["query"], feats["gallery"], query, gallery, cfg.eval.metric,
                         cfg.eval.protocol)
        row = {"format": fmt, "path": str(paths[fmt]), "kernels": extractor.kernels,
               "delegation": extractor.delegation, "cos_min": float(cos.min()),
               "cos_mean": float(cos.mean()), **rank,
               "mAP_delta_points": 100 * (rank["mAP"] - keras_rank["mAP"]),
               "rank1_delta_points": 100 * (rank["rank1"] - keras_rank["rank1"])}
        row["failures"] = check(fmt, row)
        rows.append(row)
        print(f"{fmt:>15}  cos min {row['cos_min']:.6f} mean {row['cos_mean']:.6f}  "
              f"mAP {100 * row['mAP']:.2f} ({row['mAP_delta_points']:+.2f})  rank-1 "
              f"{100 * row['rank1']:.2f} ({row['rank1_delta_points']:+.2f})  "
              f"{'; '.join(row['failures']) or 'pass'}", flush=True)
    header = (f"Parity with Keras: run `{args.run}` ({cfg.model.name}, {checkpoint}); "
              f"{len(query)} query + {len(gallery)} gallery images; Keras mAP "
              f"{100 * keras_rank['mAP']:.2f} %, rank-1 {100 * keras_rank['rank1']:.2f} % "
              f"({cfg.eval.metric} distance)")
    if args.markdown:
        pathlib.Path(args.markdown).write_text(markdown(rows, header))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"run": args.run, "checkpoint": checkpoint, "keras": keras_rank, "rows": rows},
            indent=2))
    return 1 if any(r["failures"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
