"""AANet multi-scale spatial attention (MSA): 1x1/3x3/5x5/7x7 branches -> sigmoid map."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from tfreid.layers.fused_batch_normalization import FusedBatchNormalization
from tfreid.layers.validation import check_feature_map, check_positive_int

BN_MOMENTUM = 0.9  # PyTorch's 0.1, as the ResNet-50 backbone the module runs beside
BN_EPSILON = 1e-5
LAYOUTS = ("compact", "literal")


class _ConvBN(keras.layers.Layer):
    """Conv2D (no bias, "same") -> BN (-> ReLU): one unit of MSA. Sublayers "conv", "bn"."""

    def __init__(self, filters, kernel_size, strides=1, relu=True, **kwargs):
        super().__init__(**kwargs)
        self.relu = relu
        self.conv = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                                        kernel_initializer="he_normal", name="conv", dtype=self.dtype_policy)
        self.bn = FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name="bn",
                                          dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None):
        y = self.bn(self.conv(inputs), training=training)
        return ops.relu(y) if self.relu else y

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)


@keras.saving.register_keras_serializable(package="tfreid")
class MultiScaleSpatialAttention(keras.layers.Layer):
    """Spatial attention from four receptive fields, shaped like a residual block's output.

    Branch ``n`` (``n`` in ``kernel_sizes``, the paper's 1, 3, 5, 7) opens with a 1x1 conv to
    ``C // r`` channels (keeps per-channel spatial detail instead of a channel mean) and applies
    the factorised ``1 x n`` then ``n x 1`` convolutions (Inception-v3 style; none for ``n = 1``).
    The branches then map back to channels and are summed, and a sigmoid gives the map (Sec.
    3.2.2, Fig. 3). Two readings of that last part (``layout``):

    - ``"compact"`` (default): each branch closes with ONE 1x1 conv from ``C // r`` straight to
      ``filters`` (the channels of the residual block this module runs beside, with the block's
      stride); the four are summed, then BN and sigmoid. Sec. 3.2.2's expansion "{c, 1x1, 1}"
      and the final 1x1 conv to ``c'`` are consecutive linear maps with only a sum between them,
      so they compose into one ``C // r -> c'`` conv per branch; this is the reading whose size
      and cost match the paper's Table 5 (``docs/models.md``). Implemented as one 1x1 conv on
      the concatenated branches (identical to the sum of per-branch convs).
    - ``"literal"``: each branch expands back to ``C`` with its own conv-BN-ReLU, the branches
      are summed and a 1x1 conv-BN maps the sum to ``filters`` (far above Table 5's size).

    Decisions the paper leaves open: every conv is conv-BN(-ReLU), no biases, ``"same"``
    padding; the branch convs end in ReLU; the last conv has BN without ReLU, so the sigmoid
    covers the whole ``(0, 1)`` the paper states. The stride sits on the last 1x1 conv: a
    strided 1x1 conv samples the same positions as the block's own strided 1x1 convs (Keras
    ResNet-50 strides its first 1x1 and its shortcut), so map and block output stay aligned.
    Sublayers: ``b{n}_reduce``, ``b{n}_1x{n}``, ``b{n}_{n}x1``, ``fuse`` (+ ``b{n}_expand`` in the
    literal layout).

    Args:
        filters: output channels (the parallel residual block's output channels).
        strides: 1 or 2, the parallel block's stride. Default 1.
        reduction: branch bottleneck rate ``r`` (``C // r >= 1``). Default 16 (paper).
        kernel_sizes: receptive fields of the branches (odd positive integers, distinct).
            Default ``(1, 3, 5, 7)``.
        layout: ``"compact"`` (default, Table 5's cost) or ``"literal"`` (see above).
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` with static ``H``, ``W``, ``C``.
        training: Python bool, forwarded to BN.

    Returns:
        Attention map ``[B, ceil(H / strides), ceil(W / strides), filters]`` in ``(0, 1)``.

    Example:

    >>> x = keras.random.normal((2, 24, 12, 1024))
    >>> MultiScaleSpatialAttention(2048)(x).shape
    (2, 24, 12, 2048)

    Reference:
        S. Lian, W. Jiang, H. Hu, "Attention-Aligned Network for Person Re-Identification",
        IEEE TCSVT 2020, Sec. 3.2.2, Fig. 3, Table 5; C. Szegedy et al., "Rethinking the
        Inception Architecture for Computer Vision", CVPR 2016 (factorised convolutions).
    """

    def __init__(self, filters: int, strides: int = 1, reduction: int = 16, kernel_sizes=(1, 3, 5, 7),
                 layout: str = "compact", **kwargs):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        if strides not in (1, 2) or isinstance(strides, bool):
            raise ValueError(f"`strides` must be 1 or 2, received strides={strides!r}.")
        self.strides = int(strides)
        self.reduction = check_positive_int("reduction", reduction)
        try:
            sizes = tuple(kernel_sizes)
        except TypeError:
            sizes = ()
        ok = sizes and len(set(sizes)) == len(sizes) and all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 and n % 2 for n in sizes)
        if not ok:
            raise ValueError("`kernel_sizes` must be a non-empty tuple of distinct odd positive integers, "
                             f"received kernel_sizes={kernel_sizes!r}.")
        self.kernel_sizes = tuple(int(n) for n in sizes)
        if layout not in LAYOUTS:
            raise ValueError(f"`layout` must be one of {', '.join(LAYOUTS)}, received layout={layout!r}.")
        self.layout = layout
        self.branches = None  # widths depend on C, created in build()
        self.fuse = None

    def build(self, input_shape):
        input_shape = check_feature_map(self, input_shape, reduction=self.reduction, static_spatial=True)
        c = input_shape[-1]
        mid = c // self.reduction
        kw = dict(dtype=self.dtype_policy)
        self.branches = []
        for n in self.kernel_sizes:
            units = [_ConvBN(mid, 1, name=f"b{n}_reduce", **kw)]
            if n > 1:
                units += [_ConvBN(mid, (1, n), name=f"b{n}_1x{n}", **kw),
                          _ConvBN(mid, (n, 1), name=f"b{n}_{n}x1", **kw)]
            if self.layout == "literal":
                units.append(_ConvBN(c, 1, name=f"b{n}_expand", **kw))
            shape = input_shape
            for unit in units:
                unit.build(shape)
                shape = unit.compute_output_shape(shape)
            self.branches.append(units)
        self.fuse = _ConvBN(self.filters, 1, strides=self.strides, relu=False, name="fuse", **kw)
        # compact: the fuse conv reads the concatenated branches (= the sum of per-branch convs)
        fuse_in = c if self.layout == "literal" else mid * len(self.kernel_sizes)
        self.fuse.build((*input_shape[:3], fuse_in))
        self.built = True

    def call(self, inputs, training=None):
        check_feature_map(self, inputs.shape, reduction=self.reduction, static_spatial=True)
        outs = []
        for units in self.branches:
            y = inputs
            for unit in units:
                y = unit(y, training=training)
            outs.append(y)
        if self.layout == "literal":
            merged = outs[0]
            for y in outs[1:]:
                merged = merged + y
        else:
            merged = ops.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]
        return ops.sigmoid(self.fuse(merged, training=training))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = check_feature_map(self, input_shape, reduction=self.reduction, static_spatial=True)
        s = self.strides
        return (b, -(-h // s), -(-w // s), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides, "reduction": self.reduction,
                       "kernel_sizes": list(self.kernel_sizes), "layout": self.layout})
        return config
