"""Export a training run's checkpoint for deployment (what `python -m tfreid.export` runs).

Layout under `output` (one version number shared by every format written in one call):

    <output>/<model>/<version>/                 SavedModel, TF Serving layout
    <output>/<model>-tflite/<version>/<model>-<quantize>.tflite  (+ .json sidecar)
    <output>/<model>-keras/<version>/<model>.keras               (+ .json sidecar)
    <output>/<model>-onnx/<version>/<model>.onnx                 (+ .json sidecar)

TFLite, `.keras` and `.onnx` files live in sibling folders because TF Serving loads every numeric folder
under its base path.
"""

from __future__ import annotations

import pathlib

from tfreid.data import build_dataset
from tfreid.export import keras_file, onnx_export, savedmodel, tflite
from tfreid.models import embedding_model
from tfreid.runs import RunDir

__all__ = ["export_run"]


def export_run(run_dir, formats, quantize=("none",), output="saved_models", version=None,
               checkpoint=None, calibration_images: int = 128) -> dict[str, str]:
    """Export a run's checkpoint in `formats`; returns `{label: path}` of what was written.

    Args:
        run_dir: training run directory.
        formats: subset of `("savedmodel", "tflite", "keras", "onnx")`.
        quantize: TFLite variants (subset of `tfreid.export.tflite.QUANTIZATIONS`).
        output: export root.
        version: shared version number; default the next free one across the format folders.
        checkpoint: checkpoint prefix; default the run's latest.
        calibration_images: images of the run's training split used to calibrate int8 and to
            check the dynamic-range model (`tfreid.export.dynamic_precision`).

    Example:
        >>> export_run("runs/hacnn-synthetic-x", ["tflite"], ["int8"], output="/tmp/exports")
    """
    run = RunDir(run_dir)
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
    output = pathlib.Path(output)
    dirs = {"savedmodel": output / name, "tflite": output / f"{name}-tflite",
            "keras": output / f"{name}-keras", "onnx": output / f"{name}-onnx"}
    if version is None:
        version = max(savedmodel.next_version(dirs[f]) for f in formats)
    for f in formats:  # fail before writing anything
        savedmodel.new_version_path(dirs[f], version)
    run_metrics = run.read_metrics()
    metadata = {"model": name, "distance": cfg.eval.metric, "dataset": cfg.data.dataset,
                "run_dir": str(run.path), "checkpoint": str(checkpoint),
                "metrics": {k: run_metrics[k] for k in ("mAP", "rank1", "rank5", "rank10", "mINP")
                            if k in run_metrics}}
    written = {}
    # traced and frozen once for every TFLite variant and ONNX
    frozen = tflite.frozen_function(embed, size) if {"tflite", "onnx"} & set(formats) else None
    if "savedmodel" in formats:
        written["savedmodel"] = savedmodel.export_savedmodel(
            embed, output, name, size, version=version, metadata=metadata)
    if "tflite" in formats:
        calibration = None
        if {"int8", "dynamic"} & set(quantize):
            data = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.kwargs)
            calibration = tflite.representative_images(data.train, size, calibration_images,
                                                       seed=cfg.train.seed)
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
    if "onnx" in formats:
        with savedmodel.version_dir(dirs["onnx"], version) as tmp:
            onnx_export.export_onnx(embed, tmp / f"{name}.onnx", size, metadata=metadata, frozen=frozen)
        written["onnx"] = dirs["onnx"] / str(version) / f"{name}.onnx"
    return {k: str(v) for k, v in written.items()}
