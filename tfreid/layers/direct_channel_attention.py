"""ADFL Type II channel attention (2c): a softmax over channels from a shared MLP (avg + max)."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.checks import math_dtype
from tfreid.layers.adfl_attention import ADFLAttention


@keras.saving.register_keras_serializable(package="tfreid")
class DirectChannelAttention(ADFLAttention):
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
        ``A^c * I``, shaped like ``inputs``.

    Example:

    >>> x = keras.random.normal((2, 12, 6, 64))
    >>> DirectChannelAttention(reduction=16)(x).shape == x.shape
    True

    Reference:
        ADFL (Liu et al., arXiv 2019), Sec. IV-B, Fig. 5(b), supplementary Eq. (13); S. Woo et
        al., "CBAM: Convolutional Block Attention Module", ECCV 2018.
    """

    def __init__(self, reduction: int = 16, **kwargs):
        super().__init__(dict(reduction=reduction), **kwargs)

    def build(self, input_shape):
        b, _, _, c = self.check_shape(input_shape)
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
        _, _, _, c = self.check_shape(inputs.shape)
        avg = self.fc2(self.fc1(ops.mean(inputs, axis=(1, 2))))
        mx = self.fc2(self.fc1(ops.max(inputs, axis=(1, 2))))
        return ops.reshape(ops.softmax(ops.cast(avg + mx, dt), axis=-1), (-1, 1, 1, c))

    def call(self, inputs):
        dt = math_dtype(self.compute_dtype)
        return ops.cast(self.attention_map(inputs) * ops.cast(inputs, dt), self.compute_dtype)
