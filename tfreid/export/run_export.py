"""Export a training run's checkpoint for deployment (what `python -m tfreid.export` runs).

Layout under `output` (default: the run's own `export/` folder; a serving root when publishing;
one version number shared by every format written in one call):

    <output>/<model>/<version>/                 SavedModel, TF Serving layout
    <output>/<model>-tflite/<version>/<model>-<quantize>.tflite  (+ .json sidecar)
    <output>/<model>-keras/<version>/<model>.keras               (+ .json sidecar)
    <output>/<model>-onnx/<version>/<model>.onnx                 (+ .json sidecar)

TFLite, `.keras` and `.onnx` files live in sibling folders because TF Serving loads every numeric
folder under its base path. Every version folder is written under a temporary name beside its
target and renamed into place, so a server polling `output` never sees a partial version.
"""

from __future__ import annotations

import pathlib
import time

from tfreid.data import build_dataset
from tfreid.export import keras_file, onnx_export, savedmodel, tflite
from tfreid.models import embedding_model
from tfreid.runs import RunDir

__all__ = ["export_metadata", "export_run"]

METRIC_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


def export_metadata(cfg, run: RunDir, checkpoint, metrics: dict) -> dict:
    """What every export records about its origin (`assets/tfreid.json`, the sidecars).

    Paths are the run's name and the checkpoint relative to the run, never the build machine's
    absolute paths (the files are copied to other machines).
    """
    return {"model": cfg.model.name, "distance": cfg.eval.metric, "dataset": cfg.data.dataset,
            "run": run.path.resolve().name,
            "checkpoint": None if checkpoint is None else run.relative(checkpoint),
            "metrics": {k: metrics[k] for k in METRIC_KEYS if k in metrics}}


def export_run(run_dir, formats, quantize=("none",), output=None, version=None,
               checkpoint=None, calibration_images: int = 128,
               verbose: bool = False) -> dict[str, str]:
    """Export a run's checkpoint in `formats`; returns `{label: path}` of what was written.

    Args:
        run_dir: training run directory.
        formats: subset of `("savedmodel", "tflite", "keras", "onnx")`.
        quantize: TFLite variants (subset of `tfreid.export.tflite.QUANTIZATIONS`).
        output: export root; default the run's `export/` folder.
        version: shared version number; default the next free one across the format folders.
        checkpoint: checkpoint prefix; default the run's latest.
        calibration_images: images of the run's training split used to calibrate int8 and to
            check the dynamic-range model (`tfreid.export.dynamic_precision`).
        verbose: print a line as each stage starts (restore, each format and variant).

    Example:
        >>> export_run("runs/hacnn-synthetic-x", ["tflite"], ["int8"], output="/tmp/exports")
    """
    start = time.perf_counter()

    def stage(text):
        if verbose:
            print(f"[{time.perf_counter() - start:5.0f} s] {text}", flush=True)

    run = RunDir(run_dir)
    stage(f"restoring {checkpoint or 'the latest checkpoint'} of {run_dir}")
    try:
        cfg, model, checkpoint = run.load(checkpoint)
    except (IndexError, OSError) as err:  # a truncated/garbled checkpoint file
        if isinstance(err, FileNotFoundError):
            raise
        name = checkpoint or run.latest_checkpoint()
        raise ValueError(f"cannot restore checkpoint {name} of {run_dir} (corrupt or truncated "
                         f"file?): {type(err).__name__}: {err}") from None
    embed = embedding_model(model)
    name, size = cfg.model.name, (cfg.data.height, cfg.data.width)
    output = run.export_root if output is None else pathlib.Path(output)
    dirs = {"savedmodel": output / name, "tflite": output / f"{name}-tflite",
            "keras": output / f"{name}-keras", "onnx": output / f"{name}-onnx"}
    if version is None:
        version = max(savedmodel.next_version(dirs[f]) for f in formats)
    for f in formats:  # fail before writing anything
        savedmodel.new_version_path(dirs[f], version)
    metadata = export_metadata(cfg, run, checkpoint, run.read_metrics())
    written = {}
    # traced and frozen once for every TFLite variant and ONNX
    frozen = tflite.frozen_function(embed, size) if {"tflite", "onnx"} & set(formats) else None
    if "savedmodel" in formats:
        stage(f"writing SavedModel {dirs['savedmodel'] / str(version)}")
        written["savedmodel"] = savedmodel.export_savedmodel(
            embed, output, name, size, version=version, metadata=metadata)
    if "tflite" in formats:
        calibration = None
        if {"int8", "dynamic"} & set(quantize):
            stage(f"reading {calibration_images} calibration images")
            data = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.kwargs)
            calibration = tflite.representative_images(data.train, size, calibration_images,
                                                       seed=cfg.train.seed)
        with savedmodel.version_dir(dirs["tflite"], version) as tmp:
            for q in quantize:
                label = "float32" if q == "none" else q
                stage(f"converting TFLite {label}")
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
        stage(f"writing .keras {dirs['keras'] / str(version)}")
        with savedmodel.version_dir(dirs["keras"], version) as tmp:
            keras_file.export_keras(embed, tmp / f"{name}.keras", size, metadata=metadata)
        written["keras"] = dirs["keras"] / str(version) / f"{name}.keras"
    if "onnx" in formats:
        stage(f"converting ONNX {dirs['onnx'] / str(version)}")
        with savedmodel.version_dir(dirs["onnx"], version) as tmp:
            onnx_export.export_onnx(embed, tmp / f"{name}.onnx", size, metadata=metadata, frozen=frozen)
        written["onnx"] = dirs["onnx"] / str(version) / f"{name}.onnx"
    return {k: str(v) for k, v in written.items()}
