"""The compute-dtype rule shared by the ADFL attention layers (private helper, no public layer)."""

from __future__ import annotations


def attention_dtype(compute_dtype) -> str:
    """The dtype the attention maths runs in: float32 under mixed precision (dot products over
    hundreds of positions and softmaxes over thousands of entries overflow or lose all precision
    in float16/bfloat16), else the layer's own compute dtype (float32, or float64 in tests)."""
    name = getattr(compute_dtype, "name", compute_dtype)
    return "float32" if name in ("float16", "bfloat16") else name
