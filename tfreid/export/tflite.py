"""TFLite / LiteRT export: float32, float16, dynamic-range and int8 quantisation, builtin ops only.

The `.tflite` graph takes float32 RGB pixels in 0..255 `[N, H, W, 3]` (N is dynamic: resize the
input tensor for batches), does the ImageNet normalisation itself and returns the float32
embedding `[N, D]`. Only `TFLITE_BUILTINS` ops are allowed (never Flex/Select TF ops), so the
file runs on the stock LiteRT runtime; the int8 model keeps float32 input and output.

Quantisation variants (`QUANTIZATIONS`): `none` (float32), `float16` (float16 weights),
`dynamic` (int8 weights; with calibration images, the weights the embedding cannot afford to
round stay float32: `dynamic_precision`) and `int8` (int8 weights and activations, calibrated
on training images, with a few float32 islands: `int8_ranges`). Every export then gets the exact
rewrites that let XNNPACK run the whole graph (`tflite_rewrite`); the sidecar's `rewrites` says
what each changed. Measurements: docs/export.md.

Example:
    >>> data = export_tflite(embed, "out/hacnn-int8.tflite", (160, 64), quantize="int8",
    ...                      calibration=representative_images(train_samples, (160, 64)))
"""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfreid.checks import check_int
from tfreid.export import QUANTIZATIONS
from tfreid.export import tf_internals
from tfreid.export.dynamic_precision import keep_weights_float
from tfreid.export.flatbuffer import op_names, read_model
from tfreid.export.int8_ranges import quantize_int8
from tfreid.export.tflite_rewrite import static_reshapes, symmetric_matmul_rhs
from tfreid.preprocessing import load_image, normalize
from tfreid.runs import write_json

__all__ = ["QUANTIZATIONS", "convert_tflite", "export_tflite", "frozen_function",
           "representative_images", "tflite_op_names"]



def _check_quantize(quantize: str) -> str:
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}; got {quantize!r}")
    return quantize


def representative_images(samples: Sequence, image_size, count: int = 128,
                          seed: int = 0) -> np.ndarray:
    """Decode `count` training images (a seeded random subset) for int8 calibration.

    Args:
        samples: `Sample` list (or paths), usually the run dataset's `.train`.
        image_size: `(H, W)` model input size.
        count: how many images (100-200 calibrate int8 well; all of them if fewer).
        seed: which subset.

    Returns:
        float32 `[count, H, W, 3]` RGB in 0..255, resized exactly as the serving graphs resize.
    """
    check_int("count", count)
    paths = [str(getattr(s, "path", s)) for s in samples]
    if not paths:
        raise ValueError("samples is empty: no training images to calibrate int8 on")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(paths), size=min(count, len(paths)), replace=False)
    size = tuple(int(v) for v in image_size)
    ds = tf.data.Dataset.from_tensor_slices([paths[i] for i in sorted(chosen)])
    ds = ds.map(lambda path: load_image(path, size), num_parallel_calls=tf.data.AUTOTUNE).batch(64)
    return np.concatenate([b.numpy() for b in ds], axis=0)


def _serving_function(embed: keras.Model, image_size) -> tf.types.experimental.ConcreteFunction:
    height, width = (int(v) for v in image_size)

    @tf.function(input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32,
                                                name="images")])
    def serve(images):
        return {"embedding": tf.cast(embed(normalize(images), training=False), tf.float32)}

    return serve.get_concrete_function()


def _check_calibration(calibration, height: int, width: int) -> np.ndarray:
    calibration = np.asarray(calibration if calibration is not None else [], np.float32)
    if calibration.ndim != 4 or calibration.shape[1:] != (height, width, 3) or not len(calibration):
        raise ValueError("int8/dynamic quantisation needs calibration images float32 "
                         f"[M, {height}, {width}, 3] in 0..255; got shape {calibration.shape}")
    return calibration


def frozen_function(embed: keras.Model, image_size):
    """The serving function (0..255 pixels -> embedding) with the weights folded to constants.

    Tracing and freezing is a third of a conversion; pass the result as `frozen` to convert
    several variants of one model.
    """
    return tf_internals.freeze(_serving_function(embed, image_size))


