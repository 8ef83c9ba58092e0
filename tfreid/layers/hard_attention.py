"""HA-CNN hard regional attention: predicts one translation (tx, ty) per region."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfreid.layers.validation import check_bool, check_feature_map, check_positive_int

POOLINGS = ("average", "stripes")


def band_matrix(height: int, bands: int) -> np.ndarray:
    """[bands, height] averaging weights of adaptive average pooling (PyTorch's band edges:
    rows floor(i * H / S) .. ceil((i + 1) * H / S) - 1)."""
    weights = np.zeros((bands, height), np.float32)
    for i in range(bands):
        start, stop = (i * height) // bands, -((-(i + 1) * height) // bands)
        weights[i, start:stop] = 1.0 / (stop - start)
    return weights


def stripe_bias(num_regions: int) -> np.ndarray:
    """Pre-tanh Dense bias placing ``num_regions`` regions as evenly spaced horizontal stripes.

    Region ``t`` gets ``tx = 0`` and ``ty_t = -1 + (2 t + 1) / T``; for ``T = 4`` this is
    torchreid's ``[0, -0.75, 0, -0.25, 0, 0.25, 0, 0.75]``.

    Args:
        num_regions: the number of regions ``T`` (>= 1).

    Returns:
        float32 array of shape ``[2 T]``, interleaved ``(tx, ty)`` per region.
    """
    ty = -1.0 + (2.0 * np.arange(num_regions) + 1.0) / num_regions
    return np.stack([np.zeros_like(ty), ty], axis=1).reshape(-1).astype("float32")


@keras.saving.register_keras_serializable(package="tfreid")
class HardRegionAttention(keras.layers.Layer):
    """GAP -> Dense(2T) -> tanh -> per-region translations (tx, ty); fixed scales.

    The hard regional attention of HA-CNN learns, for each of ``T`` regions, the translation of an
    affine box whose scale is fixed (``s_h = 0.25``, ``s_w = 1`` in HA-CNN; the scale belongs to
    `RegionSampler`). The translations are squashed by tanh into ``(-1, 1)`` — "percentages" of the
    feature map that still let a region reach past the border (partially detected persons).

    Initialisation follows torchreid's ``HardAttn.init_params``: the Dense kernel is zero and the
    bias is ``tx = 0``, ``ty_t = -1 + (2 t + 1) / T`` *before* tanh (``T = 4``: ``-0.75, -0.25,
    0.25, 0.75``), so at initialisation the output is ``tanh(bias)`` for every input and the regions
    are ``T`` horizontal stripes from top to bottom. The Dense sublayer is named ``"fc"``.

    Options for localisation experiments, all off by default (the paper's design): the global
    average pool carries no vertical position and its inputs are all positive (post-ReLU), so
    theta tends to a per-run constant (``docs/models.md``). ``pooling="stripes"`` feeds the Dense
    the average of each of ``stripes`` horizontal bands (``stripes * C`` inputs, position-aware);
    ``center=True`` normalises that input per feature with batch statistics (BatchNormalization
    without scale and offset, sublayer ``"center"``): centred, unit variance; ``frozen=True``
    makes ``fc`` untrainable, i.e. theta stays at the stripes (ablation "learned vs fixed
    stripes"). A learning-rate multiplier for ``fc`` is an optimizer setting
    (``optim.lr_groups`` with ``lr_mult``).

    Args:
        num_regions: ``T``, number of regions (integer >= 1).
        pooling: ``"average"`` (default, paper) or ``"stripes"``.
        stripes: horizontal bands with ``pooling="stripes"``. Default 8.
        center: batch-normalise the pooled input (no affine). Default False.
        frozen: keep theta at the initial stripes (``fc`` not trainable). Default False.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: feature map ``[B, H, W, C]`` (HA-CNN: the output of the global block).
        training: Python bool, forwarded to the ``center`` normalisation.

    Returns:
        ``theta`` of shape ``[B, T, 2]``, ``theta[..., 0] = tx``, ``theta[..., 1] = ty``, in
        ``(-1, 1)``, ready for `RegionSampler`.

    Example:

    >>> x = keras.random.normal((2, 40, 16, 128))
    >>> theta = HardRegionAttention(num_regions=4)(x)
    >>> tuple(theta.shape)
    (2, 4, 2)

    Reference:
        W. Li, X. Zhu, S. Gong, "Harmonious Attention Network for Person Re-Identification",
        CVPR 2018, Sec. 3.1 (hard regional attention).
    """

    def __init__(self, num_regions: int = 4, pooling: str = "average", stripes: int = 8,
                 center: bool = False, frozen: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_regions = check_positive_int("num_regions", num_regions)
        if pooling not in POOLINGS:
            raise ValueError(f"`pooling` must be one of {', '.join(POOLINGS)}, received pooling={pooling!r}.")
        self.pooling, self.stripes = pooling, check_positive_int("stripes", stripes)
        self.center, self.frozen = check_bool("center", center), check_bool("frozen", frozen)
        kw = dict(dtype=self.dtype_policy)
        # "stripes" pools in call() with a constant band matrix (Keras's AdaptiveAveragePooling2D
        # fails on HA-CNN's 40x16 level-1 maps in graph mode).
        self.pool = keras.layers.GlobalAveragePooling2D(name="gap", **kw) if pooling == "average" else None
        self.norm = (keras.layers.BatchNormalization(center=False, scale=False, name="center", **kw)
                     if center else None)
        self.fc = keras.layers.Dense(
            2 * self.num_regions,
            kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(0.0),
            name="fc",
            dtype=self.dtype_policy,
        )
        self.fc.trainable = not frozen

    def build(self, input_shape):
        input_shape = check_feature_map(self, input_shape, static_spatial=self.pooling == "stripes")
        if self.pool is not None:
            self.pool.build(input_shape)
        features = input_shape[-1] * (self.stripes if self.pooling == "stripes" else 1)
        if self.norm is not None:
            self.norm.build((input_shape[0], features))
        self.fc.build((input_shape[0], features))
        # Stripe layout at init (torchreid HardAttn.init_params); loaded weights overwrite it.
        self.fc.bias.assign(ops.cast(stripe_bias(self.num_regions), self.fc.bias.dtype))
        self.built = True

    def call(self, inputs, training=None):
        check_feature_map(self, inputs.shape, static_spatial=self.pooling == "stripes")
        if self.pool is not None:
            x = self.pool(inputs)
        else:  # row means [B, H, C] -> band means [B, S, C] -> [B, S * C], band-major
            bands = ops.cast(band_matrix(inputs.shape[1], self.stripes), inputs.dtype)
            x = ops.einsum("sh,bhc->bsc", bands, ops.mean(inputs, axis=2))
            x = ops.reshape(x, (-1, self.stripes * inputs.shape[-1]))
        if self.norm is not None:
            x = self.norm(x, training=training)
        theta = ops.tanh(self.fc(x))
        return ops.reshape(theta, (-1, self.num_regions, 2))

    def compute_output_shape(self, input_shape):
        input_shape = check_feature_map(self, input_shape, static_spatial=self.pooling == "stripes")
        return (input_shape[0], self.num_regions, 2)

    def get_config(self):
        config = super().get_config()
        config.update({"num_regions": self.num_regions, "pooling": self.pooling, "stripes": self.stripes,
                       "center": self.center, "frozen": self.frozen})
        return config
