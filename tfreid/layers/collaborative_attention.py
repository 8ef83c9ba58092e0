"""CAN's collaborative attention: each pair of adjacent part features merged by max pooling."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.layers.validation import check_positive_int


@keras.saving.register_keras_serializable(package="tfreid")
class CollaborativeAttention(keras.layers.Layer):
    """Max over every ``window`` adjacent horizontal part slices: ``n`` parts -> ``n - window + 1``.

    After adaptive pooling a part branch holds ``n`` stacked part features ``f_L0 .. f_L(n-1)``
    (``[B, n, 1, C]``). CAN concatenates each pair of neighbours ``[f_Lk; f_L(k+1)]`` (a
    ``2 x 1`` map) and max-pools it back to ``1 x 1``, giving ``n - 1`` "partial" features
    ``f_LPk = max(f_Lk, f_L(k+1))`` (elementwise). A feature then sees two adjacent body stripes
    instead of one, keeping the neighbourhood relation that hard slicing cuts (Table 3:
    +2.5 mAP for parts 1, 3, 5, 7 on Market-1501). The paper uses ``window = 2``; larger windows
    merge more neighbours the same way (a stride-1 max pooling along the part axis).

    Args:
        window: number of adjacent parts merged into one feature (integer >= 1; 1 is the
            identity). Default 2.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: part features ``[B, n, W, C]`` (parts along axis 1, top to bottom; ``W`` is 1 in
            CAN), static ``n >= window``.

    Returns:
        ``[B, n - window + 1, W, C]``; row ``k`` is the elementwise max of rows
        ``k .. k + window - 1``.

    Example:

    >>> parts = keras.random.normal((2, 7, 1, 4096))
    >>> CollaborativeAttention()(parts).shape
    (2, 6, 1, 4096)

    Reference:
        Collaborative Attention Network for Person Re-identification (CAN), Sec. 3.2
        ("Collaborative Attention Module"), Fig. 3, Table 3.
    """

    def __init__(self, window: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.window = check_positive_int("window", window)

    def _check_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or input_shape[1] is None:
            raise ValueError(
                f"CollaborativeAttention expects part features [B, n, W, C] with static n, "
                f"received shape {input_shape}."
            )
        if input_shape[1] < self.window:
            raise ValueError(
                f"CollaborativeAttention: {input_shape[1]} part(s) (input shape {input_shape}) "
                f"cannot be merged in windows of window={self.window} adjacent parts; "
                f"expected at least {self.window} parts."
            )
        return input_shape

    def call(self, inputs):
        n = self._check_shape(inputs.shape)[1]
        count = n - self.window + 1
        # Shifted slices + maximum rather than a pooling op: exact, any dtype, and the gradient
        # of each output goes to the larger of the two neighbours only.
        out = inputs[:, :count]
        for shift in range(1, self.window):
            out = ops.maximum(out, inputs[:, shift : shift + count])
        return out

    def compute_output_shape(self, input_shape):
        b, n, w, c = self._check_shape(input_shape)
        return (b, n - self.window + 1, w, c)

    def get_config(self):
        config = super().get_config()
        config.update({"window": self.window})
        return config
