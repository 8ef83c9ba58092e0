"""Exact rewrites of converted `.tflite` graphs that let LiteRT's XNNPACK delegate run all of them.

The exported graphs keep a dynamic batch dimension (`[-1, H, W, 3]`, so clients resize the input
for batches). Keras layers that reshape with the runtime batch size (`ops.shape(x)[0]`, e.g.
HA-CNN's `RegionSampler`, attention blocks that flatten `H x W`) convert to
`SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE`: a RESHAPE whose target shape is computed at run time.
LiteRT then allocates its output dynamically, and XNNPACK refuses dynamic tensors, so every op
touching them (the region sampler's batched matmuls included) falls back to the builtin kernels
and splits the delegated graph.

`static_reshapes` gives each such RESHAPE the constant target shape the converter already
inferred for its output (`shape_signature`, with at most one unknown dimension, written as -1):
for every batch size that is the same shape the runtime computation gives, so the model is
unchanged; the shape-computing ops, now unused, are removed.

`symmetric_matmul_rhs` (int8 models): XNNPACK's int8 BATCH_MATMUL treats its second operand like
weights and requires it symmetric (zero point 0); a non-negative activation (a ReLU output, the
region sampler's feature maps) is calibrated to ``[0, max]`` with zero point -128, so XNNPACK
leaves those matmuls to the builtin int8 kernel (10-40x slower here). The quantiser gives
RESHAPE/TRANSPOSE outputs the scale of their input, so this cannot be set by calibration
ranges without also coarsening the convolutions that read the same feature map; instead a
QUANTIZE (int8 -> int8 requantisation, which XNNPACK runs) is inserted before each such operand,
to the symmetric scale covering the same real range (``max(|min|, |max|) / 127``). The values
are the same up to one rounding at the new scale.
"""

from __future__ import annotations

import numpy as np

__all__ = ["op_names", "read_model", "static_reshapes", "symmetric_matmul_rhs", "write_model"]


def read_model(data: bytes):
    """A `.tflite` flatbuffer as a mutable `ModelT` (LiteRT's flatbuffer object API)."""
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytes(data), 0))


def write_model(model) -> bytes:
    """Serialise a `ModelT` back to `.tflite` bytes."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def op_names() -> dict[int, str]:
    """Builtin operator code -> name (e.g. 22 -> "RESHAPE")."""
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _is_constant(model, tensor) -> bool:
    return tensor.buffer < len(model.buffers) and model.buffers[tensor.buffer].data is not None \
        and len(model.buffers[tensor.buffer].data) > 0


def _drop_unused_ops(graph) -> int:
    """Remove operators none of whose outputs is read (by an op or as a graph output)."""
    removed = 0
    while True:
        used = set(graph.outputs.tolist() if hasattr(graph.outputs, "tolist") else graph.outputs)
        for op in graph.operators:
            used.update(int(i) for i in op.inputs)
        keep = [op for op in graph.operators if any(int(o) in used for o in op.outputs)]
        if len(keep) == len(graph.operators):
            return removed
        removed += len(graph.operators) - len(keep)
        graph.operators = keep


def static_reshapes(data: bytes) -> tuple[bytes, int]:
    """Replace run-time-computed RESHAPE targets by their inferred constant shapes.

    Args:
        data: a `.tflite` flatbuffer (any quantisation).

    Returns:
        `(model_bytes, count)`: the rewritten flatbuffer and how many RESHAPEs were made static
        (0: `data` is returned unchanged).
    """
    from ai_edge_litert import schema_py_generated as schema

    model = read_model(data)
    names = op_names()
    count = 0
    for graph in model.subgraphs:
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) != "RESHAPE":
                continue
            if len(op.inputs) < 2 or op.inputs[1] < 0 or _is_constant(model, graph.tensors[op.inputs[1]]):
                continue
            out = graph.tensors[op.outputs[0]]
            signature = out.shapeSignature if out.shapeSignature is not None else out.shape
            if signature is None or sum(int(d) < 0 for d in signature) > 1:
                continue  # more than one unknown dimension: the runtime computation is needed
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(np.asarray(signature, np.int32).tobytes(), np.uint8)
            model.buffers.append(buffer)
            shape = schema.TensorT()
            shape.shape = np.array([len(signature)], np.int32)
            shape.type = schema.TensorType.INT32
            shape.buffer = len(model.buffers) - 1
            shape.name = out.name + b"/static_shape"
            graph.tensors.append(shape)
            inputs = np.array(op.inputs, np.int32)  # the object API hands out read-only views
            inputs[1] = len(graph.tensors) - 1
            op.inputs = inputs
            count += 1
        if count:
            _drop_unused_ops(graph)
    if not count:
        return bytes(data), 0
    _drop_unused_opcodes(model)
    return write_model(model), count


def _drop_unused_opcodes(model) -> None:
    """Forget operator codes no operator uses any more (the op list a reader sees)."""
    used = sorted({op.opcodeIndex for graph in model.subgraphs for op in graph.operators})
    remap = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for graph in model.subgraphs:
        for op in graph.operators:
            op.opcodeIndex = remap[op.opcodeIndex]


def _opcode_index(model, builtin: int) -> int:
    from ai_edge_litert import schema_py_generated as schema

    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # the legacy int8 field (127 = "see builtinCode")
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def symmetric_matmul_rhs(data: bytes) -> tuple[bytes, int]:
    """Requantise every int8 BATCH_MATMUL right operand with a non-zero zero point to symmetric.

    Args:
        data: an int8 `.tflite` flatbuffer.

    Returns:
        `(model_bytes, count)`: the rewritten flatbuffer and how many QUANTIZE ops were inserted
        (0: `data` is returned unchanged).
    """
    from ai_edge_litert import schema_py_generated as schema

    model = read_model(data)
    count = 0
    for graph in model.subgraphs:
        operators = []
        for op in graph.operators:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            rhs = graph.tensors[op.inputs[1]] if builtin == schema.BuiltinOperator.BATCH_MATMUL \
                and len(op.inputs) > 1 and op.inputs[1] >= 0 else None
            q = rhs.quantization if rhs is not None else None
            if (rhs is None or rhs.type != schema.TensorType.INT8 or q is None or q.scale is None
                    or len(q.scale) != 1 or int(q.zeroPoint[0]) == 0 or _is_constant(model, rhs)):
                operators.append(op)
                continue
            scale, zero = float(q.scale[0]), int(q.zeroPoint[0])
            bound = max(abs((-128 - zero) * scale), abs((127 - zero) * scale))
            sym = schema.TensorT()
            sym.shape, sym.shapeSignature = rhs.shape, rhs.shapeSignature
            sym.type, sym.name = schema.TensorType.INT8, rhs.name + b"/symmetric"
            sym.buffer = 0  # buffer 0 is the flatbuffer's empty buffer (activations)
            sym.quantization = schema.QuantizationParametersT()
            sym.quantization.scale = np.array([bound / 127.0], np.float32)
            sym.quantization.zeroPoint = np.array([0], np.int64)
            graph.tensors.append(sym)
            requantize = schema.OperatorT()
            requantize.opcodeIndex = _opcode_index(model, schema.BuiltinOperator.QUANTIZE)
            requantize.inputs = np.array([op.inputs[1]], np.int32)
            requantize.outputs = np.array([len(graph.tensors) - 1], np.int32)
            inputs = np.array(op.inputs, np.int32)
            inputs[1] = len(graph.tensors) - 1
            op.inputs = inputs
            operators += [requantize, op]
            count += 1
        graph.operators = operators
    if not count:
        return bytes(data), 0
    return write_model(model), count
