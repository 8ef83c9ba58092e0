"""Model size and cost: learned parameters and multiply-accumulates (MACs) per image.

Papers (HA-CNN included) report "FLOPs" that are in fact multiply-accumulates of the convolution
and fully connected layers; `count_flops` reports that quantity and names it MACs.
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
import tensorflow as tf

# Variables holding running statistics, not learned parameters (PyTorch calls them buffers).
_STATISTICS = ("moving_mean", "moving_variance")
_CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")


def count_params(model: keras.Model, exclude_classifiers: bool = True, include_statistics: bool = False) -> int:
    """Number of learned parameters of ``model``, the way papers and PyTorch count them.

    Counts every weight (trainable or frozen) once, shared weights once, but not BatchNorm's
    running mean / variance (``include_statistics=True`` adds them; Keras' own
    ``model.count_params()`` includes them). Classifiers are the top-level layers whose name starts
    with ``"classifier"`` (the tfreid convention, e.g. ``classifier_global``); they depend on the
    number of training identities and are excluded by default.

    Args:
        model: a built `keras.Model`.
        exclude_classifiers: skip layers named ``classifier*``. Default True.
        include_statistics: also count BN ``moving_mean`` / ``moving_variance``. Default False.

    Returns:
        The parameter count (int).

    Example:

    >>> from tfreid.models import build_model
    >>> count_params(build_model("hacnn", 751))
    2923458
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model, received {type(model).__name__}.")
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built; call it on data or build it first.")
    seen, total = set(), 0
    for layer in model.layers:
        if exclude_classifiers and layer.name.startswith("classifier"):
            continue
        for w in layer.weights:
            if id(w) in seen or (not include_statistics and w.name in _STATISTICS):
                continue
            seen.add(id(w))
            total += int(np.prod(w.shape))
    return total


def _dims(tensor, what):
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape.as_list()):
        raise ValueError(f"count_flops: {what} {tensor.name} has unknown shape {shape}; give a static input_shape.")
    return shape.as_list()


def _op_macs(op) -> int:
    """MACs of one graph op (0 for ops that are not multiply-accumulate layers)."""
    t = op.type
    if t in ("Conv2D", "Conv3D"):
        out = _dims(op.outputs[0], "output")
        kernel = _dims(op.inputs[1], "kernel")  # [*k, c_in / groups, c_out]
        return int(np.prod(out)) * int(np.prod(kernel[:-1]))
    if t == "DepthwiseConv2dNative":
        out = _dims(op.outputs[0], "output")
        kh, kw = _dims(op.inputs[1], "kernel")[:2]
        return int(np.prod(out)) * kh * kw
    if t in ("Conv2DBackpropInput", "Conv3DBackpropInputV2"):  # transposed convolutions
        grad = _dims(op.inputs[2], "input")  # [N, *spatial, c_in]
        kernel = _dims(op.inputs[1], "kernel")  # [*k, c_out, c_in]
        return int(np.prod(grad)) * int(np.prod(kernel[:-1]))
    if t == "MatMul":
        a = _dims(op.inputs[0], "operand")
        k = a[0] if op.get_attr("transpose_a") else a[1]
        return int(np.prod(_dims(op.outputs[0], "output"))) * k
    if t in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a = _dims(op.inputs[0], "operand")
        k = a[-2] if op.get_attr("adj_x") else a[-1]
        return int(np.prod(_dims(op.outputs[0], "output"))) * k
    if t == "Einsum":
        # Every index (output or contracted) is one loop level of the multiply-accumulate.
        equation = op.get_attr("equation").decode()
        sizes = {}
        for spec, tensor in zip(equation.split("->")[0].split(","), op.inputs):
            if "." in spec:
                raise ValueError(f"count_flops: Einsum with ellipsis {equation!r} is not supported.")
            sizes.update(zip(spec, _dims(tensor, "operand")))
        return int(np.prod(list(sizes.values())))
    return 0


def count_flops(model: keras.Model, input_shape, by_op_type: bool = False):
    """Multiply-accumulates (MACs, the papers' "FLOPs") of one forward pass, per image.

    Traces ``model(x, training=False)`` on one image of ``input_shape`` into a TF graph and adds up
    the MACs of every Conv2D/Conv3D, depthwise and transposed convolution, MatMul (Dense),
    BatchMatMul and Einsum op, from the concrete shapes in the graph. Working on the traced graph
    counts what actually runs: nested and shared layers, regions folded into the batch, the
    matmuls of the bilinear region sampler. Element-wise ops, BN, pooling, resizing and
    activations are not counted (as in the papers). Since the trace has batch 1, the total is per
    image.

    Args:
        model: a `keras.Model` with one image input.
        input_shape: ``(H, W, C)`` without the batch dimension.
        by_op_type: also return a dict ``{op type: MACs}``.

    Returns:
        ``int`` MACs, or ``(int, dict)`` when ``by_op_type``.

    Example:

    >>> m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same")])
    >>> count_flops(m, (8, 8, 3))  # 8 * 8 * 4 outputs x 3 * 3 * 3 MACs
    6912
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model, received {type(model).__name__}.")
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in input_shape):
        raise ValueError(f"`input_shape` must be a tuple of positive integers (no batch), received {input_shape!r}.")
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != len(shape) + 1:
        raise ValueError(
            f"count_flops needs a model with one input of rank {len(shape) + 1} to match "
            f"input_shape={input_shape!r}; model inputs are {[tuple(t.shape) for t in model.inputs]}."
        )
    dtype = model.inputs[0].dtype
    fn = tf.function(lambda x: model(x, training=False), autograph=False)
    graph = fn.get_concrete_function(tf.TensorSpec((1, *shape), dtype)).graph

    per_type: dict[str, int] = {}
    for op in graph.get_operations():
        if op.type in _CALL_OPS:
            # Keras layers trace inline; a nested tf.function would hide its ops from this count.
            raise ValueError(
                f"count_flops: model {model.name!r} calls a nested function ({op.type} {op.name}); "
                "only inline-traced models are supported."
            )
        macs = _op_macs(op)
        if macs:
            per_type[op.type] = per_type.get(op.type, 0) + macs
    total = sum(per_type.values())
    return (total, per_type) if by_op_type else total

