"""Building blocks of the HA-CNN graph: Inception-A/B units and region folding layers.

All are registered Keras layers (no ``Lambda``) so models built from them reload with
``keras.saving.load_model(path, safe_mode=True)``.
"""

from __future__ import annotations

import keras
from keras import ops

from tfreid.layers.conv_bn_relu import ConvBNReLU
from tfreid.layers.padded_pooling import PaddedPooling2D
from tfreid.layers.validation import PADDINGS, check_choice, check_feature_map, check_positive_int


class _Inception(keras.layers.Layer):
    """Parallel streams of `ConvBNReLU` (optionally after a pooling layer), concatenated.

    Subclasses define ``_streams(quarter)`` returning, per stream, a pooling layer or None and a
    list of ``(filters, kernel, stride)`` conv specs. Sublayers are named ``s{i}_conv{j}``.
    """

    def __init__(self, filters: int, use_bias: bool = False, padding: str = "same", **kwargs):
        super().__init__(**kwargs)
        self.padding = check_choice("padding", padding, PADDINGS)
        self.filters = check_positive_int("filters", filters)
        if self.filters % 4:
            raise ValueError(
                f"{type(self).__name__}: `filters` must be a multiple of 4 (streams get filters/4 "
                f"channels each), received filters={filters!r}."
            )
        if not isinstance(use_bias, bool):
            raise ValueError(f"`use_bias` must be a bool, received use_bias={use_bias!r}.")
        self.use_bias = use_bias
        self.streams = []
        for i, (pool, specs) in enumerate(self._streams(self.filters // 4), start=1):
            convs = [
                ConvBNReLU(f, k, strides=s, use_bias=use_bias, padding=padding, name=f"s{i}_conv{j}",
                           dtype=self.dtype_policy)
                for j, (f, k, s) in enumerate(specs, start=1)
            ]
            self.streams.append((pool, convs))

    def _streams(self, quarter):
        raise NotImplementedError

    def build(self, input_shape):
        input_shape = check_feature_map(self, input_shape)
        for pool, convs in self.streams:
            shape = pool.compute_output_shape(input_shape) if pool is not None else input_shape
            for conv in convs:
                conv.build(shape)
                shape = conv.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, training=None):
        outputs = []
        for pool, convs in self.streams:
            y = pool(inputs) if pool is not None else inputs
            for conv in convs:
                y = conv(y, training=training)
            outputs.append(y)
        return ops.concatenate(outputs, axis=-1)

    def compute_output_shape(self, input_shape):
        shape = check_feature_map(self, input_shape)
        pool, convs = self.streams[0]
        for conv in convs:
            shape = conv.compute_output_shape(shape)
        return (*shape[:3], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "use_bias": self.use_bias, "padding": self.padding})
        return config


@keras.saving.register_keras_serializable(package="tfreid")
class InceptionA(_Inception):
    """HA-CNN Inception-A unit (stride 1): three 1x1->3x3 streams and avgpool->1x1, filters/4 each.

    Average pooling is 3x3, stride 1: with ``padding="same"`` Keras excludes the padding from the
    average, with ``"symmetric"`` it counts it (torchreid's ``AvgPool2d``); only border values
    differ.

    Args:
        filters: output channels (multiple of 4).
        use_bias: whether the convolutions have a bias (torchreid: True). Default False.
        padding: ``"same"`` (TF) or ``"symmetric"`` (PyTorch's ``padding=k // 2`` for the
            strided convs and pools, padding counted in averages). Default ``"same"``.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: ``[B, H, W, C]``; training: Python bool, forwarded to BN.

    Returns:
        ``[B, H, W, filters]``.

    Example:

    >>> InceptionA(128)(keras.random.normal((2, 80, 32, 32))).shape
    (2, 80, 32, 128)

    Reference:
        W. Li et al., "Harmonious Attention Network for Person Re-Identification", CVPR 2018,
        Fig. 2; C. Szegedy et al., "Inception-v4, Inception-ResNet ...", AAAI 2017.
    """

    def _streams(self, q):
        if self.padding == "symmetric":
            pool = PaddedPooling2D("avg", 3, strides=1, name="s4_pool", dtype=self.dtype_policy)
        else:
            pool = keras.layers.AveragePooling2D(3, strides=1, padding="same", name="s4_pool", dtype=self.dtype_policy)
        return [(None, [(q, 1, 1), (q, 3, 1)])] * 3 + [(pool, [(q, 1, 1)])]


@keras.saving.register_keras_serializable(package="tfreid")
class InceptionB(_Inception):
    """HA-CNN Inception-B unit (stride 2): 1x1->3x3/s2, 1x1->3x3->3x3/s2 (filters/4 each) and
    maxpool 3x3/s2 -> 1x1 (filters/2).

    Args and call arguments: as `InceptionA`.

    Returns:
        ``[B, ceil(H / 2), ceil(W / 2), filters]``.

    Example:

    >>> InceptionB(128)(keras.random.normal((8, 24, 28, 32))).shape
    (8, 12, 14, 128)

    Reference: as `InceptionA`.
    """

    def _streams(self, q):
        if self.padding == "symmetric":
            pool = PaddedPooling2D("max", 3, strides=2, name="s3_pool", dtype=self.dtype_policy)
        else:
            pool = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="s3_pool", dtype=self.dtype_policy)
        return [
            (None, [(q, 1, 1), (q, 3, 2)]),
            (None, [(q, 1, 1), (q, 3, 1), (q, 3, 2)]),
            (pool, [(2 * q, 1, 1)]),
        ]


