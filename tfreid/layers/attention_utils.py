"""Shape checks shared by the ADFL attention layers (private helpers, no public layer)."""

from __future__ import annotations


def check_feature_map(layer, input_shape, min_channels: int = 1):
    """``input_shape`` as a tuple if it is ``[B, H, W, C]`` with static H, W, C, else ValueError.

    ``min_channels`` is the smallest C for which the layer's reduced projections keep at least
    one channel (C // reduction >= 1).
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 4 or any(d is None for d in input_shape[1:]):
        raise ValueError(
            f"{type(layer).__name__} expects a feature map [B, H, W, C] with static H, W and C, "
            f"received shape {input_shape}."
        )
    if input_shape[-1] < min_channels:
        raise ValueError(
            f"{type(layer).__name__}: channels C={input_shape[-1]} must be >= {min_channels} "
            "(the reduction) so that the reduced projection has at least one channel."
        )
    return input_shape


def attention_dtype(compute_dtype) -> str:
    """The dtype the attention maths runs in: float32 under mixed precision (dot products over
    hundreds of positions and softmaxes over thousands of entries overflow or lose all precision
    in float16/bfloat16), else the layer's own compute dtype (float32, or float64 in tests)."""
    name = getattr(compute_dtype, "name", compute_dtype)
    return "float32" if name in ("float16", "bfloat16") else name
