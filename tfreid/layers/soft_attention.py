"""HA-CNN soft spatial-channel attention: a full [H, W, C] saliency map in [0.5, 1)."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.layers.validation import check_bool, check_feature_map, check_positive_int

from tfreid.layers.channel_attention import SoftChannelAttention
from tfreid.layers.conv_bn_relu import ConvBNReLU
from tfreid.layers.spatial_attention import SoftSpatialAttention


@keras.saving.register_keras_serializable(package="tfreid")
class SoftAttention(keras.layers.Layer):
    """Factorised soft attention ``A = sigmoid(convBNReLU_1x1(S * C))`` (Eq. 1).

    The spatial map ``S`` ``[B, H, W, 1]`` (`SoftSpatialAttention`) and the channel map ``C``
    ``[B, 1, 1, C]`` (`SoftChannelAttention`) are multiplied by broadcasting, blended by a 1x1
    conv-BN-ReLU with ``C`` filters (spatial and channel attention are complementary, not
    independent) and squashed by a sigmoid. Because the ReLU output is non-negative, the map lies
    in ``[0.5, 1)`` as the paper states (it can round to exactly 1.0 for large pre-activations:
    about > 17 in float32, > 8 in float16). The layer returns the map; the caller multiplies the
    block output by it (``keras.layers.Multiply``), exactly like torchreid's ``SoftAttn``.
    Sublayers: ``"spatial"``, ``"channel"``, ``"conv"``.

    Args:
        reduction: channel-attention reduction rate ``r``. Default 16.
        use_bias: whether the convolutions have a bias (torchreid: True). Default False.
        padding: ``"same"`` or ``"symmetric"`` (PyTorch's), see `ConvBNReLU`. Default ``"same"``.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` with static ``H``, ``W``, ``C``.
        training: Python bool, forwarded to BN.

    Returns:
        Attention map ``A`` of shape ``[B, H, W, C]`` with values in ``[0.5, 1)``.

    Example:

    >>> x = keras.random.normal((2, 40, 16, 128))
    >>> a = SoftAttention()(x)
    >>> y = x * a  # attended features
    >>> a.shape
    (2, 40, 16, 128)

    Reference:
        W. Li, X. Zhu, S. Gong, "Harmonious Attention Network for Person Re-Identification",
        CVPR 2018, Sec. 3.1 (I), Eq. 1, Fig. 3(a).
    """

    def __init__(self, reduction: int = 16, use_bias: bool = False, padding: str = "same", **kwargs):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)
        self.use_bias = check_bool("use_bias", use_bias)
        kw = dict(use_bias=use_bias, dtype=self.dtype_policy)
        self.spatial = SoftSpatialAttention(padding=padding, name="spatial", **kw)
        self.padding = self.spatial.padding
        self.channel = SoftChannelAttention(reduction=self.reduction, name="channel", **kw)
        self.conv = None  # C filters, created in build()

    def build(self, input_shape):
        input_shape = check_feature_map(self, input_shape, static_spatial=True)
        self.spatial.build(input_shape)
        self.channel.build(input_shape)
        self.conv = ConvBNReLU(
            input_shape[-1], 1, use_bias=self.use_bias, name="conv", dtype=self.dtype_policy
        )
        self.conv.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        check_feature_map(self, inputs.shape, static_spatial=True)
        s = self.spatial(inputs, training=training)
        c = self.channel(inputs, training=training)
        return ops.sigmoid(self.conv(s * c, training=training))

    def compute_output_shape(self, input_shape):
        return check_feature_map(self, input_shape, static_spatial=True)

    def get_config(self):
        config = super().get_config()
        config.update({"reduction": self.reduction, "use_bias": self.use_bias, "padding": self.padding})
        return config