@keras.saving.register_keras_serializable(package="tfreid")
class FoldRegions(keras.layers.Layer):
    """Folds regions into the batch, ``[B, T, ...] -> [B * T, ...]`` (region-major per image).

    Lets one set of local-branch layers process all ``T`` regions in a single call, which is how
    HA-CNN shares the local Inceptions among regions (and is faster than ``T`` calls).

    Call arguments:
        inputs: ``[B, T, *rest]`` with static ``T`` and ``rest``.

    Returns:
        ``[B * T, *rest]``; row ``b * T + t`` holds region ``t`` of image ``b``.

    Example:

    >>> FoldRegions()(keras.ops.zeros((2, 4, 6, 7, 8))).shape
    (8, 6, 7, 8)
    """

    def _check_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 3 or None in input_shape[1:]:
            raise ValueError(
                f"FoldRegions expects inputs [B, T, ...] with static non-batch dims, received shape {input_shape}."
            )
        return input_shape

    def call(self, inputs):
        shape = self._check_shape(inputs.shape)
        return ops.reshape(inputs, (-1, *shape[2:]))

    def compute_output_shape(self, input_shape):
        shape = self._check_shape(input_shape)
        batch = None if shape[0] is None else shape[0] * shape[1]
        return (batch, *shape[2:])


@keras.saving.register_keras_serializable(package="tfreid")
class UnfoldRegions(keras.layers.Layer):
    """Inverse of `FoldRegions`: ``[B * T, ...] -> [B, T, ...]``.

    Args:
        num_regions: ``T`` (integer >= 1).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: ``[B * T, *rest]`` with static ``rest``.

    Returns:
        ``[B, T, *rest]``.

    Example:

    >>> UnfoldRegions(4)(keras.ops.zeros((8, 384))).shape
    (2, 4, 384)
    """

    def __init__(self, num_regions: int, **kwargs):
        super().__init__(**kwargs)
        self.num_regions = check_positive_int("num_regions", num_regions)

    def _check_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2 or None in input_shape[1:]:
            raise ValueError(
                f"UnfoldRegions expects inputs [B*T, ...] with static non-batch dims, received shape {input_shape}."
            )
        if input_shape[0] is not None and input_shape[0] % self.num_regions:
            raise ValueError(
                f"UnfoldRegions: batch {input_shape[0]} is not a multiple of num_regions={self.num_regions}."
            )
        return input_shape

    def call(self, inputs):
        shape = self._check_shape(inputs.shape)
        return ops.reshape(inputs, (-1, self.num_regions, *shape[1:]))

    def compute_output_shape(self, input_shape):
        shape = self._check_shape(input_shape)
        batch = None if shape[0] is None else shape[0] // self.num_regions
        return (batch, self.num_regions, *shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update({"num_regions": self.num_regions})
        return config


@keras.saving.register_keras_serializable(package="tfreid")
class PerRegion(keras.layers.Wrapper):
    """Applies ``layer`` to each region of a folded batch in its own call (shared weights).

    torchreid's HA-CNN calls its local Inception-B once per region, so every batch norm inside
    normalises, and updates its moving statistics, region by region (T updates per step); one
    call on the folded batch normalises all regions together.

    Args:
        layer: the layer to apply, e.g. `InceptionB`.
        num_regions: ``T`` (integer >= 1).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: ``[B * T, *rest]`` in `FoldRegions` order (row ``b * T + t`` is region ``t``).

    Returns:
        ``layer``'s output per region, folded back in the same order.

    Example:

    >>> PerRegion(keras.layers.BatchNormalization(), 4)(keras.ops.ones((8, 6))).shape
    (8, 6)
    """

    def __init__(self, layer, num_regions: int, **kwargs):
        super().__init__(layer, **kwargs)
        self.num_regions = check_positive_int("num_regions", num_regions)

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build((None, *tuple(input_shape)[1:]))
        self.built = True

    def call(self, inputs, training=None):
        regions = ops.reshape(inputs, (-1, self.num_regions, *inputs.shape[1:]))
        outputs = ops.stack([self.layer(regions[:, t], training=training) for t in range(self.num_regions)], axis=1)
        return ops.reshape(outputs, (-1, *outputs.shape[2:]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.layer.compute_output_shape((None, *tuple(input_shape)[1:]))[1:])

    def get_config(self):
        config = super().get_config()
        config.update({"num_regions": self.num_regions})
        return config


@keras.saving.register_keras_serializable(package="tfreid")
class ChannelMean(keras.layers.Layer):
    """Mean over channels, ``[B, H, W, C] -> [B, H, W, 1]`` (attention maps for visualisation).

    Example:

    >>> ChannelMean()(keras.ops.ones((2, 5, 3, 8))).shape
    (2, 5, 3, 1)
    """

    def call(self, inputs):
        return ops.mean(inputs, axis=-1, keepdims=True)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], 1)
