"""HA-CNN Harmonious Attention module: soft and hard attention learned from one input."""

from __future__ import annotations

import keras

from tfreid.layers.validation import check_positive_int

from tfreid.layers.hard_attention import HardRegionAttention
from tfreid.layers.soft_attention import SoftAttention

HARD_OPTIONS = ("pooling", "stripes", "center", "frozen")  # HardRegionAttention's options


@keras.saving.register_keras_serializable(package="tfreid")
class HarmoniousAttention(keras.layers.Layer):
    """Soft pixel/channel attention plus hard regional attention from the same feature map.

    Joint attention generation (Sec. 3.1): both kinds of attention look at the output ``X`` of the
    same Inception block. The soft map ``A`` (`SoftAttention`, values in ``[0.5, 1)``) refines the
    global branch (``X * A``); the hard attention ``theta`` (`HardRegionAttention`, one
    translation ``(tx, ty)`` per region, stripe initialisation) selects the ``T`` regions that
    `RegionSampler` crops for the local branch. Sublayers: ``"soft"``, ``"hard"``.

    Args:
        num_regions: number of hard-attention regions ``T`` (integer >= 1). Default 4.
        reduction: channel-attention reduction rate. Default 16.
        use_bias: whether the soft-attention convolutions have a bias (torchreid: True).
            Default False.
        padding: ``"same"`` or ``"symmetric"`` (PyTorch's), see `ConvBNReLU`. Default ``"same"``.
        hard_options: extra `HardRegionAttention` arguments (``pooling``, ``stripes``,
            ``center``, ``frozen``; localisation experiments). Default None (the paper's).
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` with static ``H``, ``W``, ``C``.
        training: Python bool, forwarded to BN.

    Returns:
        Tuple ``(soft, theta)``: ``soft`` ``[B, H, W, C]`` in ``[0.5, 1)`` and ``theta``
        ``[B, T, 2]`` in ``(-1, 1)`` (``theta[..., 0] = tx``, ``theta[..., 1] = ty``).

    Example:

    >>> x = keras.random.normal((2, 40, 16, 128))
    >>> soft, theta = HarmoniousAttention(num_regions=4)(x)
    >>> soft.shape, theta.shape
    ((2, 40, 16, 128), (2, 4, 2))

    Reference:
        W. Li, X. Zhu, S. Gong, "Harmonious Attention Network for Person Re-Identification",
        CVPR 2018, Sec. 3.1, Fig. 3.
    """

    def __init__(self, num_regions: int = 4, reduction: int = 16, use_bias: bool = False,
                 padding: str = "same", hard_options: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("num_regions", num_regions)
        self.num_regions = int(num_regions)
        self.soft = SoftAttention(reduction=reduction, use_bias=use_bias, padding=padding, name="soft",
                                  dtype=self.dtype_policy)
        self.padding = self.soft.padding
        self.reduction = self.soft.reduction
        self.use_bias = use_bias
        if hard_options is not None and (not isinstance(hard_options, dict) or set(hard_options) - set(HARD_OPTIONS)):
            raise ValueError(f"`hard_options` must be None or a dict with keys among {', '.join(HARD_OPTIONS)}, "
                             f"received hard_options={hard_options!r}.")
        self.hard_options = dict(hard_options or {})
        self.hard = HardRegionAttention(num_regions=self.num_regions, name="hard", dtype=self.dtype_policy,
                                        **self.hard_options)

    def build(self, input_shape):
        self.soft.build(input_shape)
        self.hard.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        return self.soft(inputs, training=training), self.hard(inputs, training=training)

    def compute_output_shape(self, input_shape):
        return self.soft.compute_output_shape(input_shape), self.hard.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_regions": self.num_regions, "reduction": self.reduction, "use_bias": self.use_bias,
             "padding": self.padding, "hard_options": dict(self.hard_options)}
        )
        return config
