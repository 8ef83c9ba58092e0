"""HA-CNN soft channel attention: a squeeze-and-excitation style per-channel weight."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.layers.validation import check_bool, check_feature_map, check_positive_int

from tfreid.layers.conv_bn_relu import ConvBNReLU


@keras.saving.register_keras_serializable(package="tfreid")
class SoftChannelAttention(keras.layers.Layer):
    """Global average pooling -> 1x1 conv to ``C / r`` -> 1x1 conv back to ``C``.

    The channel branch of HA-CNN's soft attention (Eq. 3-4): the per-channel signature over the
    whole image goes through a bottleneck of reduction rate ``r`` (16 in the paper), costing
    ``2 C^2 / r`` weights instead of ``C^2``. Both convolutions are conv-BN-ReLU (torchreid's
    ``ChannelAttn``); BN normalises over the batch since the maps are 1x1.
    Sublayers: ``"conv1"``, ``"conv2"`` (`ConvBNReLU`).

    Args:
        reduction: bottleneck reduction rate ``r`` (positive integer, ``C // r >= 1``). Default 16.
        use_bias: whether the two convolutions have a bias (torchreid: True). Default False.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]``.
        training: Python bool, forwarded to BN.

    Returns:
        Channel attention ``C`` of shape ``[B, 1, 1, C]``, non-negative (ReLU output).

    Example:

    >>> c = SoftChannelAttention(reduction=16)(keras.random.normal((2, 40, 16, 128)))
    >>> c.shape
    (2, 1, 1, 128)

    Reference:
        W. Li, X. Zhu, S. Gong, "Harmonious Attention Network for Person Re-Identification",
        CVPR 2018, Sec. 3.1 (I)(2), Eq. 3-4, Fig. 3(c); J. Hu et al., "Squeeze-and-Excitation
        Networks", CVPR 2018.
    """

    def __init__(self, reduction: int = 16, use_bias: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)
        self.use_bias = check_bool("use_bias", use_bias)
        self.conv1 = None  # widths depend on C, created in build()
        self.conv2 = None

    def build(self, input_shape):
        b, _, _, c = check_feature_map(self, input_shape, reduction=self.reduction)
        kw = dict(use_bias=self.use_bias, dtype=self.dtype_policy)
        self.conv1 = ConvBNReLU(c // self.reduction, 1, name="conv1", **kw)
        self.conv2 = ConvBNReLU(c, 1, name="conv2", **kw)
        self.conv1.build((b, 1, 1, c))
        self.conv2.build((b, 1, 1, c // self.reduction))
        self.built = True

    def call(self, inputs, training=None):
        check_feature_map(self, inputs.shape, reduction=self.reduction)
        y = ops.mean(inputs, axis=(1, 2), keepdims=True)
        y = self.conv1(y, training=training)
        return self.conv2(y, training=training)

    def compute_output_shape(self, input_shape):
        b, _, _, c = check_feature_map(self, input_shape, reduction=self.reduction)
        return (b, 1, 1, c)

    def get_config(self):
        config = super().get_config()
        config.update({"reduction": self.reduction, "use_bias": self.use_bias})
        return config
