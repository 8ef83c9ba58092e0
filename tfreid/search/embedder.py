"""The model search embeds with — a training run or any export — and what identifies it.

This is the only module of `tfreid.search` that imports tfreid's model code (run loading,
`FeatureExtractor`, the tf.data input pipeline); everything else sees an `Embedder`.

Images go through the evaluation pipeline (tf.data: read -> decode -> bilinear resize, no
antialias, batched, bad-image policy) as RGB pixels in 0..255, then through the model with the
ImageNet normalisation in front — exactly the input of the exported SavedModel/TFLite/.keras
graphs, so a run and its exports embed a gallery identically.

An index records `ModelInfo`: name, format, version, a SHA-256 of the weight files, the
training distance, the preprocessing, and the model's embedding of a fixed pseudo-random probe
image. The probe lets a query use the same weights in another format (a run's SavedModel export)
while any other network is refused.

Example:
    >>> embedder = open_model("runs/hacnn-market1501-x")                  # doctest: +SKIP
    >>> feats = np.concatenate(list(embedder.embed_files(paths)))         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import pathlib

import numpy as np
import tensorflow as tf

from tfreid.data.datasets.base import Sample
from tfreid.data.pipeline import BadImageError, BadImageReport, build_eval_dataset, iterate_checked
from tfreid.preprocessing import IMAGENET_MEAN, IMAGENET_STD, normalize
from tfreid.progress import Progress
from tfreid.runs import load_run
from tfreid.inference import FeatureExtractor
from tfreid.models import embedding_model

PROBE_VALUES = 64  # leading values of the probe embedding stored in an index


@dataclasses.dataclass
class ModelInfo:
    """What identifies an embedding model; stored in every index.

    Attributes:
        name: the architecture (`"hacnn"`, ...).
        format: `"run"`, `"savedmodel"`, `"tflite"` or `"keras"`.
        source: absolute path of the run directory or export.
        version: the run's checkpoint relative to the run (`checkpoints/ckpt-12`), or the
            export's version folder (`1`) or version folder and file (`1/hacnn-int8.tflite`).
        fingerprint: SHA-256 of the weight files.
        embedding_size: D.
        metric: the distance the model was trained and evaluated with.
        preprocessing: input size, decode/resize method and normalisation.
        probe: leading values of the embedding of the probe image (`probe_image`).
    """

    name: str
    format: str
    source: str
    version: str
    fingerprint: str
    embedding_size: int
    metric: str
    preprocessing: dict
    probe: list

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.preprocessing["input_size"])


class Embedder:
    """Embeds image files in batches with one model; `info` describes the model.

    Args:
        info: the model's `ModelInfo`.
        forward: float32 pixels `[b, H, W, 3]` in 0..255 -> float32 NumPy `[b, D]`.
    """

    def __init__(self, info: ModelInfo, forward):
        self.info, self._forward = info, forward

    def embed_files(self, paths, batch_size: int = 64, on_bad_image: str = "error",
                    progress: bool = True, bad_paths: list | None = None):
        """Yield the embeddings of `paths` batch by batch, in order.

        Args:
            paths: image file paths.
            batch_size: images per forward pass.
            on_bad_image: `"error"` stops at the first unreadable file; `"skip"` yields a
                placeholder row for it and appends its path to `bad_paths`.
            progress: show a progress bar.
            bad_paths: list receiving the skipped paths (filled when iteration ends).

        Yields:
            float32 `[b, D]` NumPy arrays.

        Raises:
            FileNotFoundError: (error policy) missing files, named.
            ValueError: (error policy) a file that cannot be decoded, named.
        """
        report = BadImageReport()
        samples = [Sample(str(p), 0, 0) for p in paths]
        dataset = build_eval_dataset(samples, self.info.image_size, batch_size, on_bad_image,
                                     report=report, normalized=False)
        bar = Progress(math.ceil(len(samples) / batch_size), "embedding", unit="batch",
                       quiet=not progress)
        try:
            for step, pixels in enumerate(iterate_checked(dataset), 1):
                yield self._forward(pixels)
                bar.update(step)
        except BadImageError as err:
            raise ValueError(f"image file {err.path} cannot be read or decoded as JPEG/PNG/BMP/"
                             "GIF (--on-bad-image skip leaves such files out)") from None
        if bad_paths is not None:
            bad_paths.extend(report.paths)


def open_model(path, checkpoint: str | None = None, batch_size: int = 64) -> Embedder:
    """Load a run directory or an export for embedding.

    Args:
        path: a run directory (with `run.json`), a SavedModel version folder, or a `.tflite` /
            `.keras` file.
        checkpoint: for a run, the checkpoint prefix, absolute or relative to the run
            (default: its latest).
        batch_size: images per forward pass of an export.

    Returns:
        `Embedder`.

    Raises:
        FileNotFoundError: `path` or the run's checkpoint does not exist.
        ValueError: `path` is neither a run nor an export, or cannot be loaded.
    """
    path = pathlib.Path(path).absolute()
    if not path.exists():
        raise FileNotFoundError(f"model {path}: not found (expected a run directory or a "
                                "SavedModel folder, .tflite or .keras export)")
    if (path / "run.json").is_file():
        return _open_run(path, None if checkpoint is None else str(path / checkpoint))
    if not ((path / "saved_model.pb").is_file() or path.suffix in (".tflite", ".keras")):
        raise ValueError(f"model {path}: not a tfreid run directory (no run.json) nor an export "
                         "(a SavedModel version folder with saved_model.pb, a .tflite or .keras "
                         "file)")
    try:
        extractor = FeatureExtractor(path, batch_size=batch_size)
    except (tf.errors.OpError, OSError, RuntimeError, ValueError) as err:  # damaged files
        reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ValueError(f"model {path}: cannot load this export: {reason}") from None
    meta = extractor.metadata
    if extractor.format == "savedmodel":
        files = [path / "saved_model.pb", *sorted((path / "variables").glob("*"))]
        version = path.name
        default_name = path.parent.name
    else:
        files, version = [path], f"{path.parent.name}/{path.name}"
        default_name = path.stem.split("-")[0]
    prep = meta.get("preprocessing", {})
    info = _info(name=meta.get("model") or default_name, format=extractor.format, source=path,
                 version=version, files=files, metric=meta.get("distance", "euclidean"),
                 size=extractor.image_size, mean=prep.get("mean", IMAGENET_MEAN),
                 std=prep.get("std", IMAGENET_STD), forward=extractor.embed_pixels)
    return Embedder(info, lambda pixels: extractor.embed_pixels(np.asarray(pixels)))


def probe_image(image_size) -> np.ndarray:
    """The fixed pseudo-random image `[1, H, W, 3]` (0..255) whose embedding identifies a model."""
    return np.random.default_rng(0).uniform(0, 255, (1, *image_size, 3)).astype(np.float32)


def _open_run(path: pathlib.Path, checkpoint: str | None) -> Embedder:
    try:
        cfg, model, checkpoint = load_run(path, checkpoint)
    except (IndexError, OSError) as err:  # a garbled checkpoint file
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"model {path}: cannot restore its checkpoint: {err}") from None
    embed = embedding_model(model)
    size = (cfg.data.height, cfg.data.width)

    # The export's serving_default graph: normalisation in front of the network, one trace.
    @tf.function(input_signature=[tf.TensorSpec((None, *size, 3), tf.float32)])
    def forward(pixels):
        return tf.cast(embed(normalize(pixels), training=False), tf.float32)

    run = lambda pixels: forward(tf.convert_to_tensor(pixels, tf.float32)).numpy()
    files = sorted(pathlib.Path(checkpoint).parent.glob(pathlib.Path(checkpoint).name + ".*"))
    version = pathlib.Path(os.path.relpath(os.path.abspath(checkpoint), path)).as_posix()
    info = _info(name=cfg.model.name, format="run", source=path, version=version,
                 files=files, metric=cfg.eval.metric, size=size, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, forward=run)
    return Embedder(info, run)


def _info(*, name, format, source, version, files, metric, size, mean, std, forward) -> ModelInfo:
    probe = np.asarray(forward(probe_image(size)), np.float32)[0]
    preprocessing = {"input_size": [int(v) for v in size], "decode": "RGB", "resize": "bilinear",
                     "antialias": False, "scale": 1 / 255.0, "mean": [float(v) for v in mean],
                     "std": [float(v) for v in std]}
    return ModelInfo(name=str(name), format=format, source=str(source), version=str(version),
                     fingerprint=_sha256(files), embedding_size=int(probe.shape[-1]),
                     metric=str(metric), preprocessing=preprocessing,
                     probe=[float(v) for v in probe[:PROBE_VALUES]])


def _sha256(files) -> str:
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