def convert_tflite(embed: keras.Model, image_size, quantize: str = "none",
                   calibration: np.ndarray | None = None, frozen=None) -> bytes:
    """Convert `embed` (see `_convert`) and return the `.tflite` model bytes."""
    return _convert(embed, image_size, quantize, calibration, frozen)[0]


def _convert(embed: keras.Model, image_size, quantize: str = "none",
             calibration: np.ndarray | None = None, frozen=None,
             float32: bytes | None = None) -> tuple[bytes, dict]:
    """Convert `embed` (normalised images -> embedding) plus the normalisation to a flatbuffer.

    Args:
        embed: Keras model mapping ImageNet-normalised images `[N, H, W, 3]` to `[N, D]`.
        image_size: `(H, W)`.
        quantize: one of `QUANTIZATIONS`.
        calibration: float32 `[M, H, W, 3]` 0..255 images, required for `int8`
            (see `representative_images`); for `dynamic`, optional: with them, the head's and
            the first layers' weights stay float32 where the embedding needs it
            (`keep_weights_float`).
        frozen: `frozen_function(embed, image_size)` if already computed.
        float32: the float32 `.tflite` of the same model if already converted (`dynamic`
            compares with it).

    Returns:
        `(model_bytes, rewrites)`: the `.tflite` flatbuffer and what the XNNPACK-enabling exact
        rewrites changed (`tfreid.export.tflite_rewrite`, `tfreid.export.int8_ranges`).

    Raises:
        ValueError: unknown `quantize`, missing/ill-shaped calibration images, or a model that
            needs non-builtin ops (the converter's message is kept).
    """
    _check_quantize(quantize)
    height, width = (int(v) for v in image_size)
    fn = frozen if frozen is not None else frozen_function(embed, (height, width))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        calibration = _check_calibration(calibration, height, width)

        def representative():
            for image in calibration:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        if quantize == "int8":
            data, widened, float_nodes = quantize_int8(converter)
        else:
            data = converter.convert()
    except Exception as err:  # ConverterError: keep the converter's explanation
        raise ValueError(f"TFLite conversion ({quantize}) of {embed.name} failed with builtin "
                         f"ops only: {err}") from None
    rewrites = {}
    if quantize == "dynamic" and calibration is not None:
        float32 = float32 or _convert(embed, image_size, "none", frozen=fn)[0]
        data, rewrites["float32_weights"] = keep_weights_float(
            data, float32, _check_calibration(calibration, height, width))
    data, rewrites["static_reshapes"] = static_reshapes(data)
    if quantize == "int8":
        data, requantized = symmetric_matmul_rhs(data)
        rewrites.update(requantized_matmul_rhs=requantized, widened_ranges=widened,
                        float32_ops=float_nodes)
    return data, rewrites


def tflite_op_names(model: bytes | str | os.PathLike) -> set[str]:
    """Names of the operators a `.tflite` model uses (builtin names; custom ops as `CUSTOM:x`).

    Used to check that an export needs no Flex (`FlexXxx`) or custom op.
    """
    data = model if isinstance(model, (bytes, bytearray)) else pathlib.Path(model).read_bytes()
    return op_names(read_model(data))


def export_tflite(embed: keras.Model, path: str | os.PathLike, image_size, quantize: str = "none",
                  calibration: np.ndarray | None = None, metadata: dict | None = None,
                  frozen=None, float32: bytes | None = None) -> pathlib.Path:
    """Convert and write `path` (`.tflite`) plus a `<path>.json` sidecar describing it.

    The file is written under a temporary name and renamed, so readers never see half a model.

    Returns:
        The path of the `.tflite` file.
    """
    path = pathlib.Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"path must end in .tflite, got {str(path)!r}")
    data, rewrites = _convert(embed, image_size, quantize, calibration, frozen, float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": "tflite", "quantize": quantize, "input_size": [int(v) for v in image_size],
            "input": "float32 RGB 0..255 [N, H, W, 3] (batch resizable); normalisation in-graph",
            "output": "float32 embedding [N, D]",
            "embedding_size": int(embed.output.shape[-1]),
            "ops": sorted(tflite_op_names(data)), "rewrites": rewrites, **(metadata or {})}
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    write_json(path.with_suffix(".json"), info)
    return path
