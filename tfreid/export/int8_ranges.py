"""int8 TFLite quantisation that XNNPACK accepts and that keeps the embedding within its bound.

`quantize_int8` calibrates with the converter, then adjusts the model before quantising it:

1. `widen_degenerate_ranges`: an activation whose calibrated range is (almost) zero — a dead
   ReLU — is given the range its producer's inputs imply, so XNNPACK's bounds on the ratios of
   connected scales hold (a zero tensor stays exactly zero).
2. Float32 islands, the ops int8 cannot serve: the region sampler's sampling weights
   (`matmul_weight_slice`), self-attention's softmax (`softmax_attention_slice`), the embedding
   head's pools, concatenations and BN (`embedding_head_slice`) and the ops XNNPACK has no int8
   kernel for (`xnnpack_float_only`). Every convolution, max pool, fully connected layer and
   other feature tensor is int8.

The measurements behind each choice: docs/export.md.
"""

from __future__ import annotations

import numpy as np

from tfreid.export import tf_internals
from tfreid.export.flatbuffer import constant_values, op_kinds, read_model, write_model

__all__ = ["DEGENERATE_RATIO", "XNNPACK_FLOAT_ONLY", "embedding_head_ops", "embedding_head_slice",
           "matmul_weight_slice", "quantize_int8", "softmax_attention_slice",
           "widen_degenerate_ranges", "xnnpack_float_only"]

# A range narrower than this fraction of its reference width is degenerate: XNNPACK's tightest
# window (ADD, 2^-10) already rejects it next to a tensor of the reference width.
DEGENERATE_RATIO = 2.0 ** -10

# Ops whose output magnitude follows from their inputs' (linear in each input, or a selection
# of input values), so an output range far below that magnitude can only be a (near-)constant
# zero. Other ops (RSQRT, EXP, DIV, LOGISTIC ...) legitimately map wide ranges to narrow ones
# and are never touched.
_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
_PRODUCTS = {"MUL", "BATCH_MATMUL", "SQUARE"}
_LINEAR = {"ADD", "SUB", "MEAN", "SUM", "AVERAGE_POOL_2D", "MAX_POOL_2D", "RESIZE_BILINEAR",
           "RESIZE_NEAREST_NEIGHBOR", "CONCATENATION", "STRIDED_SLICE", "SLICE", "RESHAPE",
           "TRANSPOSE", "PAD", "PADV2", "PACK", "UNPACK", "SPLIT", "SPLIT_V", "GATHER", "SQUEEZE",
           "EXPAND_DIMS", "RELU", "RELU6", "ABS", "NEG", "MAXIMUM", "MINIMUM", "REDUCE_MAX",
           "REDUCE_MIN", "BROADCAST_TO", "TILE", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH"}


def _reference_width(op_name: str, inputs: list[tuple[float | None, np.ndarray | None]]) -> float:
    """The output range width an op's inputs "naturally" give it (0 when unknown).

    `inputs` holds (calibrated width, None) for activations and (None, values) for constants.
    Convolutions: input width x largest |weight|; products: product of the input magnitudes
    (SQUARE: the input's, squared); the linear/selection ops of `_LINEAR` (ADD, MEAN, pooling,
    resize, concat ...): the widest input; any other op: 0 (never widened).
    """
    widths = [w for w, _ in inputs if w is not None]
    if not widths or op_name not in _WEIGHTED | _PRODUCTS | _LINEAR:
        return 0.0
    if op_name == "SQUARE":
        return widths[0] ** 2
    if op_name in _WEIGHTED and len(inputs) > 1 and inputs[1][1] is not None:
        return max(widths) * float(np.abs(inputs[1][1]).max(initial=0.0))
    if op_name in _PRODUCTS:
        out = 1.0
        for width, values in inputs:
            out *= width if width is not None else float(np.abs(values).max(initial=0.0))
        return out
    return max(widths)


def widen_degenerate_ranges(calibrated: bytes) -> tuple[bytes, list[dict]]:
    """Widen the degenerate activation ranges of a calibrated (not yet quantised) model.

    Args:
        calibrated: a float `.tflite` flatbuffer carrying calibration min/max per tensor (what
            `tf_internals.calibrate` returns).

    Returns:
        `(model_bytes, changes)`: the patched flatbuffer and one dict per widened tensor
        (`tensor`, `op`, `old` range, `new` range).
    """
    model = read_model(calibrated)
    changes = []
    for graph in model.subgraphs:
        tensors = graph.tensors

        def calibrated_range(index):
            q = tensors[index].quantization if index >= 0 else None
            if q is None or q.min is None or q.max is None or len(q.min) != 1:
                return None
            # the quantiser always makes the range contain zero; its width is what sets the scale
            return min(float(q.min[0]), 0.0), max(float(q.max[0]), 0.0)

        # execution order: inputs are final before their consumers
        for op, name in zip(graph.operators, op_kinds(model, graph)):
            inputs = []
            for index in op.inputs:
                if index < 0:
                    continue
                span = calibrated_range(index)
                inputs.append((span[1] - span[0], None) if span else
                              (None, constant_values(model, tensors[index])))
            inputs = [(w, v) for w, v in inputs if w is not None or v is not None]
            reference = _reference_width(name, inputs)
            for index in op.outputs:
                span = calibrated_range(index)
                if span is None or not reference > 0 or span[1] - span[0] >= DEGENERATE_RATIO * reference:
                    continue
                low, high = span
                if low >= 0:
                    new = (0.0, reference)
                elif high <= 0:
                    new = (-reference, 0.0)
                else:
                    new = (-reference / 2, reference / 2)
                q = tensors[index].quantization
                changes.append({"tensor": tensors[index].name.decode(errors="replace"), "op": name,
                                "old": [float(q.min[0]), float(q.max[0])], "new": list(new)})
                q.min, q.max = np.array([new[0]], np.float32), np.array([new[1]], np.float32)
    return write_model(model), changes


# Ops LiteRT's XNNPACK delegate has no int8 kernel for: kept float32 they run inside XNNPACK
# (between a DEQUANTIZE and a QUANTIZE) instead of splitting its graph.
XNNPACK_FLOAT_ONLY = {"AVERAGE_POOL_2D", "RSQRT", "MINIMUM", "ABS"}


def _links(graph) -> tuple[dict[int, int], dict[int, list[tuple[int, int]]]]:
    """``(producer, consumers)``: tensor -> index of the op writing it, and tensor -> the
    ``(op index, input slot)`` of every op reading it."""
    producer, consumers = {}, {}
    for i, op in enumerate(graph.operators):
        producer.update((int(t), i) for t in op.outputs)
        for slot, t in enumerate(op.inputs):
            consumers.setdefault(int(t), []).append((i, slot))
    return producer, consumers


# Heavy ops never kept in float by `matmul_weight_slice` (the slice stops at them).
_HEAVY = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "BATCH_MATMUL"}


