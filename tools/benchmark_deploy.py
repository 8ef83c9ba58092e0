"""Benchmark the deployment formats: latency (batch 1), throughput (batch 32) and file size.

Formats: the `.keras` file (Keras float32 in a ``tf.function``), the SavedModel
(``serving_default``), and each TFLite variant (float32, float16, dynamic, int8) run with
``ai_edge_litert.interpreter``. Every format is timed through `tfreid.inference.FeatureExtractor`
on the same random float32 0..255 pixel arrays (no decoding), so the numbers compare the
networks and runtimes, not the image loading. The first calls (tracing, XNNPACK set-up) are
warm-up and excluded; latency is the median of ``--steps`` batch-1 calls, throughput is images
per second over ``--steps / 4`` batch-32 calls (median call). The formats are timed in
interleaved rounds, so load changes on a shared machine affect them alike.

Weights: ``--run RUN_DIR`` exports that run's checkpoint with ``python -m tfreid.export``'s
`export_run` (int8 calibrated on the run's training images); ``--random-init`` builds the
model with random weights instead (speed and size do not depend on the weight values; int8
then calibrates on random pixels, so do not read parity numbers off a random-init model).

Kernels: the ``delegate`` column says whether LiteRT ran the file with XNNPACK (``xnnpack``,
followed by how many of the model's operators XNNPACK took over) or fell back to the builtin
kernels (``builtin``; see `tfreid.export.tflite` for the exact rewrites that let XNNPACK run
HA-CNN's int8 graph).

The machine may be shared: the load average is printed with the results.

Usage:
    python tools/benchmark_deploy.py --run runs/hacnn-synthetic-X --steps 20
    python tools/benchmark_deploy.py --random-init --model hacnn --steps 10 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402

VARIANTS = ("none", "float16", "dynamic", "int8")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="training run directory (exports its latest checkpoint)")
    source.add_argument("--random-init", action="store_true",
                        help="benchmark a randomly initialised model instead of a run")
    parser.add_argument("--model", default="hacnn", help="model name for --random-init")
    parser.add_argument("--image-size", type=int, nargs=2, default=(160, 64), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--batch", type=int, default=32, help="throughput batch size")
    parser.add_argument("--threads", type=int, default=None, help="LiteRT threads (default all)")
    parser.add_argument("--calibration-images", type=int, default=128)
    parser.add_argument("--output", default=None, help="where to write the exports (default tmp)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        parser.error(f"--steps and --batch must be positive, got {args.steps}, {args.batch}")
    return args


def _size(path: pathlib.Path) -> int:
    """Bytes of a file, or of every file under a folder (SavedModel)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def export_random_init(model_name: str, image_size, root: pathlib.Path, calibration_images: int,
                       seed: int = 0) -> dict[str, pathlib.Path]:
    """Export a randomly initialised `model_name` in every format; `{label: path}`."""
    import keras

    from tfreid.export import keras_file, savedmodel, tflite
    from tfreid.models import build_model, embedding_model

    keras.utils.set_random_seed(seed)
    embed = embedding_model(build_model(model_name, 10, input_shape=(*image_size, 3)))
    rng = np.random.default_rng(seed)
    calibration = rng.uniform(0, 255, (calibration_images, *image_size, 3)).astype(np.float32)
    meta = {"model": model_name, "weights": "random-init"}
    written = {"savedmodel": savedmodel.export_savedmodel(embed, root, model_name, image_size,
                                                          version=1, metadata=meta),
               "keras": keras_file.export_keras(embed, root / f"{model_name}.keras", image_size,
                                                metadata=meta)}
    frozen = tflite.frozen_function(embed, image_size)
    for q in VARIANTS:
        label = "float32" if q == "none" else q
        written[f"tflite-{label}"] = tflite.export_tflite(
            embed, root / f"{model_name}-{label}.tflite", image_size, q,
            calibration if q == "int8" else None,
            metadata={**meta, "calibration_images": calibration_images if q == "int8" else None},
            frozen=frozen)
    return written


