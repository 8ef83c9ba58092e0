"""ADFL Type II hyper attention (2h): a softmax over every (position, channel) of the input."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.checks import math_dtype
from tfreid.layers.adfl_attention import ADFLAttention


@keras.saving.register_keras_serializable(package="tfreid")
class DirectHyperAttention(ADFLAttention):
    """``O = softmax_{CHW}(I) * I``: the input, flattened per image, is its own attention map.

    Supplementary Eq. (14) of ADFL: the ``C x H x W`` input is reshaped to one vector, a softmax
    over all its entries gives ``A^{SC}`` and the input is multiplied by it element-wise. No
    parameters. The softmax runs in float32 under mixed precision (``CHW`` terms).

    Args:
        return_attention: if True, ``call`` also returns the share of the attention mass at each
            position, ``sum_c A^{SC}`` as ``[B, H, W, 1]`` (sums to 1).
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` (static H, W, C).

    Returns:
        ``A^{SC} * I``, shaped like ``inputs``; with ``return_attention`` also ``sum_c A^{SC}``,
        ``[B, H, W, 1]``.

    Example:

    >>> DirectHyperAttention()(keras.random.normal((2, 16, 8, 32))).shape
    (2, 16, 8, 32)

    Reference:
        ADFL (Liu et al., arXiv 2019), Sec. IV-B, Fig. 5(c), supplementary Eq. (14).
    """

    def __init__(self, return_attention: bool = False, **kwargs):
        super().__init__(dict(return_attention=return_attention), **kwargs)

    def attention_map(self, inputs):
        """``A^{SC}`` ``[B, H, W, C]`` (sums to 1 over each image;
        float32 under mixed precision)."""
        dt = math_dtype(self.compute_dtype)
        _, h, w, c = self.check_shape(inputs.shape)
        flat = ops.reshape(ops.cast(inputs, dt), (-1, h * w * c))
        return ops.reshape(ops.softmax(flat, axis=-1), (-1, h, w, c))

    def call(self, inputs):
        dt = math_dtype(self.compute_dtype)
        attention = self.attention_map(inputs)
        out = ops.cast(attention * ops.cast(inputs, dt), self.compute_dtype)
        if self.return_attention:
            return out, ops.cast(ops.sum(attention, axis=-1, keepdims=True), self.compute_dtype)
        return out