def matmul_weight_slice(calibrated: bytes) -> list[str]:
    """Output tensor names of the ops that only compute data-dependent BATCH_MATMUL left operands.

    HA-CNN's region sampler multiplies feature maps by tent-weight matrices computed from the
    hard attention's translations (``theta`` -> sub-pixel sampling coordinates -> tent weights);
    8 bits cannot hold those coordinates over a whole feature map, so these few thousand values
    stay float32 while the matmuls, feature maps and convolutions are int8.

    The slice: walking back from each BATCH_MATMUL's first operand, every op whose outputs are
    used only inside the slice (or as that operand), stopping at convolutions and matmuls.
    """
    model = read_model(calibrated)
    keep = []
    for graph in model.subgraphs:
        ops, kinds = list(graph.operators), op_kinds(model, graph)
        _, consumers = _links(graph)
        outputs = {int(t) for t in graph.outputs}
        inside: set[int] = set()
        for i in reversed(range(len(ops))):  # consumers come after their producers
            if kinds[i] in _HEAVY:
                continue
            uses = [c for t in ops[i].outputs for c in consumers.get(int(t), [])]
            if not uses or any(int(t) in outputs for t in ops[i].outputs):
                continue
            if all(j in inside or (kinds[j] == "BATCH_MATMUL" and slot == 0) for j, slot in uses):
                inside.add(i)
        keep += [graph.tensors[int(t)].name.decode() for i in sorted(inside) for t in ops[i].outputs]
    return keep


# Ops that pool a feature map to one vector per image (in the embedding head).
_GLOBAL_POOLS = {"MEAN", "REDUCE_MAX", "SUM"}


def embedding_head_slice(calibrated: bytes) -> list[str]:
    """Output tensor names of the embedding head's unweighted ops: each global pool, the op
    whose map it pools, and the vector ops after the pools (concatenation, BN, L2 normalisation
    ...) but the fully connected layers.

    Per-tensor int8 gives a tensor one scale for all its channels; pooled maps and the vectors
    after them have channels of very different ranges that a BNNeck then scales up. The fully
    connected layers stay int8 (their outputs get their own scales; their weights are most of
    the head's bytes).
    """
    model = read_model(calibrated)
    out = []
    for graph in model.subgraphs:
        kinds = op_kinds(model, graph)
        out += [graph.tensors[int(t)].name.decode() for i in sorted(embedding_head_ops(model, graph))
                if kinds[i] != "FULLY_CONNECTED" for t in graph.operators[i].outputs]
    return out


def _rank(tensor) -> int:
    return 0 if tensor.shape is None else len(tensor.shape)  # the object API gives scalars None


def _is_global_pool(graph, op, kind: str) -> bool:
    """A reduction of a feature map `[B, H, W, C]` to one vector per image `[B, C]`."""
    return kind in _GLOBAL_POOLS and _rank(graph.tensors[int(op.inputs[0])]) == 4 \
        and _rank(graph.tensors[int(op.outputs[0])]) == 2


