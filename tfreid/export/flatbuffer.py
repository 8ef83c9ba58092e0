"""Reading, inspecting and writing `.tflite` flatbuffers (LiteRT's flatbuffer object API).

The export's graph rewrites (`tflite_rewrite`, `int8_ranges`, `dynamic_precision`) work on the
mutable `ModelT` object tree that `read_model` returns and `write_model` serialises; the helpers
here name its operators and tell weights (constant tensors) from activations.

Example:
    >>> model = read_model(pathlib.Path("hacnn-int8.tflite").read_bytes())
    >>> sorted(op_names(model))[:3]
    ['ADD', 'AVERAGE_POOL_2D', 'BATCH_MATMUL']
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

__all__ = ["FLOAT32", "INT32", "INT8", "constant_values", "is_constant", "op_kinds", "op_names",
           "opcode_index", "opcode_name", "read_model", "schema", "write_model"]

# Tensor element types (schema `TensorType`).
FLOAT32 = schema.TensorType.FLOAT32
INT8 = schema.TensorType.INT8
INT32 = schema.TensorType.INT32

_BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def read_model(data: bytes):
    """A `.tflite` flatbuffer as a mutable `ModelT`."""
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytes(data), 0))


def write_model(model) -> bytes:
    """Serialise a `ModelT` back to `.tflite` bytes."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _builtin(code) -> int:
    # Operator codes >= 127 live in `builtinCode`; older files only fill the legacy int8 field.
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def opcode_name(code) -> str:
    """An `OperatorCodeT`'s builtin name (e.g. ``"RESHAPE"``), ``"CUSTOM:<name>"`` for custom ops."""
    builtin = _builtin(code)
    if builtin == schema.BuiltinOperator.CUSTOM:
        custom = code.customCode
        return f"CUSTOM:{custom.decode() if isinstance(custom, bytes) else custom}"
    return _BUILTIN_NAMES.get(builtin, f"UNKNOWN:{builtin}")


def op_kinds(model, graph) -> list[str]:
    """The `opcode_name` of each operator of `graph` (a subgraph of `model`), in order."""
    return [opcode_name(model.operatorCodes[op.opcodeIndex]) for op in graph.operators]


def op_names(model) -> set[str]:
    """The names of the operators a model lists (see `opcode_name`)."""
    return {opcode_name(code) for code in model.operatorCodes}


def opcode_index(model, builtin: int) -> int:
    """The index of builtin operator `builtin` in `model.operatorCodes`, added if missing."""
    for i, code in enumerate(model.operatorCodes):
        if _builtin(code) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)  # 127 = "see builtinCode"
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def is_constant(model, tensor) -> bool:
    """Whether `tensor` holds data in the file (a weight), as opposed to an activation."""
    buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    return buffer is not None and buffer.data is not None and len(buffer.data) > 0


def constant_values(model, tensor) -> np.ndarray | None:
    """The values of a float32 constant tensor (flat), None for activations and other types."""
    if tensor.type != FLOAT32 or not is_constant(model, tensor):
        return None
    return np.frombuffer(np.asarray(model.buffers[tensor.buffer].data, np.uint8).tobytes(),
                         np.float32)
