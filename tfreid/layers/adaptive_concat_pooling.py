"""Adaptive concatenation pooling: adaptive max and average pooling, concatenated (CAN Eq. 1)."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from tfreid.layers.validation import check_feature_map

BIN_RULES = ("paper", "pytorch")


def paper_pool_params(input_size: int, output_size: int) -> tuple[int, int]:
    """``(kernel, stride)`` of CAN's Eq. (1) for one axis: ``stride = floor(IS / OS)``,
    ``kernel = IS - (OS - 1) * stride``, no padding (so exactly ``OS`` windows fit)."""
    stride = input_size // output_size
    return input_size - (output_size - 1) * stride, stride


def _check_output_size(value):
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        items = tuple(value)
    except TypeError:
        items = ()
    if len(items) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in items
    ):
        raise ValueError(
            "`output_size` must be a positive integer or a pair (height, width) of positive "
            f"integers, received output_size={value!r}."
        )
    return tuple(int(v) for v in items)


@keras.saving.register_keras_serializable(package="tfreid")
class AdaptiveConcatPooling2D(keras.layers.Layer):
    """Adaptive max pooling and adaptive average pooling to a fixed size, concatenated.

    CAN pools every branch's last-stage map to a fixed grid (``1 x 1`` global block, ``n x 1``
    parts) with both max and average pooling and concatenates them, doubling the channels
    (2048 -> 4096), because each pooling alone loses some information. The output is
    ``concat([max, avg], axis=-1)`` (max first, like fastai's ``AdaptiveConcatPool2d`` that the
    paper's "Adaptive Concatenation Pooling" refers to).

    Two rules place the ``OS`` windows along an axis of length ``IS``:

    - ``"paper"`` (default), CAN Eq. (1): ordinary pooling with ``stride = floor(IS / OS)``,
      ``kernel = IS - (OS - 1) * stride`` and no padding. All windows have the same size and
      they overlap when ``IS`` is not a multiple of ``OS``. Runs as one `MaxPooling2D` /
      `AveragePooling2D`-style op (cheap, TFLite builtin).
    - ``"pytorch"``: PyTorch's ``AdaptiveAvg/MaxPool2d`` bins, also used by
      `keras.layers.AdaptiveAveragePooling2D` / `AdaptiveMaxPooling2D` (Keras >= 3.13): window
      ``i`` is ``[floor(i * IS / OS), ceil((i + 1) * IS / OS))``, so sizes vary by one.

    Worked example (``IS = 24`` rows, the height of ResNet-50's stride-1 stage 4 at 384x128;
    windows as half-open row ranges):

    ======  ==========================================  =============================================
    ``OS``  ``"paper"`` (stride, kernel)                ``"pytorch"``
    ======  ==========================================  =============================================
    3       (8, 8): [0,8) [8,16) [16,24)                [0,8) [8,16) [16,24)  (identical)
    5       (4, 8): [0,8) [4,12) [8,16) [12,20) [16,24) [0,5) [4,10) [9,15) [14,20) [19,24)
    7       (3, 6): [0,6) [3,9) [6,12) ... [18,24)      [0,4) [3,7) [6,11) [10,14) [13,18) [17,21)
                                                        [20,24)
    ======  ==========================================  =============================================

    So with 5 or 7 parts the paper's windows are wider (8 or 6 rows instead of 5-6 or 4-5) and
    every part overlaps its neighbours by half a window; the two rules agree whenever ``OS``
    divides ``IS`` (and for ``OS = 1``, the global block). Weights trained with one rule are not
    interchangeable with the other for such sizes.

    The ``"pytorch"`` rule calls ``keras.ops.adaptive_max_pool`` / ``adaptive_average_pool``
    except along axes pooled to size 1, which are reduced directly: Keras' two-window method
    then builds an empty ``IS + 1`` window, and oneDNN's max pooling dies on it with SIGFPE
    (TF 2.21 / Keras 3.15: ``keras.layers.AdaptiveMaxPooling2D((5, 1))`` on any ``[B, H, W, C]``
    kills the process).

    Args:
        output_size: int or ``(height, width)``: output grid size ``OS`` (each at most the input
            size along its axis).
        bin_rule: ``"paper"`` (CAN Eq. 1, default) or ``"pytorch"`` (PyTorch / Keras adaptive
            pooling bins).
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: ``[B, H, W, C]`` with static ``H``, ``W`` and ``C``.

    Returns:
        ``[B, OS_h, OS_w, 2 C]``: adaptive max pooling in channels ``[0, C)``, adaptive average
        pooling in ``[C, 2C)``.

    Example:

    >>> x = keras.random.normal((2, 24, 8, 2048))
    >>> AdaptiveConcatPooling2D((7, 1))(x).shape
    (2, 7, 1, 4096)

    Reference:
        Collaborative Attention Network for Person Re-identification (CAN), Sec. 3.2, Eq. (1),
        Fig. 3, Table 1; J. Howard et al., fastai ``AdaptiveConcatPool2d``.
    """

    def __init__(self, output_size, bin_rule: str = "paper", **kwargs):
        super().__init__(**kwargs)
        self.output_size = _check_output_size(output_size)
        if bin_rule not in BIN_RULES:
            raise ValueError(f"`bin_rule` must be one of {BIN_RULES}, received bin_rule={bin_rule!r}.")
        self.bin_rule = bin_rule

    def _check_shape(self, input_shape):
        input_shape = check_feature_map(self, input_shape, static_spatial=True)
        for axis, size, out in zip(("height", "width"), input_shape[1:3], self.output_size):
            if out > size:
                raise ValueError(
                    f"AdaptiveConcatPooling2D: output_size={self.output_size} exceeds the input "
                    f"{axis} {size} (input shape {input_shape}); pool to at most the input size."
                )
        return input_shape

    def _paper(self, inputs):
        _, h, w, _ = inputs.shape
        (kh, sh), (kw, sw) = (paper_pool_params(i, o) for i, o in zip((h, w), self.output_size))
        kw_ = dict(pool_size=(kh, kw), strides=(sh, sw), padding="valid")
        return ops.max_pool(inputs, **kw_), ops.average_pool(inputs, **kw_)

    def _pytorch(self, inputs):
        return tuple(self._pytorch_one(inputs, kind) for kind in ("max", "avg"))

    def _pytorch_one(self, x, kind):
        reduce = ops.max if kind == "max" else ops.mean
        adaptive = ops.adaptive_max_pool if kind == "max" else ops.adaptive_average_pool
        out_h, out_w = self.output_size
        # Size-1 axes first (one bin = the whole axis), see the class docstring for why.
        if out_w == 1:
            x = reduce(x, axis=2, keepdims=True)
        if out_h == 1:
            x = reduce(x, axis=1, keepdims=True)
        _, h, w, c = x.shape
        if (h, w) == (out_h, out_w):
            return x
        if h > 1 and w > 1:
            return adaptive(x, (out_h, out_w), data_format="channels_last")
        # One axis left to pool and the other has size 1: pool it as a 1-D signal.
        if w == 1:
            y = adaptive(ops.reshape(x, (-1, h, c)), out_h, data_format="channels_last")
            return ops.reshape(y, (-1, out_h, 1, c))
        y = adaptive(ops.reshape(x, (-1, w, c)), out_w, data_format="channels_last")
        return ops.reshape(y, (-1, 1, out_w, c))

    def call(self, inputs):
        self._check_shape(inputs.shape)
        pooled_max, pooled_avg = self._paper(inputs) if self.bin_rule == "paper" else self._pytorch(inputs)
        return ops.concatenate([pooled_max, pooled_avg], axis=-1)

    def compute_output_shape(self, input_shape):
        b, _, _, c = self._check_shape(input_shape)
        return (b, *self.output_size, 2 * c)

    def get_config(self):
        config = super().get_config()
        config.update({"output_size": self.output_size, "bin_rule": self.bin_rule})
        return config
