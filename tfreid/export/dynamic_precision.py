"""Dynamic-range quantisation that keeps the embedding within the parity bound.

Dynamic-range quantisation stores every large weight tensor as int8 (per output channel) and
quantises activations on the fly. On deep networks the rounding of the *first* layers' weights
dominates the error, because it travels through everything after it: on the trained CCAN
(BN-Inception, 128x64) the plain dynamic model has embedding cosine 0.9960 min / 0.9980 mean with
Keras on 64 test images; giving float32 weights back to its 3 stem convolutions alone raises that
to 0.9985 / 0.9992, and with the 12 inception-3 convolutions as well to 0.9993 / 0.9996, while the
int8 weights of the other 236 tensors barely matter.

`keep_early_weights_float` therefore restores the float32 weights of the first ``k`` quantised
tensors in execution order, for the smallest ``k`` in 0, 1, 2, 4, 8, ... that brings the
minimum cosine with the float32 model on the calibration images (training images) to
``min_cosine``. Models that already meet it (HA-CNN, CAN, AANet) keep every int8 weight.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_COSINE", "keep_early_weights_float"]

# Above the deployment bound (0.999 per image) so unseen images keep a margin.
MIN_COSINE = 0.9995


def _embed(data: bytes, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    # One image per call, with the default kernels (XNNPACK): what a device runs. (Resizing the
    # batch of a dynamic-range graph can make XNNPACK fail to reshape it.)
    interpreter = Interpreter(model_content=data)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [1, *images.shape[1:]])
    interpreter.allocate_tensors()
    out = []
    for image in images.astype(np.float32):
        interpreter.set_tensor(detail["index"], image[None])
        interpreter.invoke()
        out.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    return np.stack(out)


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return float(cos.min())


def _quantized_weights(model) -> list[int]:
    """Indices of the int8 constant tensors, ordered by their first reader (execution order)."""
    from tfreid.export.tflite_rewrite import _is_constant

    graph, order = model.subgraphs[0], []
    for op in graph.operators:
        for t in op.inputs:
            tensor = graph.tensors[t] if t >= 0 else None
            if tensor is not None and tensor.type == 9 and _is_constant(model, tensor) \
                    and t not in order:  # 9 = TensorType.INT8
                order.append(int(t))
    return order


def _restore(dynamic: bytes, float32: bytes, count: int) -> bytes:
    """`dynamic` with its first `count` int8 weight tensors given back their float32 values."""
    from tfreid.export.tflite_rewrite import read_model, write_model

    model, reference = read_model(dynamic), read_model(float32)
    originals = {t.name: t for t in reference.subgraphs[0].tensors}
    graph = model.subgraphs[0]
    for index in _quantized_weights(model)[:count]:
        tensor = graph.tensors[index]
        original = originals.get(tensor.name)
        if original is None or list(original.shape) != list(tensor.shape):
            raise ValueError(f"no float32 counterpart for weight {tensor.name!r}")
        model.buffers[tensor.buffer].data = reference.buffers[original.buffer].data
        tensor.type, tensor.quantization = 0, None  # 0 = FLOAT32: the op runs in float again
    return write_model(model)


def keep_early_weights_float(dynamic: bytes, float32: bytes, images: np.ndarray,
                             min_cosine: float = MIN_COSINE) -> tuple[bytes, int]:
    """Give the first quantised weight tensors their float32 values until the embedding is close.

    Args:
        dynamic: the dynamic-range `.tflite` flatbuffer.
        float32: the float32 `.tflite` flatbuffer of the same graph (same tensor names).
        images: float32 `[M, H, W, 3]` 0..255 calibration images.
        min_cosine: the minimum cosine with the float32 model to reach on `images`.

    Returns:
        `(model_bytes, k)`: the model and how many weight tensors were restored (0: `dynamic`
        unchanged; all of them if nothing smaller reaches `min_cosine`).
    """
    from tfreid.export.tflite_rewrite import read_model

    total = len(_quantized_weights(read_model(dynamic)))
    reference = _embed(float32, images)
    count, model = 0, dynamic
    while _min_cosine(_embed(model, images), reference) < min_cosine and count < total:
        count = min(total, max(1, 2 * count))
        model = _restore(dynamic, float32, count)
    return model, count
