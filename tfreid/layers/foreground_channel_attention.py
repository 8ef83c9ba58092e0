"""AANet foreground-aware channel attention (FCA): SE attention on a GAP - global-min signature."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.layers.validation import check_bool, check_feature_map, check_positive_int


@keras.saving.register_keras_serializable(package="tfreid")
class ForegroundChannelAttention(keras.layers.Layer):
    """Channel attention from the contrastive signature ``GAP(F) - GlobalMinPool(F)``.

    A squeeze-and-excitation block whose squeeze is AANet's foreground-aware signature: the
    global minimum of a channel tends to sit on background, so subtracting it from the global
    average keeps the response of the salient (body) regions and cancels a uniform background
    level (Sec. 3.2.1). Excitation is ``{c/r, 1x1, 1}`` -> ReLU -> ``{c_out, 1x1, 1}`` ->
    sigmoid, plain convolutions with biases (the paper puts no BN there, and BN over ``1x1``
    maps would normalise across the batch). Sublayers: ``"conv1"``, ``"conv2"``.

    ``out_channels`` defaults to the input channels (the FCA of the paper, which re-weights its
    own input). A different value lets the signature of a block's input weight the channels of
    the block's output, which is how `OmnibearingAttention` runs FCA alone (ablation, Table 3)
    in parallel with a block that changes the width.

    Args:
        reduction: bottleneck reduction rate ``r`` (``C // r >= 1``). Default 16.
        out_channels: channels of the attention; default (None) the input channels.
        use_bias: whether the two convolutions have biases. Default True.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` with known ``C``.

    Returns:
        Channel attention ``[B, 1, 1, out_channels]`` with values in ``(0, 1)``.

    Example:

    >>> x = keras.random.normal((2, 24, 12, 1024))
    >>> c = ForegroundChannelAttention(reduction=16)(x)
    >>> c.shape  # the refined features are x * c
    (2, 1, 1, 1024)

    Reference:
        S. Lian, W. Jiang, H. Hu, "Attention-Aligned Network for Person Re-Identification",
        IEEE TCSVT 2020, Sec. 3.2.1, Fig. 3; J. Hu et al., "Squeeze-and-Excitation Networks",
        CVPR 2018.
    """

    def __init__(self, reduction: int = 16, out_channels: int | None = None, use_bias: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)
        self.out_channels = None if out_channels is None else check_positive_int("out_channels", out_channels)
        self.use_bias = check_bool("use_bias", use_bias)
        self.conv1 = None  # widths depend on C, created in build()
        self.conv2 = None

    def build(self, input_shape):
        b, _, _, c = check_feature_map(self, input_shape, reduction=self.reduction)
        out = self.out_channels or c
        kw = dict(use_bias=self.use_bias, dtype=self.dtype_policy)
        self.conv1 = keras.layers.Conv2D(c // self.reduction, 1, activation="relu", name="conv1", **kw)
        self.conv2 = keras.layers.Conv2D(out, 1, name="conv2", **kw)
        self.conv1.build((b, 1, 1, c))
        self.conv2.build((b, 1, 1, c // self.reduction))
        self.built = True

    def call(self, inputs):
        check_feature_map(self, inputs.shape, reduction=self.reduction)
        signature = ops.mean(inputs, axis=(1, 2), keepdims=True) - ops.min(inputs, axis=(1, 2), keepdims=True)
        return ops.sigmoid(self.conv2(self.conv1(signature)))

    def compute_output_shape(self, input_shape):
        b, _, _, c = check_feature_map(self, input_shape, reduction=self.reduction)
        return (b, 1, 1, self.out_channels or c)

    def get_config(self):
        config = super().get_config()
        config.update({"reduction": self.reduction, "out_channels": self.out_channels,
                       "use_bias": self.use_bias})
        return config
