"""HA-CNN soft spatial attention: one map per pixel, shared by all channels."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.layers.conv_bn_relu import ConvBNReLU
from tfreid.layers.validation import check_feature_map


@keras.saving.register_keras_serializable(package="tfreid")
class SoftSpatialAttention(keras.layers.Layer):
    """Channel mean -> 3x3/s2 conv -> bilinear upsampling -> 1x1 "scaling" conv (1 channel).

    The spatial branch of HA-CNN's soft attention (10 parameters in the paper plus BN): the
    cross-channel average compresses ``[H, W, C]`` to one plane, a strided 3x3 conv-BN-ReLU
    aggregates local context at half resolution, bilinear resizing brings it back to ``H x W`` and
    a 1x1 conv-BN-ReLU learns the fusion scale with the channel branch.

    Conventions (decided here): the strided conv pads as ``padding`` says (torchreid:
    ``"symmetric"``); the upsampling resizes straight to the
    input's ``H x W`` (= x2 for even sizes, also valid for odd ones) with half-pixel centres (the
    TF / TFLite default), whereas torchreid uses ``align_corners=True``. Neither changes the
    parameter count or the cost; trained weights are not bit-compatible with torchreid anyway.
    Sublayers: ``"conv1"``, ``"conv2"`` (`ConvBNReLU`).

    Args:
        use_bias: whether the two convolutions have a bias (torchreid: True). Default False.
        padding: ``"same"`` or ``"symmetric"`` (PyTorch's), see `ConvBNReLU`. Default ``"same"``.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` with static ``H`` and ``W``.
        training: Python bool, forwarded to BN.

    Returns:
        Spatial attention ``S`` of shape ``[B, H, W, 1]``, non-negative (ReLU output).

    Example:

    >>> s = SoftSpatialAttention()(keras.random.normal((2, 40, 16, 128)))
    >>> s.shape
    (2, 40, 16, 1)

    Reference:
        W. Li, X. Zhu, S. Gong, "Harmonious Attention Network for Person Re-Identification",
        CVPR 2018, Sec. 3.1 (I)(1), Eq. 2, Fig. 3(b).
    """

    def __init__(self, use_bias: bool = False, padding: str = "same", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(use_bias, bool):
            raise ValueError(f"`use_bias` must be a bool, received use_bias={use_bias!r}.")
        self.use_bias = use_bias
        self.conv1 = ConvBNReLU(1, 3, strides=2, use_bias=use_bias, padding=padding, name="conv1",
                                dtype=self.dtype_policy)
        self.padding = padding
        self.conv2 = ConvBNReLU(1, 1, use_bias=use_bias, name="conv2", dtype=self.dtype_policy)

    def build(self, input_shape):
        b, h, w, _ = check_feature_map(self, input_shape, static_spatial=True, static_channels=False)
        self.conv1.build((b, h, w, 1))
        self.conv2.build((b, h, w, 1))
        self.built = True

    def call(self, inputs, training=None):
        _, h, w, _ = check_feature_map(self, inputs.shape, static_spatial=True, static_channels=False)
        s = ops.mean(inputs, axis=-1, keepdims=True)
        s = self.conv1(s, training=training)
        # Resize in float32 and cast back: TF's bilinear resize returns float32 for half
        # inputs, and its gradient under XLA fails on mixed bfloat16/float32 operands.
        s = ops.image.resize(ops.cast(s, "float32"), (h, w), interpolation="bilinear",
                             antialias=False)
        s = ops.cast(s, self.compute_dtype)
        return self.conv2(s, training=training)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = check_feature_map(self, input_shape, static_spatial=True, static_channels=False)
        return (b, h, w, 1)

    def get_config(self):
        config = super().get_config()
        config.update({"use_bias": self.use_bias, "padding": self.padding})
        return config
