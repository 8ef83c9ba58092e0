"""int8 TFLite quantisation that XNNPACK accepts and that keeps HA-CNN's sampling exact enough.

Two adjustments between calibration and quantisation (``converter._experimental_calibrate_only``
then `mlir_quantize`, the converter's own two steps, also used by `tf.lite.experimental.
QuantizationDebugger`):

1. `widen_degenerate_ranges`. Why: post-training int8 quantisation gives every activation tensor the scale
``(max - min) / 255`` of the values seen on the representative images. A tensor that is (almost)
constant zero on all of them — a "dead" ReLU, e.g. HA-CNN's one-channel soft spatial attention
map when its 1x1 conv weight and BN shift are negative — gets a calibrated range of ~0, which
the converter only nudges to ``[0, 2e-6]`` (scale 7.8e-9). That is a valid quantisation of a
zero tensor, and LiteRT's reference kernels run it, but XNNPACK's int8 kernels bound the ratios
between the scales of connected tensors (a convolution needs
``input_scale * filter_scale / output_scale < 256``; ADD needs each
``input_scale / output_scale`` in ``[2^-10, 2^8)``; MUL and MEAN have similar windows), so the
delegate fails to prepare the whole graph ("failed to create XNNPACK runtime") and the model runs
several times slower on the builtin kernels.

The fix keeps the network and the calibration and changes only such degenerate ranges: every
activation range whose width is below 2^-10 of the scale its
producing op gives it from its inputs (`_reference_width`) is widened to that scale (zero stays
inside, so a constant-zero tensor is still exactly zero); then `mlir_quantize` quantises as the
converter would have. Values inside a widened range are smaller than 1/4 of a quantisation step
of the new range, i.e. below the quantisation noise its inputs already carry, so the parity
bounds are unaffected (measured: see README, deployment).

2. Float32 islands: `matmul_weight_slice`, the few ops computing the region sampler's sampling
weights from the hard attention's translations (8 bits cannot hold sub-pixel coordinates over an
80-row map; see the function), and `XNNPACK_FLOAT_ONLY`, cheap ops XNNPACK has no int8 kernel
for. Every convolution, matmul, max pool, embedding head and feature tensor is int8.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEGENERATE_RATIO", "XNNPACK_FLOAT_ONLY", "matmul_weight_slice", "quantize_int8",
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


def _constant(model, tensor) -> np.ndarray | None:
    """The float values of a constant tensor (weights), None for activations."""
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    if data is None or len(data) == 0 or tensor.type != 0:  # 0 = TensorType.FLOAT32
        return None
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float32)


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
            `TFLiteConverter` returns with `_experimental_calibrate_only = True`).

    Returns:
        `(model_bytes, changes)`: the patched flatbuffer and one dict per widened tensor
        (`tensor`, `op`, `old` range, `new` range).
    """
    from tfreid.export.tflite_rewrite import op_names, read_model, write_model

    model = read_model(calibrated)
    names = op_names()
    changes = []
    for graph in model.subgraphs:
        tensors = graph.tensors

        def calibrated_range(index):
            q = tensors[index].quantization if index >= 0 else None
            if q is None or q.min is None or q.max is None or len(q.min) != 1:
                return None
            # the quantiser always makes the range contain zero; its width is what sets the scale
            return min(float(q.min[0]), 0.0), max(float(q.max[0]), 0.0)

        for op in graph.operators:  # execution order: inputs are final before their consumers
            code = model.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
            inputs = []
            for index in op.inputs:
                if index < 0:
                    continue
                span = calibrated_range(index)
                inputs.append((span[1] - span[0], None) if span else
                              (None, _constant(model, tensors[index])))
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


# Ops LiteRT's XNNPACK delegate (ai-edge-litert 2.x) has no int8 kernel for (measured: left to
# the builtin kernels, each splitting XNNPACK's graph). Kept float32 they run inside XNNPACK
# between a DEQUANTIZE and a QUANTIZE to the scale the int8 op would have had, which is at least
# as accurate; HA-CNN: the Inception-A average pools and the L2 normalisation's RSQRT/MINIMUM
# (int8 HA-CNN at batch 1: 15 -> 8 ms, fastest of 15 calls, shared CPU).
XNNPACK_FLOAT_ONLY = {"AVERAGE_POOL_2D", "RSQRT", "MINIMUM", "ABS"}

