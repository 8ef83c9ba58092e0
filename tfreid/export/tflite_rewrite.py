"""Exact rewrites of converted `.tflite` graphs that let LiteRT's XNNPACK delegate run all of them.

- `static_reshapes`: a RESHAPE whose target shape is computed at run time from the batch size
  gets the constant shape the converter inferred (XNNPACK refuses dynamically sized tensors).
- `symmetric_matmul_rhs` (int8): the right operand of an int8 BATCH_MATMUL is requantised to a
  symmetric scale (XNNPACK requires a zero point of 0 there).

Why and what it gains: docs/export.md.
"""

from __future__ import annotations

import numpy as np

from tfreid.export.flatbuffer import (INT8, INT32, is_constant, op_kinds, opcode_index, read_model,
                                      schema, write_model)

__all__ = ["static_reshapes", "symmetric_matmul_rhs"]


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
    model = read_model(data)
    count = 0
    for graph in model.subgraphs:
        for op, kind in zip(graph.operators, op_kinds(model, graph)):
            if kind != "RESHAPE":
                continue
            if len(op.inputs) < 2 or op.inputs[1] < 0 or is_constant(model, graph.tensors[op.inputs[1]]):
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
            shape.type = INT32
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


def symmetric_matmul_rhs(data: bytes) -> tuple[bytes, int]:
    """Requantise every int8 BATCH_MATMUL right operand with a non-zero zero point to symmetric.

    Returns `(model_bytes, count)` for an int8 `.tflite` flatbuffer `data`: the flatbuffer with a
    QUANTIZE op inserted before each such operand and their count (`data` itself when 0).
    """
    model = read_model(data)
    count = 0
    for graph in model.subgraphs:
        operators = []
        for op, kind in zip(graph.operators, op_kinds(model, graph)):
            rhs = graph.tensors[op.inputs[1]] if kind == "BATCH_MATMUL" \
                and len(op.inputs) > 1 and op.inputs[1] >= 0 else None
            q = rhs.quantization if rhs is not None else None
            if (rhs is None or rhs.type != INT8 or q is None or q.scale is None
                    or len(q.scale) != 1 or int(q.zeroPoint[0]) == 0 or is_constant(model, rhs)):
                operators.append(op)
                continue
            scale, zero = float(q.scale[0]), int(q.zeroPoint[0])
            bound = max(abs((-128 - zero) * scale), abs((127 - zero) * scale))
            sym = schema.TensorT()
            sym.shape, sym.shapeSignature = rhs.shape, rhs.shapeSignature
            sym.type, sym.name = INT8, rhs.name + b"/symmetric"
            sym.buffer = 0  # buffer 0 is the flatbuffer's empty buffer (activations)
            sym.quantization = schema.QuantizationParametersT()
            sym.quantization.scale = np.array([bound / 127.0], np.float32)
            sym.quantization.zeroPoint = np.array([0], np.int64)
            graph.tensors.append(sym)
            requantize = schema.OperatorT()
            requantize.opcodeIndex = opcode_index(model, schema.BuiltinOperator.QUANTIZE)
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
