"""Dynamic-range quantisation that keeps the embedding within the parity bound.

Dynamic-range quantisation stores every large weight tensor as int8 and quantises each op's
input on the fly. Three kinds of weights cannot always afford it: the embedding head's (a
BNNeck scales up the rounding of low-range channels), the first layers' of deep networks (their
rounding travels through everything after them) and, with them, the other weights reading the
same activation (their errors are correlated, so they are restored as one group).
`keep_weights_float` gives such weights back their float32 values where the calibration images
show the embedding needs it. The measurements behind the thresholds: docs/export.md.
"""

from __future__ import annotations

import numpy as np

from tfreid.export.flatbuffer import FLOAT32, INT8, is_constant, read_model, write_model
from tfreid.export.int8_ranges import embedding_head_ops

__all__ = ["MAX_FLOAT_SHARE", "MIN_COSINE", "MIN_GAIN", "keep_weights_float"]

# Ten times below the deployment bound's error (0.999 per image): the calibration images are
# training images, and unseen images have a longer tail.
MIN_COSINE = 0.9999
# A step must remove this fraction of the mean error (1 - cosine) to be taken; the mean decides
# because the minimum over ~128 images rests on one image.
MIN_GAIN = 0.1
# Beyond this share of float32 weights the file is closer to float32 than to dynamic.
MAX_FLOAT_SHARE = 0.5


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


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def _quantized_weights(model) -> tuple[list[int], list[list[int]]]:
    """The int8 constant tensors: ``(head, groups)``, the indices of the ones the embedding head
    reads and the others grouped by the activation their op reads (first input), each ordered
    by first reader (execution order)."""
    graph = model.subgraphs[0]
    in_head = embedding_head_ops(model, graph)
    head, by_input, seen = [], {}, set()
    for i, op in enumerate(graph.operators):
        for t in op.inputs:
            tensor = graph.tensors[t] if t >= 0 else None
            if tensor is not None and tensor.type == INT8 and is_constant(model, tensor) \
                    and t not in seen:
                seen.add(t)
                target = head if i in in_head else by_input.setdefault(int(op.inputs[0]), [])
                target.append(int(t))
    return head, list(by_input.values())


def _restore(dynamic: bytes, float32: bytes, indices) -> bytes:
    """`dynamic` with the int8 weight tensors `indices` given back their float32 values."""
    model, reference = read_model(dynamic), read_model(float32)
    originals = {t.name: t for t in reference.subgraphs[0].tensors}
    graph = model.subgraphs[0]
    for index in indices:
        tensor = graph.tensors[index]
        original = originals.get(tensor.name)
        if original is None or list(original.shape) != list(tensor.shape):
            raise ValueError(f"no float32 counterpart for weight {tensor.name!r}")
        model.buffers[tensor.buffer].data = reference.buffers[original.buffer].data
        tensor.type, tensor.quantization = FLOAT32, None  # the op runs in float again
    return write_model(model)


def keep_weights_float(dynamic: bytes, float32: bytes, images: np.ndarray,
                       min_cosine: float = MIN_COSINE, min_gain: float = MIN_GAIN,
                       max_float_share: float = MAX_FLOAT_SHARE) -> tuple[bytes, int]:
    """Give the head's and the first layers' weight tensors their float32 values until the
    embedding is close to the float32 model's.

    While the minimum cosine with the float32 model on `images` is below `min_cosine`: first
    the embedding head's weights are restored (kept if that removes a `min_gain` fraction of the
    mean error 1 - cosine), then the first ``k`` groups of other weight tensors (the ones reading
    the same activation) in execution order, ``k = 1, 2, 4, ...``, until the target is reached,
    a doubling removes less than `min_gain` of the mean error, or the next step would restore
    more than `max_float_share` of the quantised weights' elements.

    Args:
        dynamic: the dynamic-range `.tflite` flatbuffer.
        float32: the float32 `.tflite` flatbuffer of the same graph (same tensor names).
        images: float32 `[M, H, W, 3]` 0..255 calibration images.
        min_cosine: the minimum cosine with the float32 model to reach on `images`.
        min_gain: the fraction of the mean error a step must remove to be taken.
        max_float_share: the largest fraction of the quantised weights' elements restored.

    Returns:
        `(model_bytes, n)`: the model and how many weight tensors were restored (0: `dynamic`
        unchanged).
    """
    parsed = read_model(dynamic)
    head, groups = _quantized_weights(parsed)
    tensors = parsed.subgraphs[0].tensors
    size = lambda indices: sum(int(np.prod(tensors[t].shape)) for t in indices)
    budget = max_float_share * size(head + [t for group in groups for t in group])
    reference = _embed(float32, images)

    def errors(model):  # (1 - minimum cosine, mean of 1 - cosine)
        cos = _cosines(_embed(model, images), reference)
        return 1.0 - float(cos.min()), float(np.mean(1.0 - cos))

    def helps(new, old):
        return new[1] <= (1.0 - min_gain) * old[1]

    model, error, kept = dynamic, errors(dynamic), []
    if error[0] > 1.0 - min_cosine and head and size(head) <= budget:
        candidate = _restore(dynamic, float32, head)
        if helps(new := errors(candidate), error):
            model, error, kept = candidate, new, list(head)
    count, restored = 0, list(kept)
    while error[0] > 1.0 - min_cosine and count < len(groups):
        more = min(len(groups), max(1, 2 * count))
        indices = kept + [t for group in groups[:more] for t in group]
        if size(indices) > budget:
            break
        candidate = _restore(dynamic, float32, indices)
        if not helps(new := errors(candidate), error):
            break
        model, error, count, restored = candidate, new, more, indices
    return model, len(restored)
