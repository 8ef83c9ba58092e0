"""2-D max or average pooling with PyTorch's explicit padding (``padding=pool_size // 2``)."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.layers.validation import check_choice, check_feature_map, check_positive_int


@keras.saving.register_keras_serializable(package="tfreid")
class PaddedPooling2D(keras.layers.Layer):
    """Square pooling after ``pool_size // 2`` padding on every side, as PyTorch's
    ``MaxPool2d(k, s, padding=k // 2)`` / ``AvgPool2d(k, s, padding=k // 2)``.

    Two differences from Keras's ``"same"`` pooling: a strided pool on an even size pads both
    sides (Keras pads only the bottom/right), and the average counts the zero padding
    (PyTorch's ``count_include_pad=True``; Keras divides by the in-image pixels only). Max pooling
    pads by repeating the edge, which every window touching the border already contains, so the
    result equals PyTorch's ``-inf`` padding in any dtype.

    Args:
        mode: ``"max"`` or ``"avg"``.
        pool_size: odd square window (positive integer). Default 3.
        strides: stride (positive integer). Default 1.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: ``[B, H, W, C]``.

    Returns:
        ``[B, floor((H - 1) / s) + 1, floor((W - 1) / s) + 1, C]``.

    Example:

    >>> PaddedPooling2D("max", 3, strides=2)(keras.ops.ones((1, 6, 4, 2))).shape
    (1, 3, 2, 2)
    >>> float(PaddedPooling2D("avg")(keras.ops.ones((1, 3, 3, 1)))[0, 0, 0, 0])  # 4 of 9 in the image
    0.4444444477558136
    """

    def __init__(self, mode: str, pool_size: int = 3, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, ("max", "avg"))
        self.pool_size = check_positive_int("pool_size", pool_size)
        if self.pool_size % 2 == 0:
            raise ValueError(f"`pool_size` must be odd, received pool_size={pool_size!r}.")
        self.strides = check_positive_int("strides", strides)

    def call(self, inputs):
        p = self.pool_size // 2
        x = ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="symmetric" if self.mode == "max" else "constant")
        pool = ops.max_pool if self.mode == "max" else ops.average_pool
        return pool(x, self.pool_size, strides=self.strides, padding="valid")

    def compute_output_shape(self, input_shape):
        b, h, w, c = check_feature_map(self, input_shape)
        s = self.strides
        return (b, h if h is None else (h - 1) // s + 1, w if w is None else (w - 1) // s + 1, c)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "pool_size": self.pool_size, "strides": self.strides})
        return config
