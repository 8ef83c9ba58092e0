"""ADFL Type I channel attention (1c): self-attention among the channel maps (DANet's CAM)."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.checks import math_dtype
from tfreid.layers.adfl_attention import ADFLAttention


@keras.saving.register_keras_serializable(package="tfreid")
class ChannelSelfAttention(ADFLAttention):
    """Long-range channel attention: every channel map is a softmax-weighted sum of all channels.

    Supplementary Eq. (7)-(8) of ADFL: with the input ``I`` reshaped to ``C x HW``,
    ``A[j, i] = softmax_i(I_i . I_j)`` (a ``C x C`` map computed from the input itself, no
    projections) and ``O_j = alpha * sum_i A[j, i] I_i + I_j`` with a learnable scalar ``alpha``
    initialised to 0. The energies are used as the paper writes them (DANet's code instead feeds
    ``max - energy`` to the softmax). The attention runs in float32 under mixed precision.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` (static H, W, C).

    Returns:
        ``O`` of the same shape as ``inputs``. There is no spatial map to return: the attention
        is ``C x C``.

    Example:

    >>> x = keras.random.normal((2, 24, 8, 64))
    >>> ChannelSelfAttention()(x).shape == x.shape
    True

    Reference:
        ADFL (Liu et al., arXiv 2019), Sec. IV-A, Fig. 4(b), supplementary Eq. (7)-(8); J. Fu et
        al., "Dual Attention Network for Scene Segmentation", CVPR 2019 (CAM).
    """

    residual = True

    def call(self, inputs):
        dt = math_dtype(self.compute_dtype)
        _, h, w, c = self.check_shape(inputs.shape)
        x = ops.reshape(ops.cast(inputs, dt), (-1, h * w, c))  # columns are channel maps
        energy = ops.matmul(ops.transpose(x, (0, 2, 1)), x)  # [B, j, i] = I_j . I_i
        attention = ops.softmax(energy, axis=-1)
        context = ops.matmul(x, ops.transpose(attention, (0, 2, 1)))  # [B, HW, j]
        out = ops.cast(self.alpha, dt) * context + x
        return ops.cast(ops.reshape(out, (-1, h, w, c)), self.compute_dtype)
