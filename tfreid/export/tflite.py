"""TFLite / LiteRT export: float32, float16, dynamic-range and full-integer int8, builtin ops only.

The `.tflite` graph takes what a camera gives: float32 RGB pixels in 0..255, `[N, H, W, 3]`
(N is dynamic: resize the input tensor for batches), and does the ImageNet normalisation itself;
it returns the float32 embedding `[N, D]` (for HA-CNN the L2-normalised global ++ local halves).

Quantisation variants (`tf.lite.TFLiteConverter`, `TFLITE_BUILTINS` only — never Flex/Select TF
ops, so the file runs on the stock LiteRT runtime):

- `none`: float32 weights and activations.
- `float16`: float16 weights, dequantised to float32 at load (half the file).
- `dynamic`: int8 weights, activations quantised on the fly per op (a quarter of the file).
- `int8`: full-integer: int8 weights *and* activations, calibrated on a representative set of
  100-200 training images (`representative_images`); every op inside runs int8
  (`TFLITE_BUILTINS_INT8`). **The I/O stays float32** (a QUANTIZE op after the input, DEQUANTIZE
  before the output) so one client code path serves all four variants and nobody has to know the
  input scale; the two boundary ops cost nothing next to the network.

Known limitation (int8 speed): LiteRT's XNNPACK delegate rejects HA-CNN's full-integer graph
(a `RuntimeError` when the delegate prepares it), so `tfreid.inference.FeatureExtractor` runs
that file with the builtin int8 kernels (`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`),
which are several times slower than XNNPACK on CPU: int8 is the smallest file and matches Keras
within the parity bounds, but is not the fastest variant (see `tools/benchmark_deploy.py`; its
`delegate` column shows which kernels ran). float32/float16/dynamic run with XNNPACK.

Example:
    >>> data = export_tflite(embed, "out/hacnn-int8.tflite", (160, 64), quantize="int8",
    ...                      calibration=representative_images(train_samples, (160, 64)))
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfreid.data.pipeline import decode_image
from tfreid.data.transforms import normalize

__all__ = ["QUANTIZATIONS", "convert_tflite", "export_tflite", "representative_images",
           "tflite_op_names"]

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


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
        count: how many images (the issue asks for 100-200; all of them if fewer).
        seed: which subset.

    Returns:
        float32 `[count, H, W, 3]` RGB in 0..255, resized exactly as the serving graphs resize.
    """
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    paths = [str(getattr(s, "path", s)) for s in samples]
    if not paths:
        raise ValueError("samples is empty: no training images to calibrate int8 on")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(paths), size=min(count, len(paths)), replace=False)
    size = tuple(int(v) for v in image_size)

    def load(path):
        image = tf.image.resize(tf.cast(decode_image(tf.io.read_file(path)), tf.float32), size)
        return tf.ensure_shape(image, (*size, 3))

    ds = tf.data.Dataset.from_tensor_slices([paths[i] for i in sorted(chosen)])
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(64)
    return np.concatenate([b.numpy() for b in ds], axis=0)


def _serving_function(embed: keras.Model, image_size) -> tf.types.experimental.ConcreteFunction:
    height, width = (int(v) for v in image_size)

    @tf.function(input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32,
                                                name="images")])
    def serve(images):
        return {"embedding": tf.cast(embed(normalize(images), training=False), tf.float32)}

    return serve.get_concrete_function()


def convert_tflite(embed: keras.Model, image_size, quantize: str = "none",
                   calibration: np.ndarray | None = None) -> bytes:
    """Convert `embed` (normalised images -> embedding) plus the normalisation to a flatbuffer.

    Args:
        embed: Keras model mapping ImageNet-normalised images `[N, H, W, 3]` to `[N, D]`.
        image_size: `(H, W)`.
        quantize: one of `QUANTIZATIONS`.
        calibration: float32 `[M, H, W, 3]` 0..255 images, required for `int8`
            (see `representative_images`).

    Returns:
        The `.tflite` model bytes.

    Raises:
        ValueError: unknown `quantize`, missing/ill-shaped calibration images, or a model that
            needs non-builtin ops (the converter's message is kept).
    """
    _check_quantize(quantize)
    height, width = (int(v) for v in image_size)
    # Keras 3 variables are not frozen by `from_concrete_functions` (the flatbuffer would read
    # uninitialised VAR_HANDLEs), so fold them into constants first.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = convert_variables_to_constants_v2(_serving_function(embed, (height, width)))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        calibration = np.asarray(calibration if calibration is not None else [], np.float32)
        if calibration.ndim != 4 or calibration.shape[1:] != (height, width, 3) or not len(calibration):
            raise ValueError("int8 quantisation needs calibration images float32 "
                             f"[M, {height}, {width}, 3] in 0..255; got shape {calibration.shape}")

        def representative():
            for image in calibration:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        return converter.convert()
    except Exception as err:  # ConverterError: keep the converter's explanation
        raise ValueError(f"TFLite conversion ({quantize}) of {embed.name} failed with builtin "
                         f"ops only: {err}") from None


def tflite_op_names(model: bytes | str | os.PathLike) -> set[str]:
    """Names of the operators a `.tflite` model uses (builtin names; custom ops as `CUSTOM:x`).

    Used to check that an export needs no Flex (`FlexXxx`) or custom op.
    """
    from ai_edge_litert import schema_py_generated as schema

    data = model if isinstance(model, (bytes, bytearray)) else pathlib.Path(model).read_bytes()
    flat = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    out = set()
    for code in flat.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            out.add(f"CUSTOM:{custom}")
        else:
            out.add(names[builtin])
    return out


def export_tflite(embed: keras.Model, path: str | os.PathLike, image_size, quantize: str = "none",
                  calibration: np.ndarray | None = None, metadata: dict | None = None) -> pathlib.Path:
    """Convert and write `path` (`.tflite`) plus a `<path>.json` sidecar describing it.

    The file is written under a temporary name and renamed, so readers never see half a model.

    Returns:
        The path of the `.tflite` file.
    """
    path = pathlib.Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"path must end in .tflite, got {str(path)!r}")
    data = convert_tflite(embed, image_size, quantize, calibration)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"format": "tflite", "quantize": quantize, "input_size": [int(v) for v in image_size],
            "input": "float32 RGB 0..255 [N, H, W, 3] (batch resizable); normalisation in-graph",
            "output": "float32 embedding [N, D]",
            "embedding_size": int(embed.output.shape[-1]),
            "ops": sorted(tflite_op_names(data)), **(metadata or {})}
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    return path
