"""ADFL arrangements of a spatial and a channel attention module: sc, cs, sum, multiply."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.checks import math_dtype
from tfreid.layers.channel_self_attention import ChannelSelfAttention
from tfreid.layers.direct_channel_attention import DirectChannelAttention
from tfreid.layers.direct_spatial_attention import DirectSpatialAttention
from tfreid.layers.position_attention import PositionAttention
from tfreid.layers.validation import check_bool, check_feature_map, check_positive_int

ARRANGEMENTS = ("sc", "cs", "sum", "multiply")


@keras.saving.register_keras_serializable(package="tfreid")
class AttentionArrangement(keras.layers.Layer):
    """A spatial and a channel attention module of one type, arranged as in ADFL Fig. 6.

    Type I pairs `PositionAttention` (1s) with `ChannelSelfAttention` (1c); type II pairs
    `DirectSpatialAttention` (2s) with `DirectChannelAttention` (2c). Arrangements, with ``S``
    and ``C`` the two modules:

    - ``"sc"``: ``C(S(I))`` (spatial first);  ``"cs"``: ``S(C(I))`` (channel first);
    - ``"sum"``: ``S(I) + C(I)`` (parallel; for type I each term keeps its own residual, so
      the sum starts at ``2 I``, as in DANet);
    - ``"multiply"`` (type II only): ``(A^c * A^s) * I``, the channel map ``[B, 1, 1, C]`` times
      the spatial map ``[B, H, W, 1]`` forming one ``C x H x W`` map (Eq. 3).

    Sublayers: ``"spatial"`` and ``"channel"``.

    Args:
        attention_type: 1 (long-range dependency) or 2 (direct generation).
        arrangement: ``"sc"``, ``"cs"``, ``"sum"`` or ``"multiply"`` (type 2 only).
        spatial_reduction: ``C / C'`` of `PositionAttention` (type 1). Default 8.
        channel_reduction: MLP reduction of `DirectChannelAttention` (type 2). Default 16.
        kernel_size: convolution size of `DirectSpatialAttention` (type 2). Default 3.
        return_attention: if True, ``call`` also returns the spatial module's ``[B, H, W, 1]``
            map, computed on the input the spatial module sees.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` (static H, W, C).

    Returns:
        ``O`` of the same shape as ``inputs`` (and the spatial map if ``return_attention``).

    Example:

    >>> AttentionArrangement(1, "sum")(keras.random.normal((2, 24, 8, 64))).shape
    (2, 24, 8, 64)

    Reference:
        H. Liu, J. Cheng, S. Wang, W. Wang, "Attention: A Big Surprise for Cross-Domain Person
        Re-Identification", arXiv 2019, Sec. IV-C, Fig. 6, Eq. (3).
    """

    def __init__(self, attention_type: int, arrangement: str, spatial_reduction: int = 8,
                 channel_reduction: int = 16, kernel_size: int = 3, return_attention: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        if attention_type not in (1, 2) or isinstance(attention_type, bool):
            raise ValueError(f"`attention_type` must be 1 (long-range) or 2 (direct), received "
                             f"attention_type={attention_type!r}.")
        if arrangement not in ARRANGEMENTS:
            raise ValueError(f"`arrangement` must be one of {ARRANGEMENTS}, received "
                             f"arrangement={arrangement!r}.")
        if arrangement == "multiply" and attention_type != 2:
            raise ValueError("arrangement='multiply' multiplies two attention maps and needs "
                             "type 2 modules, received attention_type=1.")
        self.attention_type = int(attention_type)
        self.arrangement = arrangement
        self.spatial_reduction = check_positive_int("spatial_reduction", spatial_reduction)
        self.channel_reduction = check_positive_int("channel_reduction", channel_reduction)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.return_attention = check_bool("return_attention", return_attention)
        kw = dict(dtype=self.dtype_policy)
        maps = self.return_attention and arrangement != "multiply"
        if attention_type == 1:
            self.spatial = PositionAttention(spatial_reduction, return_attention=maps, name="spatial", **kw)
            self.channel = ChannelSelfAttention(name="channel", **kw)
        else:
            self.spatial = DirectSpatialAttention(kernel_size, return_attention=maps, name="spatial", **kw)
            self.channel = DirectChannelAttention(channel_reduction, name="channel", **kw)

    def _check_shape(self, input_shape):
        # Type I reduces the channels in the spatial module, Type II in the channel module.
        name = "spatial_reduction" if self.attention_type == 1 else "channel_reduction"
        return check_feature_map(self, input_shape, reduction=getattr(self, name), reduction_name=name,
                                 static_spatial=True)

    def build(self, input_shape):
        input_shape = self._check_shape(input_shape)
        self.spatial.build(input_shape)
        self.channel.build(input_shape)
        self.built = True

    def call(self, inputs):
        dt = math_dtype(self.compute_dtype)
        self._check_shape(inputs.shape)
        spatial_map = None
        if self.arrangement == "multiply":
            spatial_map = self.spatial.attention_map(inputs)
            attention = self.channel.attention_map(inputs) * spatial_map
            out = ops.cast(attention * ops.cast(inputs, dt), self.compute_dtype)
            spatial_map = ops.cast(spatial_map, self.compute_dtype)
        elif self.arrangement == "sc":
            out = self.spatial(inputs)
            if self.return_attention:
                out, spatial_map = out
            out = self.channel(out)
        elif self.arrangement == "cs":
            out = self.spatial(self.channel(inputs))
            if self.return_attention:
                out, spatial_map = out
        else:
            s = self.spatial(inputs)
            if self.return_attention:
                s, spatial_map = s
            out = s + self.channel(inputs)
        return (out, spatial_map) if self.return_attention else out

    def compute_output_shape(self, input_shape):
        shape = self._check_shape(input_shape)
        return (shape, (*shape[:3], 1)) if self.return_attention else shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "attention_type": self.attention_type, "arrangement": self.arrangement,
            "spatial_reduction": self.spatial_reduction, "channel_reduction": self.channel_reduction,
            "kernel_size": self.kernel_size, "return_attention": self.return_attention})
        return config
