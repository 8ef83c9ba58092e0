"""Embedding images: `FeatureExtractor` with any tfreid export (SavedModel, `.tflite`, `.onnx`, `.keras`),
`extract_features` with a Keras model over a dataset split.

For applications (trackers, search services): load once, then call with image paths, encoded
image bytes, or pixel arrays, and get `[N, D]` float32 NumPy embeddings — the same numbers
whichever format was loaded (up to that format's quantisation).

Preprocessing is identical for every backend, so the formats are comparable: files/bytes are
decoded and every image not already at the model size is resized to `H x W` with
`tfreid.preprocessing` — what the SavedModel `serve_bytes` signature and the training pipeline
use. Pixel arrays are RGB in 0..255
(uint8 or float); normalisation happens inside each exported model.

Example:
    >>> extractor = FeatureExtractor("saved_models/hacnn/1")
    >>> features = extractor(["a.jpg", "b.jpg"])            # [2, 1024]
    >>> features = extractor(np.zeros((8, 160, 64, 3), np.uint8))
"""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfreid.checks import check_int
from tfreid.preprocessing import decode_resize, resize_image

__all__ = ["FeatureExtractor", "extract_features", "xnnpack_delegation"]

_ARRAY_TYPES = (np.ndarray, tf.Tensor)


class FeatureExtractor:
    """Batched embedding with a SavedModel directory, a `.tflite`, `.onnx` or `.keras` file.

    Args:
        path: the export: a SavedModel version folder (holding `saved_model.pb`), a `.tflite`
            file or a `.keras` file.
        batch_size: images per forward pass (bounds memory).
        num_threads: CPU threads for the LiteRT interpreter (default: all cores).

    Attributes:
        format: `"savedmodel"`, `"tflite"`, `"onnx"` or `"keras"`.
        image_size: `(H, W)` the model expects.
        embedding_size: `D`.
        metadata: the export's description (`assets/tfreid.json` or the `.json` sidecar), or {}.
        kernels: `"tensorflow"` (SavedModel/.keras), `"onnxruntime"` (.onnx, CPU), or for
            `.tflite` `"xnnpack"` or `"builtin"`
            (LiteRT's builtin kernels, the fallback when XNNPACK refuses to prepare a graph).
        delegation: for `.tflite` with XNNPACK, `xnnpack_delegation`'s summary: n of the model's
            m operators run inside k XNNPACK partitions, and which ran on builtin kernels;
            None otherwise.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is not a recognised export.
    """

    def __init__(self, path: str | os.PathLike, batch_size: int = 32, num_threads: int | None = None):
        path = pathlib.Path(path)
        if not path.exists():
            raise FileNotFoundError(f"export {str(path)!r} not found (expected a SavedModel "
                                    "folder, a .tflite, .onnx or .keras file)")
        check_int("batch_size", batch_size)
        self.path, self.batch_size = path, batch_size
        self.kernels = "tensorflow"  # LiteRT: "xnnpack" or "builtin" (set by _load_tflite)
        self.delegation = None
        if path.is_dir() and (path / "saved_model.pb").is_file():
            self.format = "savedmodel"
            self._signature = tf.saved_model.load(str(path)).signatures["serving_default"]
            shape = self._signature.structured_input_signature[1]["images"].shape
            self.metadata = _read_json(path / "assets" / "tfreid.json")
            self._run = lambda x: self._signature(images=tf.constant(x))["embedding"].numpy()
        elif path.is_file() and path.suffix == ".tflite":
            self.format = "tflite"
            shape = self._load_tflite(path, num_threads)
            self.metadata = _read_json(path.with_suffix(".json"))
        elif path.is_file() and path.suffix == ".onnx":
            self.format, self.kernels = "onnx", "onnxruntime"
            shape = self._load_onnx(path, num_threads)
            self.metadata = _read_json(path.with_suffix(".json"))
        elif path.is_file() and path.suffix == ".keras":
            import keras

            from tfreid.models import available_models

            available_models()  # registers every tfreid layer before deserialising
            self.format = "keras"
            model = keras.saving.load_model(path, safe_mode=True)
            shape = model.input.shape
            forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            self._run = lambda x: forward(tf.constant(x)).numpy()
            self.metadata = _read_json(path.with_suffix(".json"))
        else:
            raise ValueError(f"{str(path)!r} is not a tfreid export: expected a SavedModel folder "
                             "(with saved_model.pb), a .tflite, .onnx or .keras file")
        self.image_size = (int(shape[1]), int(shape[2]))
        self.embedding_size = int(self._run(np.zeros((1, *self.image_size, 3), np.float32)).shape[-1])

    def _load_onnx(self, path, num_threads):
        try:
            import onnxruntime
        except ImportError:
            raise ImportError("running an .onnx export needs onnxruntime: pip install "
                              "'tfreid[onnx]'") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or os.cpu_count()
        try:
            session = onnxruntime.InferenceSession(str(path), options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's InvalidProtobuf, Fail, ... on a damaged file
            raise ValueError(f"{str(path)!r} is not a readable ONNX model: "
                             f"{str(err).splitlines()[0][:300]}") from None
        name = session.get_inputs()[0].name
        self._run = lambda x: session.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]
        return session.get_inputs()[0].shape

    def _load_tflite(self, path, num_threads):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        try:
            interpreter = Interpreter(model_path=str(path), num_threads=num_threads or os.cpu_count())
            _probe(interpreter)
            self.kernels = "xnnpack"
            self.delegation = xnnpack_delegation(interpreter)
        except RuntimeError:
            # XNNPACK refuses a graph whose int8 scale ratios it cannot requantise (the export
            # widens degenerate ranges to avoid that: tfreid/export/int8_ranges.py); the builtin
            # kernels run every graph, more slowly.
            self.kernels = "builtin"
            interpreter = Interpreter(
                model_path=str(path), num_threads=num_threads or os.cpu_count(),
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self._interpreter = interpreter
        self._input = interpreter.get_input_details()[0]
        self._output = interpreter.get_output_details()[0]
        self._batch = None

        def run(x):
            if self._batch != len(x):
                interpreter.resize_tensor_input(self._input["index"], list(x.shape))
                interpreter.allocate_tensors()
                self._batch = len(x)
            interpreter.set_tensor(self._input["index"], _quantize(x, self._input))
            interpreter.invoke()
            return _dequantize(interpreter.get_tensor(self._output["index"]), self._output)

        self._run = run
        return self._input["shape_signature"]

    def __call__(self, inputs) -> np.ndarray:
        """Embed `inputs`; see `embed`."""
        return self.embed(inputs)

    def embed(self, inputs) -> np.ndarray:
        """Embed images in batches of `batch_size`.

        Args:
            inputs: one of: a path (str/PathLike) or a list of paths; encoded image `bytes` or a
                list of them; a pixel array `[H, W, 3]` or `[N, H, W, 3]` (uint8, or float in
                0..255); or a list of `[H, W, 3]` arrays (any sizes). Lists may mix kinds.

        Returns:
            float32 `[N, D]`.

        Raises:
            FileNotFoundError: a path does not exist.
            ValueError: an element is not an image (names its index and what was expected).
        """
        items = _as_items(inputs)
        if not items:
            raise ValueError("inputs is empty: expected image paths, encoded bytes or RGB arrays")
        chunks = []
        for start in range(0, len(items), self.batch_size):
            batch = np.stack([self._pixels(item, start + i)
                              for i, item in enumerate(items[start:start + self.batch_size])])
            chunks.append(np.asarray(self._run(batch), np.float32))
        return np.concatenate(chunks, axis=0)

    def embed_pixels(self, pixels) -> np.ndarray:
        """Embed images already decoded and resized to `image_size`, in batches of `batch_size`.

        The fast path for callers that decode with their own tf.data pipeline: one range check
        for the whole array, no per-image work.

        Args:
            pixels: `[N, H, W, 3]` RGB in 0..255 (uint8 or float) at `image_size`.

        Returns:
            float32 `[N, D]`.

        Raises:
            ValueError: another shape, or values outside 0..255.
        """
        pixels = np.asarray(pixels, np.float32)
        if pixels.ndim != 4 or pixels.shape[1:] != (*self.image_size, 3) or not len(pixels):
            raise ValueError(f"pixels: expected a non-empty [N, {self.image_size[0]}, "
                             f"{self.image_size[1]}, 3] array, got shape {pixels.shape}")
        lo, hi = float(pixels.min()), float(pixels.max())
        if lo < 0 or hi > 255 or not np.isfinite(hi):
            raise ValueError(f"pixels: values must lie in 0..255, got range [{lo}, {hi}]")
        return np.concatenate([np.asarray(self._run(pixels[s:s + self.batch_size]), np.float32)
                               for s in range(0, len(pixels), self.batch_size)])

    def _pixels(self, item, index: int) -> np.ndarray:
        """One image as float32 `[H, W, 3]` in 0..255 at the model size."""
        if isinstance(item, (str, os.PathLike)):
            if not os.path.isfile(item):
                raise FileNotFoundError(f"inputs[{index}]: image file {str(item)!r} not found")
            data, where = pathlib.Path(item).read_bytes(), f"file {str(item)!r}"
        elif isinstance(item, (bytes, bytearray)):
            data, where = bytes(item), "bytes"
        else:
            image = np.asarray(item)
            if image.ndim != 3 or image.shape[-1] != 3 or not (
                    np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
                raise ValueError(f"inputs[{index}]: expected an RGB array [H, W, 3] (uint8 or "
                                 f"float 0..255), got dtype {image.dtype} shape {image.shape}")
            lo, hi = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
            if lo < 0 or hi > 255 or not np.isfinite(hi):
                raise ValueError(f"inputs[{index}]: pixel values must lie in 0..255, got range "
                                 f"[{lo}, {hi}]")
            if image.shape[:2] == self.image_size:
                return image.astype(np.float32)
            return resize_image(image.astype(np.float32), self.image_size).numpy()
        try:
            return _decode_resize(tf.constant(data), tf.constant(self.image_size)).numpy()
        except tf.errors.OpError:
            raise ValueError(f"inputs[{index}]: {where} is not a decodable JPEG/PNG/BMP/GIF image "
                             f"(first bytes {data[:8]!r})") from None


def extract_features(embed, samples, image_size, batch_size: int = 128, flip: bool = False,
                     on_bad_image: str = "error", report=None,
                     progress: str | None = None) -> np.ndarray:
    """Embed `samples` in order with an images -> embedding model, batched.

    Args:
        embed: a Keras model mapping normalised images `[B, H, W, 3]` to `[B, D]`.
        samples: list of `Sample`.
        image_size: `(H, W)` model input size.
        batch_size: images per forward pass (bounds memory).
        flip: average the embeddings of each image and its horizontal mirror (test-time
            augmentation); the average is taken on the embeddings as the model outputs them.
        on_bad_image: `"error"` or `"skip"` as in the pipeline (a skipped image keeps its row,
            embedded from a placeholder; its path is recorded in `report`).
        report: the `tfreid.data.pipeline.BadImageReport` to fill.
        progress: show a progress bar with this label (None: silent).

    Returns:
        float32 array `[len(samples), D]`.
    """
    from tfreid.data.pipeline import build_eval_dataset
    from tfreid.progress import Progress

    height, width = (int(v) for v in image_size)

    # One trace for every batch size (the last batch is usually partial).
    @tf.function(input_signature=[tf.TensorSpec((None, height, width, 3), tf.float32)])
    def forward(images):
        features = tf.cast(embed(images, training=False), tf.float32)
        if flip:
            mirrored = tf.cast(embed(tf.reverse(images, axis=[2]), training=False), tf.float32)
            features = (features + mirrored) / 2.0
        return features

    dataset = build_eval_dataset(samples, image_size=tuple(image_size), batch_size=batch_size,
                                 on_bad_image=on_bad_image, report=report)
    bar = Progress(-(-len(samples) // batch_size), progress or "", unit="batch",
                   quiet=progress is None)
    chunks = []
    for images in dataset:
        chunks.append(forward(images).numpy())
        bar.update(len(chunks))
    bar.close()
    if not chunks:
        raise ValueError("no images to embed (empty split)")
    return np.concatenate(chunks, axis=0)


def _probe(interpreter) -> None:
    # XNNPACK builds its runtime on the first invoke; fail here rather than on user data.
    detail = interpreter.get_input_details()[0]
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()


def xnnpack_delegation(interpreter) -> dict:
    """How much of a prepared LiteRT interpreter's graph the XNNPACK delegate took over.

    The interpreter lists the model's operators first and appends one `DELEGATE` node per
    partition, whose inputs/outputs are the partition's boundary tensors; the operators inside a
    partition are those reached walking back from its outputs without crossing its inputs.

    Returns:
        `{"delegated": n, "nodes": m, "partitions": k, "builtin_ops": {name: count}}`, the last
        naming the operators left to the builtin kernels.
    """
    raw = interpreter._interpreter  # the node list has no public accessor
    nodes = [(raw.NodeName(i), list(raw.NodeInputs(i)), list(raw.NodeOutputs(i)))
             for i in range(raw.NumNodes())]
    model_ops = [n for n in nodes if n[0] != "DELEGATE"]
    producer = {t: i for i, (_, _, outputs) in enumerate(model_ops) for t in outputs}
    inside = set()
    partitions = [n for n in nodes if n[0] == "DELEGATE"]
    for _, boundary, outputs in partitions:
        stack, boundary = list(outputs), set(boundary)
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor not in producer or producer[tensor] in inside:
                continue
            inside.add(producer[tensor])
            stack.extend(model_ops[producer[tensor]][1])
    builtin = {}
    for i, (name, _, _) in enumerate(model_ops):
        if i not in inside:
            builtin[name] = builtin.get(name, 0) + 1
    return {"delegated": len(inside), "nodes": len(model_ops), "partitions": len(partitions),
            "builtin_ops": dict(sorted(builtin.items()))}


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


# One trace for every image and model size.
_decode_resize = tf.function(decode_resize, input_signature=[tf.TensorSpec((), tf.string),
                                                             tf.TensorSpec((2,), tf.int32)])


def _as_items(inputs) -> list:
    if isinstance(inputs, (str, os.PathLike, bytes, bytearray)):
        return [inputs]
    if isinstance(inputs, _ARRAY_TYPES):
        array = np.asarray(inputs)
        if array.ndim == 3:
            return [array]
        if array.ndim == 4:
            return list(array)
        raise ValueError(f"inputs: expected an RGB array [H, W, 3] or [N, H, W, 3], got shape "
                         f"{array.shape}")
    if isinstance(inputs, Sequence) or hasattr(inputs, "__iter__"):
        return list(inputs)
    raise ValueError(f"inputs: expected image paths, encoded bytes or RGB arrays, got "
                     f"{type(inputs).__name__}")


def _read_json(path: pathlib.Path) -> dict:
    from tfreid.runs import read_json

    return read_json(path) if path.is_file() else {}
