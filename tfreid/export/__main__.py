"""`python -m tfreid.export`: re-export any checkpoint of a training run for deployment.

    python -m tfreid.export --run RUN_DIR [--checkpoint PATH] --format savedmodel|tflite|keras|all
        [--quantize none|float16|dynamic|int8|all ...] [--output saved_models] [--version N]
        [--calibration-images 128]

Layout under `--output` (one version number shared by every format written in one call; the
next number free in all three folders by default; an existing version is never overwritten):

    <output>/<model>/<version>/                 SavedModel, TF Serving layout (base path
                                                <output>/<model>)
    <output>/<model>-tflite/<version>/<model>-<quantize>.tflite  (+ .json sidecar)
    <output>/<model>-keras/<version>/<model>.keras               (+ .json sidecar)

TFLite/`.keras` live in sibling folders so TF Serving, which loads every numeric folder under
its base path, only ever sees SavedModels. `--quantize` applies to TFLite (repeatable, or
`all`); default `none` for `--format tflite` and all four variants for `--format all`. int8
calibrates on `--calibration-images` training images of the run's dataset (config.yaml).

Exit status 0 on success, 2 on bad input (message on stderr; `TFREID_DEBUG=1` re-raises).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

FORMATS = ("savedmodel", "tflite", "keras", "all")


def parse_args(argv=None) -> argparse.Namespace:
    from tfreid.export.tflite import QUANTIZATIONS

    parser = argparse.ArgumentParser(prog="python -m tfreid.export", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="training run directory")
    parser.add_argument("--checkpoint", help="checkpoint prefix (default: the run's latest)")
    parser.add_argument("--format", required=True, help="|".join(FORMATS))
    parser.add_argument("--quantize", nargs="+", default=None,
                        help=f"TFLite variants: {'|'.join(QUANTIZATIONS)}|all")
    parser.add_argument("--output", default="saved_models", help="export root (default %(default)s)")
    parser.add_argument("--version", type=int, default=None, help="version number (default: next free)")
    parser.add_argument("--calibration-images", type=int, default=128,
                        help="training images for int8 calibration (default %(default)s)")
    return parser.parse_args(argv)


def _resolve(args) -> tuple[list[str], list[str]]:
    from tfreid.checks import check_int
    from tfreid.export.tflite import QUANTIZATIONS

    if args.format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {args.format!r}")
    formats = ["savedmodel", "tflite", "keras"] if args.format == "all" else [args.format]
    quantize = args.quantize or (["all"] if args.format == "all" else ["none"])
    bad = [q for q in quantize if q not in (*QUANTIZATIONS, "all")]
    if bad:
        raise ValueError(f"--quantize must be among {', '.join(QUANTIZATIONS)}, all; got {bad[0]!r}")
    if args.quantize and "tflite" not in formats:
        raise ValueError(f"--quantize applies to TFLite only; got --format {args.format}")
    quantize = list(QUANTIZATIONS) if "all" in quantize else list(dict.fromkeys(quantize))
    check_int("--version", args.version, allow_none=True)
    if {"int8", "dynamic"} & set(quantize) and "tflite" in formats \
            and not 1 <= args.calibration_images <= 10000:
        raise ValueError(f"--calibration-images must be in 1..10000, got {args.calibration_images}")
    return formats, quantize


def export_run(run_dir, formats, quantize=("none",), output="saved_models", version=None,
               checkpoint=None, calibration_images: int = 128) -> dict[str, str]:
    """Export a run's checkpoint in `formats`; returns `{label: path}` of what was written.

    Args:
        run_dir: training run directory.
        formats: subset of `("savedmodel", "tflite", "keras")`.
        quantize: TFLite variants (subset of `tfreid.export.tflite.QUANTIZATIONS`).
        output: export root.
        version: shared version number; default the next free one across the format folders.
        checkpoint: checkpoint prefix; default the run's latest.
        calibration_images: images of the run's training split used to calibrate int8 and to
            check the dynamic-range model (`tfreid.export.dynamic_precision`).

    Example:
        >>> export_run("runs/hacnn-synthetic-x", ["tflite"], ["int8"], output="/tmp/exports")
    """
    from tfreid.engine.run_dir import load_run
    from tfreid.export import keras_file, savedmodel, tflite
    from tfreid.models import embedding_model

    run_dir = pathlib.Path(run_dir)
    try:
        cfg, model, checkpoint = load_run(run_dir, checkpoint)
    except (IndexError, OSError) as err:  # a truncated/garbled checkpoint file
        if isinstance(err, FileNotFoundError):
            raise
        import tensorflow as tf

        name = checkpoint or tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
        raise ValueError(f"cannot restore checkpoint {name} of {run_dir} (corrupt or truncated "
                         f"file?): {type(err).__name__}: {err}") from None
    embed = embedding_model(model)
    name, size = cfg.model.name, (cfg.data.height, cfg.data.width)
    output = pathlib.Path(output)
    dirs = {"savedmodel": output / name, "tflite": output / f"{name}-tflite",
            "keras": output / f"{name}-keras"}
    if version is None:
        version = max(savedmodel.next_version(dirs[f]) for f in formats)
    for f in formats:  # fail before writing anything
        if (dirs[f] / str(version)).exists():
            raise FileExistsError(f"{dirs[f] / str(version)} already exists; exports never "
                                  "overwrite a version (omit --version for the next free one)")
    metrics_path = run_dir / "metrics.json"
    run_metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metadata = {"model": name, "distance": cfg.eval.metric, "dataset": cfg.data.dataset,
                "run_dir": str(run_dir), "checkpoint": str(checkpoint),
                "metrics": {k: run_metrics[k] for k in ("mAP", "rank1", "rank5", "rank10", "mINP")
                            if k in run_metrics}}
    written = {}
    if "savedmodel" in formats:
        written["savedmodel"] = savedmodel.export_savedmodel(
            embed, output, name, size, version=version, metadata=metadata)
    if "tflite" in formats:
        calibration = None
        if {"int8", "dynamic"} & set(quantize):
            from tfreid.data import build_dataset

            data = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.kwargs)
            calibration = tflite.representative_images(data.train, size, calibration_images,
                                                       seed=cfg.train.seed)
        frozen = tflite.frozen_function(embed, size)  # traced once for every variant
        with savedmodel.version_dir(dirs["tflite"], version) as tmp:
            for q in quantize:
                label = "float32" if q == "none" else q
                float32 = tmp / f"{name}-float32.tflite"  # dynamic compares with it
                tflite.export_tflite(embed, tmp / f"{name}-{label}.tflite", size, q, calibration,
                                     metadata={**metadata, "calibration_images": None
                                               if q not in ("int8", "dynamic")
                                               else int(len(calibration))}, frozen=frozen,
                                     float32=float32.read_bytes() if float32.is_file() else None)
        for q in quantize:
            label = "float32" if q == "none" else q
            written[f"tflite-{label}"] = dirs["tflite"] / str(version) / f"{name}-{label}.tflite"
    if "keras" in formats:
        with savedmodel.version_dir(dirs["keras"], version) as tmp:
            keras_file.export_keras(embed, tmp / f"{name}.keras", size, metadata=metadata)
        written["keras"] = dirs["keras"] / str(version) / f"{name}.keras"
    return {k: str(v) for k, v in written.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        formats, quantize = _resolve(args)
        written = export_run(args.run, formats, quantize, args.output, args.version,
                             args.checkpoint, args.calibration_images)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        if os.environ.get("TFREID_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    for label, path in written.items():
        print(f"{label:>16}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
