"""Shape checks of tfreid layers: a bad input raises ValueError naming the layer, the argument
and the received shape. The scalar argument checks live in `tfreid.checks`."""

from __future__ import annotations

from tfreid.checks import check_bool, check_choice, check_positive_int

__all__ = ["check_bool", "check_choice", "check_feature_map", "check_positive_int"]
PADDINGS = ("same", "symmetric")  # TF's, PyTorch's (k // 2 on every side)


def _join(items) -> str:
    """``["H", "W", "C"]`` -> ``"H, W and C"``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def check_feature_map(layer, shape, *, reduction: int = 1, static_spatial: bool = False,
                      static_channels: bool = True, name: str | None = None,
                      reduction_name: str = "reduction") -> tuple:
    """``shape`` as a tuple if it is a feature map ``[B, H, W, C]``, else ValueError.

    The error names ``layer``'s class, the argument (``name``), the received shape, what was
    expected and which dimension is wrong.

    Args:
        layer: the layer doing the check.
        shape: the shape to check (tuple, list or ``TensorShape``).
        reduction: if > 1, C (when known) must be >= ``reduction`` so that a reduced projection
            of ``C // reduction`` channels keeps at least one. Default 1 (no check).
        static_spatial: H and W must be known. Default False.
        static_channels: C must be known. Default True.
        name: the call argument ``shape`` belongs to (e.g. ``"query"``), or None.
        reduction_name: the layer argument ``reduction`` comes from. Default ``"reduction"``.
    """
    shape = tuple(shape)
    owner = type(layer).__name__
    needed = [d for d, on in (("H", static_spatial), ("W", static_spatial), ("C", static_channels)) if on]
    if len(shape) != 4:
        problem = f"rank {len(shape)}, expected 4"
    else:
        unknown = [d for d, size in zip("HWC", shape[1:]) if d in needed and size is None]
        problem = f"{_join(unknown)} {'is' if len(unknown) == 1 else 'are'} not static" if unknown else None
    if problem:
        what = f"`{name}` to be a feature map" if name else "a feature map"
        static = f" with static {_join(needed)}" if needed else ""
        raise ValueError(f"{owner} expects {what} [B, H, W, C]{static}, received shape {shape} ({problem}).")
    channels = shape[-1]
    if reduction > 1 and channels is not None and channels < reduction:
        arg = f" `{name}`" if name else ""
        raise ValueError(
            f"{owner}:{arg} channels C={channels} must be >= {reduction_name}={reduction} so that the "
            f"reduced projections keep C // {reduction_name} >= 1 channels, received shape {shape}."
        )
    return shape