def embedding_head_ops(model, graph) -> set[int]:
    """Indices of the embedding head's ops in `graph` (a `ModelT` subgraph): walking back
    from the graph outputs through per-image vectors (rank <= 2) down to the global pools, plus
    the ops whose maps those pools read. (Pools inside the network, e.g. the GAP that predicts
    HA-CNN's hard-attention boxes, do not reach the output through vectors only.)"""
    ops, kinds = graph.operators, op_kinds(model, graph)
    producer, _ = _links(graph)
    head: set[int] = set()
    todo = [producer[int(t)] for t in graph.outputs if int(t) in producer]
    while todo:
        i = todo.pop()
        if i in head:
            continue
        head.add(i)
        if _is_global_pool(graph, ops[i], kinds[i]):
            continue  # the op producing the pooled map joins below, its inputs do not
        todo += [producer[int(t)] for t in ops[i].inputs
                 if int(t) in producer and _rank(graph.tensors[int(t)]) <= 2]
    pooled = {producer[int(ops[i].inputs[0])] for i in head
              if _is_global_pool(graph, ops[i], kinds[i]) and int(ops[i].inputs[0]) in producer}
    return head | pooled


# Ops between a softmax and the matmuls around it that only reshape or rescale (kept float with
# them so no int8 rounding falls between the energies and the softmax).
_ATTENTION_GLUE = {"RESHAPE", "TRANSPOSE", "SUB", "MUL", "MAXIMUM", "REDUCE_MAX", "SQUEEZE",
                   "EXPAND_DIMS"}


def softmax_attention_slice(calibrated: bytes) -> list[str]:
    """Output tensor names of self-attention's energy matmul, softmax and weighted-sum matmul.

    Self-attention (ADFL's Type I modules: ``softmax(Q K^T) V``, the channel Gram matrix
    ``softmax(X^T X)``) exponentiates dot products of whole feature vectors, whose range is too
    wide for one int8 scale. Kept float32 (inside XNNPACK) are each SOFTMAX, the BATCH_MATMUL producing its input, the
    BATCH_MATMUL(s) reading its output, and the reshape/rescale ops between them; the
    projections feeding them (convolutions) and everything after stay int8. HA-CNN's region
    sampler has no softmax, so this slice is empty for it.
    """
    model = read_model(calibrated)
    keep = []
    for graph in model.subgraphs:
        ops, kinds = graph.operators, op_kinds(model, graph)
        producer, consumers = _links(graph)
        inside: set[int] = set()
        for i in (i for i, kind in enumerate(kinds) if kind == "SOFTMAX"):
            inside.add(i)
            back = [producer.get(int(t)) for t in ops[i].inputs]
            while back:  # towards the energy matmul
                j = back.pop()
                if j is None or j in inside or kinds[j] not in _ATTENTION_GLUE | {"BATCH_MATMUL"}:
                    continue
                inside.add(j)
                if kinds[j] != "BATCH_MATMUL":
                    back += [producer.get(int(t)) for t in ops[j].inputs]
            ahead = [j for t in ops[i].outputs for j, _ in consumers.get(int(t), [])]
            while ahead:  # towards the weighted sum
                j = ahead.pop()
                if j in inside or kinds[j] not in {"RESHAPE", "TRANSPOSE", "BATCH_MATMUL"}:
                    continue
                inside.add(j)
                if kinds[j] != "BATCH_MATMUL":
                    ahead += [k for t in ops[j].outputs for k, _ in consumers.get(int(t), [])]
        keep += [graph.tensors[int(t)].name.decode() for i in sorted(inside) for t in ops[i].outputs]
    return keep


def xnnpack_float_only(calibrated: bytes) -> list[str]:
    """Output tensor names of the ops in `XNNPACK_FLOAT_ONLY`."""
    model = read_model(calibrated)
    return [graph.tensors[int(t)].name.decode() for graph in model.subgraphs
            for op, kind in zip(graph.operators, op_kinds(model, graph))
            if kind in XNNPACK_FLOAT_ONLY for t in op.outputs]


def quantize_int8(converter) -> tuple[bytes, list[dict], list[str]]:
    """Calibrate with `converter` (int8 settings already set), widen degenerate ranges, quantise
    everything but the float32 islands (`matmul_weight_slice`, `softmax_attention_slice`,
    `embedding_head_slice`, `xnnpack_float_only`).

    Args:
        converter: a `tf.lite.TFLiteConverter` with `optimizations`, `representative_dataset`
            and `TFLITE_BUILTINS_INT8` set, exactly as for `converter.convert()`.

    Returns:
        `(tflite_bytes, changes, float_ops)`: the int8 model (float32 input and output, like
        `converter.convert()` gives), what `widen_degenerate_ranges` changed and the output
        names of the ops kept float32.
    """
    patched, changes = widen_degenerate_ranges(tf_internals.calibrate(converter))
    float_nodes = sorted(set(matmul_weight_slice(patched)) | set(softmax_attention_slice(patched))
                         | set(embedding_head_slice(patched)) | set(xnnpack_float_only(patched)))
    return tf_internals.quantize(patched, float_nodes), changes, float_nodes
