"""AANet omnibearing foreground-aware attention (OFA): FCA then MSA, shaped like a block output."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.layers.foreground_channel_attention import ForegroundChannelAttention
from tfreid.layers.multi_scale_spatial_attention import MultiScaleSpatialAttention
from tfreid.layers.validation import check_bool, check_feature_map, check_positive_int


@keras.saving.register_keras_serializable(package="tfreid")
class OmnibearingAttention(keras.layers.Layer):
    """The attention map ``A`` that AANet multiplies into a residual block's output.

    ``A = MSA(F_in * FCA(F_in))``: the foreground-aware channel attention re-weights the input
    first, then the multi-scale spatial attention computes the map from the refined features
    ("spatial attention maps are obtained on the basis of feature map strengthened by
    foreground-aware channel attention", Sec. 3.2). The caller applies it,
    ``F_out = block(F_in) * A`` (Eq. 2; `tfreid.models.aanet` does so in parallel with the last
    residual blocks). Eq. 1 writes ``A = F_in x C x S``; read literally it would multiply the
    block output by its own input and cannot hold when the block changes width or strides, so
    ``F_in x C`` is taken as MSA's input and ``S`` (in ``(0, 1)``) as the map.

    Ablations (Table 3): ``use_msa=False`` keeps FCA alone, whose excitation then outputs the
    block's ``filters`` channels directly (the input's signature weights the output channels),
    broadcast over the output positions; ``use_fca=False`` keeps MSA alone on ``F_in``.
    Sublayers: ``"fca"``, ``"msa"``.

    Args:
        filters: output channels (those of the parallel residual block).
        strides: 1 or 2, the parallel block's stride. Default 1.
        reduction: FCA reduction rate. Default 16.
        spatial_reduction: MSA branch reduction rate (paper: 16). Default 16.
        kernel_sizes: MSA receptive fields. Default ``(1, 3, 5, 7)``.
        msa_layout: MSA's ``layout``, ``"compact"`` (default, the paper's Table 5 cost) or
            ``"literal"`` (`MultiScaleSpatialAttention`).
        use_fca: include FCA. Default True.
        use_msa: include MSA. Default True. At least one of the two must be on.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: the block input ``[B, H, W, C]`` with static ``H``, ``W``, ``C``.
        training: Python bool, forwarded to BN.

    Returns:
        ``[B, ceil(H / strides), ceil(W / strides), filters]`` in ``(0, 1)``.

    Example:

    >>> x = keras.random.normal((2, 24, 12, 1024))
    >>> block_out = keras.random.normal((2, 24, 12, 2048))
    >>> a = OmnibearingAttention(2048)(x)
    >>> (block_out * a).shape
    (2, 24, 12, 2048)

    Reference:
        S. Lian, W. Jiang, H. Hu, "Attention-Aligned Network for Person Re-Identification",
        IEEE TCSVT 2020, Sec. 3.2, Eq. 1-2, Fig. 3.
    """

    def __init__(self, filters: int, strides: int = 1, reduction: int = 16, spatial_reduction: int = 16,
                 kernel_sizes=(1, 3, 5, 7), use_fca: bool = True, use_msa: bool = True,
                 msa_layout: str = "compact", **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.reduction = check_positive_int("reduction", reduction)
        self.spatial_reduction = check_positive_int("spatial_reduction", spatial_reduction)
        self.use_fca = check_bool("use_fca", use_fca)
        self.use_msa = check_bool("use_msa", use_msa)
        if not (use_fca or use_msa):
            raise ValueError("OmnibearingAttention needs use_fca or use_msa (received both False); "
                             "build the model with no OFA modules instead.")
        kw = dict(dtype=self.dtype_policy)
        # MSA validates strides, kernel_sizes and layout; it is created even when unused to do so.
        msa = MultiScaleSpatialAttention(filters, strides=strides, reduction=spatial_reduction,
                                         kernel_sizes=kernel_sizes, layout=msa_layout, name="msa", **kw)
        self.strides, self.kernel_sizes, self.msa_layout = msa.strides, msa.kernel_sizes, msa.layout
        self.msa = msa if use_msa else None
        self.fca = None
        if use_fca:
            self.fca = ForegroundChannelAttention(reduction, out_channels=None if use_msa else filters,
                                                  name="fca", **kw)

    def build(self, input_shape):
        input_shape = check_feature_map(self, input_shape, static_spatial=True)
        if self.fca is not None:
            self.fca.build(input_shape)
        if self.msa is not None:
            self.msa.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        check_feature_map(self, inputs.shape, static_spatial=True)
        if self.msa is None:  # FCA alone: one weight per output channel at every position
            _, h, w, _ = self.compute_output_shape(inputs.shape)
            return self.fca(inputs) * ops.ones((1, h, w, 1), dtype=self.compute_dtype)
        x = inputs * self.fca(inputs) if self.fca is not None else inputs
        return self.msa(x, training=training)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = check_feature_map(self, input_shape, static_spatial=True)
        s = self.strides
        return (b, -(-h // s), -(-w // s), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides, "reduction": self.reduction,
                       "spatial_reduction": self.spatial_reduction, "kernel_sizes": list(self.kernel_sizes),
                       "use_fca": self.use_fca, "use_msa": self.use_msa, "msa_layout": self.msa_layout})
        return config
