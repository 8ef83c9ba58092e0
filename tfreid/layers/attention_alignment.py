"""AANet attention alignment (AAM): identity classifier + CAM -> cropped, resized row profile."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from tfreid.layers.validation import check_bool, check_feature_map, check_positive_int

_EPS = 1e-6  # a CAM whose max - min is below this is flat: normalised to 0 everywhere


def _check_threshold(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1], received {name}={value!r}.")
    return float(value)


@keras.saving.register_keras_serializable(package="tfreid")
class AttentionAlignment(keras.layers.Layer):
    """Holistic identity classifier and the attention vectors AANet aligns (Sec. 3.3, Fig. 4).

    The layer owns the classifier ``W [C, N]``, ``b [N]`` on the global average of the last
    feature map ``A`` (``logits = GAP(A) W + b``, Eq. 3), so the class activation maps are those
    of exactly this classifier: ``M_n(y, x) = sum_k W[k, n] A_k(y, x)`` (Eq. 4). For every class
    ``n`` and image it then

    1. min-max normalises ``M_n`` to ``[0, 1]`` (Eq. 5; a flat map becomes 0);
    2. averages it over each row (vertical profile, length ``H``) and over each column
       (horizontal profile, length ``W``);
    3. keeps rows ``[r0, r1]``: the first to the last row whose profile is ``>= T_h``, and
       columns ``[c0, c1]`` likewise with ``T_w`` (the dual soft thresholds; no row / column
       passing keeps all of them);
    4. averages the cropped map over its columns (one value per kept row) and
    5. resizes that ``r1 - r0 + 1`` long vector to ``length`` by linear interpolation with
       half-pixel centres, clamped at the ends (``tf.image.resize`` / PyTorch
       ``interpolate(mode="linear", align_corners=False)``).

    Labels are not model inputs (a model's outputs never depend on them), so the vectors come
    for every class, ``[B, N, L]`` (cheap on the last maps); `attention_cosine_distance` picks the
    true class's row with the labels it receives. Gradients reach the feature map and the
    classifier through the normalised CAM values; the crop bounds and interpolation positions
    are integer selections and carry none. Everything is computed in float32. Training only:
    the embedding does not use this layer. Weights: ``"kernel"``, ``"bias"``.

    Args:
        num_classes: number of identities ``N``.
        length: length ``L`` of the attention vectors; default (None) the map height ``H``.
        height_threshold: ``T_h`` in ``[0, 1]``. Default 0.3 (paper, Fig. 6(b)).
        width_threshold: ``T_w`` in ``[0, 1]``. Default 0.3 (paper, Sec. 4.5.2).
        use_bias: whether the classifier has a bias (it does not enter the CAM). Default True.
        kernel_initializer: classifier kernel initializer. Default ``"glorot_uniform"``.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: last feature map ``[B, H, W, C]`` with static ``H``, ``W``, ``C``.

    Returns:
        ``(logits [B, N], vectors [B, N, L])``, float32; vectors lie in ``[0, 1]``.

    Example:

    >>> layer = AttentionAlignment(751)
    >>> logits, vectors = layer(keras.random.uniform((2, 24, 12, 2048)))
    >>> logits.shape, vectors.shape
    ((2, 751), (2, 751, 24))

    Reference:
        S. Lian, W. Jiang, H. Hu, "Attention-Aligned Network for Person Re-Identification",
        IEEE TCSVT 2020, Sec. 3.3, Eq. 3-5, Fig. 4; B. Zhou et al., "Learning Deep Features for
        Discriminative Localization", CVPR 2016 (CAM).
    """

    def __init__(self, num_classes: int, length: int | None = None, height_threshold: float = 0.3,
                 width_threshold: float = 0.3, use_bias: bool = True, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.length = None if length is None else check_positive_int("length", length)
        self.height_threshold = _check_threshold("height_threshold", height_threshold)
        self.width_threshold = _check_threshold("width_threshold", width_threshold)
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        c = check_feature_map(self, input_shape, static_spatial=True)[-1]
        self.kernel = self.add_weight(shape=(c, self.num_classes), initializer=self.kernel_initializer,
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.num_classes,), initializer="zeros", name="bias") \
            if self.use_bias else None
        self.built = True

    def call(self, inputs):
        _, h, w, _ = check_feature_map(self, inputs.shape, static_spatial=True)
        length = self.length or h
        features = ops.cast(inputs, "float32")
        kernel = ops.cast(self.kernel, "float32")
        logits = ops.matmul(ops.mean(features, axis=(1, 2)), kernel)
        if self.bias is not None:
            logits = logits + ops.cast(self.bias, "float32")

        cam = ops.einsum("bhwc,cn->bnhw", features, kernel)  # Eq. 4, every class
        low = ops.min(cam, axis=(2, 3), keepdims=True)
        span = ops.max(cam, axis=(2, 3), keepdims=True) - low
        flat = span <= _EPS
        # The safe denominator keeps the gradient of the unused branch finite on flat maps.
        cam = ops.where(flat, 0.0, (cam - low) / ops.where(flat, 1.0, span))  # Eq. 5

        rows = self._kept_range(ops.mean(cam, axis=3), self.height_threshold)  # (r0, r1) [B, N]
        c0, c1 = self._kept_range(ops.mean(cam, axis=2), self.width_threshold)
        col = ops.arange(w, dtype="int32")[None, None, :]
        col_mask = ops.cast((col >= c0[..., None]) & (col <= c1[..., None]), "float32")  # [B, N, W]
        profile = ops.einsum("bnhw,bnw->bnh", cam, col_mask) / ops.sum(col_mask, axis=2, keepdims=True)
        return logits, self._resize_span(profile, *rows, length)

    @staticmethod
    def _kept_range(profile, threshold):
        """First and last index with ``profile >= threshold`` (all of them if none), int32."""
        n = profile.shape[-1]
        idx = ops.arange(n, dtype="int32")
        keep = profile >= threshold
        first = ops.min(ops.where(keep, idx, n), axis=-1)
        last = ops.max(ops.where(keep, idx, -1), axis=-1)
        none = last < 0
        return ops.where(none, 0, first), ops.where(none, n - 1, last)

    @staticmethod
    def _resize_span(profile, start, stop, length):
        """Linear resize (half-pixel centres, clamped) of ``profile[..., start:stop + 1]`` to
        ``length``, per row of ``profile [B, N, H]`` with its own ``start``/``stop`` ``[B, N]``."""
        start = ops.cast(start, "float32")[..., None]
        stop = ops.cast(stop, "float32")[..., None]
        j = ops.arange(length, dtype="float32")[None, None, :]
        src = start + (j + 0.5) * (stop - start + 1.0) / length - 0.5
        src = ops.clip(src, start, stop)
        lo = ops.floor(src)
        frac = src - lo
        hi = ops.minimum(lo + 1.0, stop)
        v_lo = ops.take_along_axis(profile, ops.cast(lo, "int32"), axis=-1)
        v_hi = ops.take_along_axis(profile, ops.cast(hi, "int32"), axis=-1)
        return v_lo * (1.0 - frac) + v_hi * frac

    def compute_output_shape(self, input_shape):
        b, h, _, _ = check_feature_map(self, input_shape, static_spatial=True)
        return (b, self.num_classes), (b, self.num_classes, self.length or h)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "length": self.length,
                       "height_threshold": self.height_threshold, "width_threshold": self.width_threshold,
                       "use_bias": self.use_bias,
                       "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)})
        return config
