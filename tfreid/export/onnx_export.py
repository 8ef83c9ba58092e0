"""ONNX export through tf2onnx (optional extra: ``pip install 'tfreid[onnx]'``).

The `.onnx` graph is the TFLite export's serving function (`tfreid.export.tflite.frozen_function`):
input ``images`` float32 RGB 0..255 ``[N, H, W, 3]`` (N dynamic), the ImageNet normalisation
inside, output ``embedding`` float32 ``[N, D]``. tf2onnx converts the frozen GraphDef; its own
NHWC->NCHW transposes are optimised away where it can. ONNX Runtime runs the file
(`tfreid.inference.FeatureExtractor`), and TensorRT builds an engine from it
(``trtexec --onnx=model.onnx``, docs/export.md).

tf2onnx only logs an op it cannot map and carries on; here any such op fails the export with
``ValueError`` naming the op type(s) and node(s).

Example:
    >>> export_onnx(embed, "saved_models/hacnn-onnx/1/hacnn.onnx", (160, 64))
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import re

import keras

__all__ = ["OPSET", "convert_onnx", "export_onnx", "require_onnx"]

OPSET = 17  # ONNX Runtime >= 1.14 and TensorRT >= 8.6 run it
_UNSUPPORTED = re.compile(r"Tensorflow op \[(?P<node>[^:\]]+): (?P<op>[^\]]+)\] is not supported")


def require_onnx():
    """Import tf2onnx, or fail with the extra to install."""
    try:
        import tf2onnx
    except ImportError:
        raise ImportError("ONNX export needs tf2onnx: pip install 'tfreid[onnx]'") from None
    return tf2onnx


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.unsupported: dict[str, list[str]] = {}

    def emit(self, record):
        match = _UNSUPPORTED.search(record.getMessage())
        if match:
            self.unsupported.setdefault(match["op"], []).append(match["node"])


@contextlib.contextmanager
def _quiet_tf2onnx():
    """tf2onnx logs every pass at INFO; keep errors, and collect the unsupported ops."""
    logger = logging.getLogger("tf2onnx")
    handler, level, propagate = _Collect(), logger.level, logger.propagate
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def convert_onnx(embed: keras.Model, image_size, opset: int = OPSET, frozen=None) -> bytes:
    """Convert `embed` (normalised images -> embedding) plus the normalisation to ONNX bytes.

    Args:
        embed: Keras model mapping ImageNet-normalised images `[N, H, W, 3]` to `[N, D]`.
        image_size: `(H, W)`.
        opset: ONNX opset.
        frozen: `tfreid.export.tflite.frozen_function(embed, image_size)` if already computed.

    Raises:
        ImportError: tf2onnx is not installed (the message names the extra).
        ValueError: an op tf2onnx cannot convert (named with its nodes), or another tf2onnx
            failure (its message kept).
    """
    tf2onnx = require_onnx()
    from tfreid.export.tflite import frozen_function

    fn = frozen if frozen is not None else frozen_function(embed, image_size)
    inputs = [t.name for t in fn.inputs if t.dtype != "resource"]
    outputs = [t.name for t in fn.outputs]
    with _quiet_tf2onnx() as log:
        try:
            proto, _ = tf2onnx.convert.from_graph_def(
                fn.graph.as_graph_def(), name=embed.name, input_names=inputs,
                output_names=outputs, opset=opset,
                tensors_to_rename={inputs[0]: "images", outputs[0]: "embedding"})
        except Exception as err:  # tf2onnx raises the first handler error it met
            raise ValueError(f"ONNX conversion of {embed.name} failed: {type(err).__name__}: "
                             f"{err}") from None
    if log.unsupported:
        ops = "; ".join(f"{op} (nodes {', '.join(nodes[:3])})" for op, nodes in log.unsupported.items())
        raise ValueError(f"ONNX conversion of {embed.name}: tf2onnx (opset {opset}) cannot convert "
                         f"the TensorFlow op(s) {ops}")
    return proto.SerializeToString()


def export_onnx(embed: keras.Model, path: str | os.PathLike, image_size, metadata: dict | None = None,
                opset: int = OPSET, frozen=None) -> pathlib.Path:
    """Convert and write `path` (`.onnx`) plus a `<path>.json` sidecar describing it (atomically).

    Returns:
        The path of the `.onnx` file.
    """
    path = pathlib.Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"path must end in .onnx, got {str(path)!r}")
    data = convert_onnx(embed, image_size, opset, frozen)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    info = {"format": "onnx", "opset": opset, "input_size": [int(v) for v in image_size],
            "input": "images: float32 RGB 0..255 [N, H, W, 3] (N dynamic); normalisation in-graph",
            "output": "embedding: float32 [N, D]",
            "embedding_size": int(embed.output.shape[-1]), **(metadata or {})}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    return path
