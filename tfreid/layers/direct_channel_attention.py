"""ADFL Type II channel attention (2c): a softmax over channels from a shared MLP (avg + max)."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.checks import math_dtype
from tfreid.layers.validation import check_feature_map, check_positive_int


@keras.saving.register_keras_serializable(package="tfreid")
class DirectChannelAttention(keras.layers.Layer):
    """``O = softmax_C(MLP(AvgPool(I)) + MLP(MaxPool(I))) * I``: one weight per channel.

    Supplementary Eq. (13) of ADFL: the global average- and max-pooled channel descriptors go
    through one shared MLP (``C -> C / reduction -> C`` with a ReLU in between: the paper's two
    1x1 convolutions, which on 1x1 maps are dense layers), are summed, and a softmax over the
    ``C`` channels gives ``A^c``, which multiplies every position. The softmax makes channels
    compete (SE/CBAM use a sigmoid); the output is ~``1 / C`` of the input's scale. The softmax
    runs in float32 under mixed precision. Sublayers: ``"fc1"``, ``"fc2"`` (`Dense`, with biases as in CBAM).

    Args:
        reduction: bottleneck reduction rate (the paper uses 16). Default 16.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` (static H, W, C; ``C >= reduction``).

    Returns:
        ``O`` of the same shape as ``inputs``.

    Example:

    >>> DirectChannelAttention()(keras.random.normal((2, 24, 8, 64))).shape
    (2, 24, 8, 64)

    Reference:
        H. Liu, J. Cheng, S. Wang, W. Wang, "Attention: A Big Surprise for Cross-Domain Person
        Re-Identification", arXiv 2019, Sec. IV-B, Fig. 5(b), supplementary Eq. (13);
        S. Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018.
    """

    def __init__(self, reduction: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)

    def build(self, input_shape):
        b, _, _, c = check_feature_map(self, input_shape, reduction=self.reduction, static_spatial=True)
        self.fc1 = keras.layers.Dense(c // self.reduction, activation="relu", name="fc1",
                                      dtype=self.dtype_policy)
        self.fc2 = keras.layers.Dense(c, name="fc2", dtype=self.dtype_policy)
        self.fc1.build((b, c))
        self.fc2.build((b, c // self.reduction))
        self.built = True

    def attention_map(self, inputs):
        """``A^c`` ``[B, 1, 1, C]`` (sums to 1 over the
        channels of each image; float32 under mixed precision)."""
        dt = math_dtype(self.compute_dtype)
        _, _, _, c = check_feature_map(self, inputs.shape, reduction=self.reduction, static_spatial=True)
        avg = self.fc2(self.fc1(ops.mean(inputs, axis=(1, 2))))
        mx = self.fc2(self.fc1(ops.max(inputs, axis=(1, 2))))
        return ops.reshape(ops.softmax(ops.cast(avg + mx, dt), axis=-1), (-1, 1, 1, c))

    def call(self, inputs):
        dt = math_dtype(self.compute_dtype)
        return ops.cast(self.attention_map(inputs) * ops.cast(inputs, dt), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return check_feature_map(self, input_shape, reduction=self.reduction, static_spatial=True)

    def get_config(self):
        config = super().get_config()
        config.update({"reduction": self.reduction})
        return config