def time_rounds(fns: dict, x: np.ndarray, steps: int) -> dict[str, list[float]]:
    """Wall seconds of `steps` calls of each `fn(x)`, after two warm-up calls each.

    The calls are interleaved (one of each format per round), so a change in the load of a
    shared machine hits every format alike and the speed ratios stay meaningful.
    """
    for fn in fns.values():
        fn(x), fn(x)
    times = {label: [] for label in fns}
    for _ in range(steps):
        for label, fn in fns.items():
            start = time.perf_counter()
            fn(x)
            times[label].append(time.perf_counter() - start)
    return times


def benchmark(paths: dict, image_size, steps: int, batch: int, threads=None) -> list[dict]:
    """One row per export: size, batch-1 median latency, batch-`batch` throughput."""
    from tfreid.inference import FeatureExtractor

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, *image_size, 3)).astype(np.float32)
    extractors = {label: FeatureExtractor(pathlib.Path(path), batch_size=batch, num_threads=threads)
                  for label, path in paths.items()}
    runs = {label: e._run for label, e in extractors.items()}
    latency = time_rounds(runs, images[:1], steps)
    through = time_rounds(runs, images, max(2, steps // 4))
    rows = []
    for label, extractor in extractors.items():
        delegate = extractor.kernels  # LiteRT falls back to builtin kernels if XNNPACK refuses
        if extractor.delegation:
            delegate += f" {extractor.delegation['delegated']}/{extractor.delegation['nodes']}"
        rows.append({"format": label, "size_mb": _size(pathlib.Path(paths[label])) / 1e6,
                     "delegate": delegate,
                     "latency_ms_b1": 1e3 * statistics.median(latency[label]),
                     "latency_ms_b1_min": 1e3 * min(latency[label]),
                     "images_per_s": batch / statistics.median(through[label])})
        print(f"{label:>16}  {rows[-1]['size_mb']:8.2f} MB  {delegate:>16}  "
              f"{rows[-1]['latency_ms_b1']:8.1f} ms ({rows[-1]['latency_ms_b1_min']:6.1f})  "
              f"{rows[-1]['images_per_s']:8.1f} img/s", flush=True)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    image_size = tuple(args.image_size)
    out = pathlib.Path(args.output or tempfile.mkdtemp(prefix="tfreid-bench-"))
    print(f"exports in {out}", flush=True)
    if args.random_init:
        paths = export_random_init(args.model, image_size, out, args.calibration_images)
        source = f"random-init {args.model}"
    else:
        from tfreid.export.run_export import export_run

        paths = export_run(args.run, ["savedmodel", "tflite", "keras"], list(VARIANTS),
                           output=out, calibration_images=args.calibration_images)
        source = f"run {args.run}"
    order = ["keras", "savedmodel"] + [f"tflite-{'float32' if q == 'none' else q}" for q in VARIANTS]
    paths = {k: paths[k] for k in order}
    print(f"{'format':>16}  {'size':>11}  {'delegate':>16}  {'latency b1 (min)':>20}  "
          f"{'throughput b' + str(args.batch):>14}", flush=True)
    rows = benchmark(paths, image_size, args.steps, args.batch, args.threads)
    keras_latency = rows[0]["latency_ms_b1"]
    for row in rows:
        row["speedup_b1_vs_keras"] = keras_latency / row["latency_ms_b1"]
    load = os.getloadavg()
    print("speed-up at batch 1 vs Keras: " + ", ".join(
        f"{r['format']} {r['speedup_b1_vs_keras']:.2f}x" for r in rows))
    print(f"source: {source}; cores {os.cpu_count()}; load average {load[0]:.2f} {load[1]:.2f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"source": source, "steps": args.steps, "batch": args.batch, "loadavg": load,
             "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