# Heavy ops never kept in float by `matmul_weight_slice` (the slice stops at them).
_HEAVY = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "BATCH_MATMUL"}


def matmul_weight_slice(calibrated: bytes) -> list[str]:
    """Output tensor names of the ops that only compute data-dependent BATCH_MATMUL left operands.

    HA-CNN's region sampler multiplies feature maps by tent-weight matrices computed from the
    hard attention's translations: ``theta = tanh(FC(GAP(x)))`` -> sampling coordinates
    ``pix = slope * j + (theta + 1 - s) * n / 2`` -> ``relu(1 - |pix - i|)``. Those are
    sub-pixel coordinates over the whole feature map height (up to 80 rows): one int8 step of
    ``pix - i`` is ~0.6 pixel and of theta ~0.3 pixel, so a full-integer graph samples the wrong
    rows and the local half of the embedding drifts (measured on the trained HA-CNN: local-half
    cosine 0.92, whole embedding 0.96 < the 0.98 bound). These ops act on ``[B, T, rows, H]``
    tensors (a few thousand values) and are kept float32; the matmuls, the feature maps and every
    convolution stay int8.

    The slice: walking back from each BATCH_MATMUL's first operand, every op whose outputs are
    used only inside the slice (or as that operand), stopping at convolutions and matmuls.
    """
    from tfreid.export.tflite_rewrite import op_names, read_model

    model = read_model(calibrated)
    names = op_names()
    keep = []
    for graph in model.subgraphs:
        ops = list(graph.operators)
        kinds = [names.get(max(model.operatorCodes[op.opcodeIndex].builtinCode,
                               model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode), "CUSTOM")
                 for op in ops]
        consumers: dict[int, list[tuple[int, int]]] = {}
        for i, op in enumerate(ops):
            for slot, t in enumerate(op.inputs):
                consumers.setdefault(int(t), []).append((i, slot))
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


def xnnpack_float_only(calibrated: bytes) -> list[str]:
    """Output tensor names of the ops in `XNNPACK_FLOAT_ONLY`."""
    from tfreid.export.tflite_rewrite import op_names, read_model

    model, names = read_model(calibrated), op_names()
    return [graph.tensors[int(t)].name.decode() for graph in model.subgraphs
            for op in graph.operators
            if names.get(max(model.operatorCodes[op.opcodeIndex].builtinCode,
                             model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode))
            in XNNPACK_FLOAT_ONLY for t in op.outputs]


def quantize_int8(converter) -> tuple[bytes, list[dict], list[str]]:
    """Calibrate with `converter` (int8 settings already set), widen degenerate ranges, quantise
    everything but the `matmul_weight_slice` (kept float32).

    Args:
        converter: a `tf.lite.TFLiteConverter` with `optimizations`, `representative_dataset`
            and `TFLITE_BUILTINS_INT8` set, exactly as for `converter.convert()`.

    Returns:
        `(tflite_bytes, changes, float_ops)`: the int8 model (float32 input and output, like
        `converter.convert()` gives), what `widen_degenerate_ranges` changed and the output
        names of the ops kept float32.
    """
    import tensorflow as tf
    # The calibrate-then-quantise split is the converter's own two-step path (also used by
    # tf.lite.experimental.QuantizationDebugger); it has no public entry point.
    from tensorflow.lite.python.convert import mlir_quantize

    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    patched, changes = widen_degenerate_ranges(calibrated)
    float_nodes = sorted(set(matmul_weight_slice(patched)) | set(xnnpack_float_only(patched)))
    quantized = mlir_quantize(patched, disable_per_channel=False, fully_quantize=False,
                              input_data_type=tf.float32, output_data_type=tf.float32,
                              denylisted_nodes=float_nodes or None)
    return bytes(quantized), changes, float_nodes
