"""Differentiable bilinear sampling of axis-aligned regions (HA-CNN hard attention).

The regions of HA-CNN's hard regional attention are affine boxes with a fixed scale and a learned
translation, ``theta = [[s_w, 0, tx], [0, s_h, ty]]``. Because such a box has no rotation or shear,
bilinear sampling is separable: with ``W_y[r, i] = max(0, 1 - |src_y(r) - i|)`` (one row of tent
weights per output row) and ``W_x`` likewise for columns, the sampled region of one channel is
``W_y @ X @ W_x^T``. That is exact bilinear interpolation with zero padding, differentiable in
``(tx, ty)`` almost everywhere, and made only of element-wise ops and batched matmuls, so it runs
under XLA and converts to TFLite with builtin ops only (no gather, no Flex ops).
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from tfreid.layers.validation import check_bool, check_feature_map


def _check_pair(name, value, kind, high):
    """Returns `value` as a tuple if it is a pair of `kind` numbers in (0, high], else raises."""
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    ok = len(pair) == 2 and all(
        isinstance(v, kind) and not isinstance(v, bool) and 0 < v <= high for v in pair
    )
    if not ok:
        what = "positive integers" if kind is numbers.Integral else f"numbers in (0, {high}]"
        raise ValueError(f"`{name}` must be a pair of {what}, received {name}={value!r}.")
    return pair


def _tent_weights(shift, scale, n_out, n_in, align_corners, dtype):
    """Bilinear tent weights [B, T, n_out, n_in] for one axis; `shift` is [B, T] (tx or ty)."""
    # pixel = slope * j' + offset, rearranged from the normalised-coordinate formulas so that
    # identity sampling is exact in floating point (slope 1, integer offsets, no -1/+1 trips).
    j = ops.cast(ops.arange(n_out), dtype)
    if align_corners:
        half = 0.5 * (n_in - 1)
        slope = scale * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        offset = (shift + (1.0 - scale)) * half if n_out > 1 else (shift + 1.0) * half
    else:
        half = 0.5 * n_in
        slope = scale * n_in / n_out
        offset = (shift + (1.0 - scale)) * half - 0.5
        j = j + 0.5
    pix = slope * j[None, None, :] + offset[:, :, None]  # [B, T, n_out]
    i = ops.cast(ops.arange(n_in), dtype)
    return ops.relu(1.0 - ops.abs(pix[..., None] - i[None, None, None, :]))


@keras.saving.register_keras_serializable(package="tfreid")
class RegionSampler(keras.layers.Layer):
    """Differentiable bilinear sampling of T axis-aligned regions (scale + translation).

    For region ``t`` with translation ``(tx, ty) = theta[b, t]`` and an output pixel whose
    normalised coordinates are ``(u, v)`` in ``[-1, 1]``, the sampled source location is
    ``x = s_w * u + tx``, ``y = s_h * v + ty`` — exactly PyTorch's
    ``affine_grid(theta=[[s_w, 0, tx], [0, s_h, ty]])`` followed by bilinear ``grid_sample`` with
    ``padding_mode="zeros"`` (torchreid's HA-CNN). Conventions, made explicit:

    - ``align_corners=False`` (default, PyTorch >= 1.3): normalised -1 and 1 are the outer *edges*
      of the border pixels. Output pixel ``j`` of ``n`` has ``u_j = (2 j + 1) / n - 1`` and a
      normalised source ``x`` maps to pixel ``((x + 1) * W - 1) / 2``. Thus identity theta with
      output size = input size returns the input unchanged.
    - ``align_corners=True``: -1 and 1 are the *centres* of the border pixels,
      ``u_j = -1 + 2 j / (n - 1)`` (``u = 0`` when ``n == 1``) and pixel ``= (x + 1) * (W - 1) / 2``.
    - Zero padding: a sample at pixel coordinate ``p`` gets tent weight ``max(0, 1 - |p - i|)``
      from every *existing* pixel ``i``; neighbours outside the image do not exist, so samples
      near or beyond the border fade linearly to zero (the sum of weights drops below 1).
    - ``sample_then_resize=True``: torchreid's two steps, ``grid_sample`` at the source map's own
      size ``(H, W)`` followed by ``F.upsample(..., output_size, mode="bilinear",
      align_corners=True)``. Both steps are linear maps per axis, so the layer multiplies their
      tent matrices and still samples in one pass.

    Weights are computed in float32 (float64 when the layer runs in float64) and cast to the
    feature dtype, so the layer is safe under ``mixed_float16``.

    Args:
        output_size: ``(out_h, out_w)``, positive integers: the size of each sampled region.
        scale: ``(s_h, s_w)``, fixed region scales in normalised coordinates, each in ``(0, 2]``
            (1 = full extent). HA-CNN uses ``(0.25, 1.0)``: quarter height, full width.
        align_corners: bool, the normalised-to-pixel convention described above.
        sample_then_resize: bool, torchreid's two-step sampling described above. Default False:
            sample directly at ``output_size``.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: list ``[features, theta]``: ``features`` of shape ``[B, H, W, C]`` and ``theta`` of
            shape ``[B, T, 2]`` with ``theta[..., 0] = tx`` and ``theta[..., 1] = ty`` (normalised
            translations, typically in ``(-1, 1)`` as produced by `HardRegionAttention`).

    Returns:
        Tensor ``[B, T, out_h, out_w, C]`` in the feature dtype.

    Example:

    >>> feats = keras.random.normal((2, 80, 32, 32))
    >>> theta = keras.ops.zeros((2, 4, 2))
    >>> tuple(RegionSampler((24, 28))([feats, theta]).shape)
    (2, 4, 24, 28, 32)

    Reference:
        W. Li, X. Zhu, S. Gong, "Harmonious Attention Network for Person Re-Identification",
        CVPR 2018, Sec. 3.1 (hard regional attention, Eq. 5).
    """

    def __init__(
        self,
        output_size: tuple[int, int],
        scale: tuple[float, float] = (0.25, 1.0),
        align_corners: bool = False,
        sample_then_resize: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        size = _check_pair("output_size", output_size, numbers.Integral, float("inf"))
        self.output_size = tuple(int(v) for v in size)
        self.scale = tuple(float(v) for v in _check_pair("scale", scale, numbers.Real, 2.0))
        if not isinstance(align_corners, bool):
            raise ValueError(f"`align_corners` must be a bool, received align_corners={align_corners!r}.")
        self.align_corners = align_corners
        self.sample_then_resize = check_bool("sample_then_resize", sample_then_resize)

    # ----------------------------------------------------------------------------- shapes
    def _check_shapes(self, features_shape, theta_shape):
        check_feature_map(self, features_shape, static_channels=False, name="features")
        if len(theta_shape) != 3 or (theta_shape[-1] is not None and theta_shape[-1] != 2):
            raise ValueError(
                "RegionSampler expects theta of shape [B, T, 2] holding (tx, ty), "
                f"received shape {tuple(theta_shape)}."
            )
        fb, tb = features_shape[0], theta_shape[0]
        if fb is not None and tb is not None and fb != tb:
            raise ValueError(
                f"RegionSampler: features and theta must have the same batch size, received "
                f"features shape {tuple(features_shape)} and theta shape {tuple(theta_shape)}."
            )

    def _split_shapes(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2:
            raise ValueError(
                f"RegionSampler expects inputs [features, theta], received input shape {input_shape!r}."
            )
        return tuple(input_shape[0]), tuple(input_shape[1])

    def build(self, input_shape):
        self._check_shapes(*self._split_shapes(input_shape))
        self.built = True

    def compute_output_shape(self, input_shape):
        features_shape, theta_shape = self._split_shapes(input_shape)
        self._check_shapes(features_shape, theta_shape)
        batch = features_shape[0] if features_shape[0] is not None else theta_shape[0]
        return (batch, theta_shape[1], *self.output_size, features_shape[3])

    # ----------------------------------------------------------------------------- math
    def _axis_weights(self, shift, scale, n_out, n_in, dtype):
        """Sampling weights [B, T, n_out, n_in] for one axis; `shift` is [B, T] (tx or ty)."""
        if not self.sample_then_resize:
            return _tent_weights(shift, scale, n_out, n_in, self.align_corners, dtype)
        sample = _tent_weights(shift, scale, n_in, n_in, self.align_corners, dtype)  # [B, T, n_in, n_in]
        # F.upsample with align_corners=True maps output j to input j * (n_in - 1) / (n_out - 1);
        # a single output reads pixel 0 (shift -1 puts it there).
        edge = ops.full((1, 1), -1.0 if n_out == 1 else 0.0, dtype)
        resize = _tent_weights(edge, 1.0, n_out, n_in, True, dtype)[0, 0]
        # resize @ sample per region, as one 2-D matmul: [B*T*n_in, n_in] @ [n_in, n_out].
        b, t = ops.shape(shift)[0], ops.shape(shift)[1]
        flat = ops.reshape(ops.transpose(sample, (0, 1, 3, 2)), (b * t * n_in, n_in))
        composed = ops.reshape(ops.matmul(flat, ops.transpose(resize)), (b, t, n_in, n_out))
        return ops.transpose(composed, (0, 1, 3, 2))

    def call(self, inputs):
        features, theta = inputs
        self._check_shapes(tuple(features.shape), tuple(theta.shape))
        check_feature_map(self, features.shape, static_spatial=True, name="features")
        out_h, out_w = self.output_size
        s_h, s_w = self.scale
        shape = ops.shape(features)
        batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
        num_regions = ops.shape(theta)[1]

        # Sampling positions need more precision than float16 gives (pixel error ~ W * 5e-4).
        wdtype = "float64" if keras.backend.standardize_dtype(features.dtype) == "float64" else "float32"
        theta = ops.cast(theta, wdtype)
        w_y = self._axis_weights(theta[:, :, 1], s_h, out_h, height, wdtype)  # [B, T, oh, H]
        w_x = self._axis_weights(theta[:, :, 0], s_w, out_w, width, wdtype)  # [B, T, ow, W]
        w_y = ops.cast(w_y, features.dtype)
        w_x = ops.cast(w_x, features.dtype)

        # Rows first: [B, T*oh, H] @ [B, H, W*C] -> [B, T*oh, W*C] (rank-3 matmuls, no broadcasting,
        # which keeps TFLite's BATCH_MATMUL on its plain path).
        rows = ops.matmul(
            ops.reshape(w_y, (batch, num_regions * out_h, height)),
            ops.reshape(features, (batch, height, width * channels)),
        )
        # Columns: bring W to the contraction axis, [B*T, ow, W] @ [B*T, W, oh*C].
        rows = ops.reshape(rows, (batch, num_regions, out_h, width, channels))
        rows = ops.transpose(rows, (0, 1, 3, 2, 4))
        rows = ops.reshape(rows, (batch * num_regions, width, out_h * channels))
        out = ops.matmul(ops.reshape(w_x, (batch * num_regions, out_w, width)), rows)
        out = ops.reshape(out, (batch, num_regions, out_w, out_h, channels))
        return ops.transpose(out, (0, 1, 3, 2, 4))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_size": list(self.output_size),
                "scale": list(self.scale),
                "align_corners": self.align_corners,
                "sample_then_resize": self.sample_then_resize,
            }
        )
        return config
