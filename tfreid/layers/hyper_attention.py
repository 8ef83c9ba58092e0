"""ADFL Type I hyper attention (1h): self-attention over all (channel, position) locations."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.checks import math_dtype
from tfreid.layers.adfl_attention import ADFLAttention


@keras.saving.register_keras_serializable(package="tfreid")
class HyperAttention(ADFLAttention):
    """Long-range attention over the ``C' x H x W`` locations of a reduced feature map.

    Supplementary Eq. (9) of ADFL: 1x1 convolutions project the input to ``K, Q, V`` with
    ``C' = C / reduction`` channels; every one of the ``N = C'HW`` locations holds a scalar, so
    ``A[j, i] = softmax_i(K_i Q_j)`` is an ``N x N`` map (the outer product of the flattened
    ``K`` and ``Q``), ``y_j = sum_i A[j, i] V_i`` is reshaped to ``H x W x C'``, a 1x1
    convolution restores ``C`` channels and ``O = alpha * conv(y) + I`` with a learnable scalar
    ``alpha`` initialised to 0. The map costs ``N^2`` floats per image (C=1024, 24x8 positions,
    C'=16: 9.4M), hence the paper's aggressive ``C / 64``. The attention runs in float32 under mixed
    precision.
    Sublayers: ``"query"``, ``"key"``, ``"value"``, ``"expand"`` (`Conv2D`, 1x1).

    Args:
        reduction: ``C / C'`` (the paper uses 64).
        use_bias: biases on the four 1x1 convolutions. Default True.
        return_attention: if True, ``call`` also returns the attention received by each
            position, ``sum_{c'} mean_j A[j, (c', h, w)]`` as ``[B, H, W, 1]`` (sums to 1).
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` (static H, W, C).

    Returns:
        ``O = alpha * expand(y) + I``, shaped like ``inputs``; with ``return_attention`` also the
        attention mass at each position (summed over the reduced channels), ``[B, H, W, 1]``.

    Example:

    >>> HyperAttention(reduction=64)(keras.random.normal((2, 12, 4, 256))).shape
    (2, 12, 4, 256)

    Reference:
        ADFL (Liu et al., arXiv 2019), Sec. IV-A, Fig. 4(c), supplementary Eq. (9).
    """

    def __init__(self, reduction: int = 64, use_bias: bool = True, return_attention: bool = False, **kwargs):
        super().__init__(dict(reduction=reduction, use_bias=use_bias,
                              return_attention=return_attention), **kwargs)

    def build(self, input_shape):
        b, h, w, c = self.check_shape(input_shape)
        reduced = c // self.reduction
        kw = dict(use_bias=self.use_bias, dtype=self.dtype_policy)
        self.query = keras.layers.Conv2D(reduced, 1, name="query", **kw)
        self.key = keras.layers.Conv2D(reduced, 1, name="key", **kw)
        self.value = keras.layers.Conv2D(reduced, 1, name="value", **kw)
        self.expand = keras.layers.Conv2D(c, 1, name="expand", **kw)
        for conv in (self.query, self.key, self.value):
            conv.build(input_shape)
        self.expand.build((b, h, w, reduced))
        self.add_alpha()
        self.built = True

    def call(self, inputs):
        dt = math_dtype(self.compute_dtype)
        _, h, w, c = self.check_shape(inputs.shape)
        reduced = c // self.reduction
        n = h * w * reduced
        q = ops.reshape(ops.cast(self.query(inputs), dt), (-1, n, 1))
        k = ops.reshape(ops.cast(self.key(inputs), dt), (-1, 1, n))
        v = ops.reshape(ops.cast(self.value(inputs), dt), (-1, n, 1))
        attention = ops.softmax(q * k, axis=-1)  # [B, j, i] = softmax_i(K_i Q_j)
        y = ops.reshape(ops.matmul(attention, v), (-1, h, w, reduced))
        y = ops.cast(self.expand(ops.cast(y, self.compute_dtype)), dt)
        out = ops.cast(ops.cast(self.alpha, dt) * y + ops.cast(inputs, dt), self.compute_dtype)
        if not self.return_attention:
            return out
        received = ops.reshape(ops.mean(attention, axis=1), (-1, h, w, reduced))
        return out, ops.cast(ops.sum(received, axis=-1, keepdims=True), self.compute_dtype)
