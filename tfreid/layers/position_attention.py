"""ADFL Type I spatial attention (1s): self-attention over the spatial positions (DANet's PAM)."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.checks import math_dtype
from tfreid.layers.adfl_attention import ADFLAttention


@keras.saving.register_keras_serializable(package="tfreid")
class PositionAttention(ADFLAttention):
    """Long-range spatial attention: every position is a softmax-weighted sum of all positions.

    Supplementary Eq. (5)-(6) of ADFL: two 1x1 convolutions project the input ``I`` to
    ``K, Q`` with ``C' = C / reduction`` channels, a third to ``V`` with ``C`` channels;
    ``A[j, i] = softmax_i(K_i . Q_j)`` over the ``HW`` positions and
    ``O_j = alpha * sum_i A[j, i] V_i + I_j`` with a learnable scalar ``alpha`` initialised to 0
    (so the layer starts as the identity and learns how much context to add). The attention
    (energies, softmax, weighted sum) runs in float32 under mixed precision: ``HW``-term dot
    products overflow float16. Sublayers: ``"query"``, ``"key"``, ``"value"`` (`Conv2D`, 1x1).

    Args:
        reduction: ``C / C'`` of the query/key projections (the paper uses 8).
        use_bias: biases on the three projections (DANet: True). Default True.
        return_attention: if True, ``call`` also returns the attention received by each
            position, ``mean_j A[j, i]`` as ``[B, H, W, 1]`` (sums to 1 over positions).
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` (static H, W, C).

    Returns:
        ``O = alpha * context + I``, shaped like ``inputs``; with ``return_attention`` also the
        attention each position receives, ``[B, H, W, 1]``.

    Example:

    >>> PositionAttention()(keras.random.normal((2, 24, 8, 64))).shape
    (2, 24, 8, 64)

    Reference:
        ADFL (Liu et al., arXiv 2019), Sec. IV-A, Fig. 4(a), supplementary Eq. (5)-(6); J. Fu et
        al., "Dual Attention Network for Scene Segmentation", CVPR 2019 (PAM).
    """

    def __init__(self, reduction: int = 8, use_bias: bool = True, return_attention: bool = False, **kwargs):
        super().__init__(dict(reduction=reduction, use_bias=use_bias,
                              return_attention=return_attention), **kwargs)

    def build(self, input_shape):
        b, h, w, c = self.check_shape(input_shape)
        kw = dict(use_bias=self.use_bias, dtype=self.dtype_policy)
        self.query = keras.layers.Conv2D(c // self.reduction, 1, name="query", **kw)
        self.key = keras.layers.Conv2D(c // self.reduction, 1, name="key", **kw)
        self.value = keras.layers.Conv2D(c, 1, name="value", **kw)
        for conv in (self.query, self.key, self.value):
            conv.build(input_shape)
        self.add_alpha()
        self.built = True

    def call(self, inputs):
        dt = math_dtype(self.compute_dtype)
        _, h, w, c = self.check_shape(inputs.shape)
        n = h * w
        q = ops.reshape(ops.cast(self.query(inputs), dt), (-1, n, c // self.reduction))
        k = ops.reshape(ops.cast(self.key(inputs), dt), (-1, n, c // self.reduction))
        v = ops.reshape(ops.cast(self.value(inputs), dt), (-1, n, c))
        attention = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 2, 1))), axis=-1)  # [B, j, i]
        context = ops.reshape(ops.matmul(attention, v), (-1, h, w, c))
        out = ops.cast(self.alpha, dt) * context + ops.cast(inputs, dt)
        out = ops.cast(out, self.compute_dtype)
        if not self.return_attention:
            return out
        received = ops.reshape(ops.mean(attention, axis=1), (-1, h, w, 1))
        return out, ops.cast(received, self.compute_dtype)
