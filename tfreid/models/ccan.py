"""CCAN: Cross-Correlated Attention Network as a Keras functional model."""

from __future__ import annotations

import functools
import numbers

import keras
from keras import ops

from tfreid.checks import check_input_shape
from tfreid.layers.cross_correlated_attention import CrossCorrelatedAttention
from tfreid.layers.symmetric_self_attention import SymmetricSelfAttention
from tfreid.layers.validation import check_bool, check_feature_map, check_positive_int
from tfreid.models.backbones.bn_inception import (bn_inception_stage, bn_inception_stem,
                                                  check_branch3_kernel, check_weights_path,
                                                  check_width_multiplier)
from tfreid.models.backbones.inception_v2 import inception_v2_stage, inception_v2_stem
from tfreid.models.backbones.weights import check_ccan_backbone
from tfreid.models.registry import register_model

BRANCHES = ("G", "L", "G+L")


@keras.saving.register_keras_serializable(package="tfreid")
class HorizontalStripe(keras.layers.Layer):
    """Stripe ``index`` of ``num_parts`` equal horizontal stripes, resized back to the full map.

    CCAN slices ``Z1`` / ``Z2`` into ``kp`` horizontal patches and resizes each, bilinearly, "to
    the size of their corresponding feature maps" (Sec. 3.2). Resizing uses half-pixel centres
    with edge clamping (``keras.ops.image.resize``, TF2 / TFLite ``RESIZE_BILINEAR`` default) in
    float32 (a bfloat16 resize gradient does not compile under XLA).

    Args:
        index: stripe number, ``0 <= index < num_parts`` (0 = top).
        num_parts: number of stripes ``kp``; must divide the map height.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: ``[B, H, W, C]`` with static ``H, W``.

    Returns:
        ``[B, H, W, C]``: rows ``index * H / kp`` to ``(index + 1) * H / kp`` upsampled to ``H``.

    Example:

    >>> HorizontalStripe(0, 4)(keras.ops.zeros((2, 32, 16, 480))).shape
    (2, 32, 16, 480)
    """

    def __init__(self, index: int, num_parts: int, **kwargs):
        super().__init__(**kwargs)
        self.num_parts = check_positive_int("num_parts", num_parts)
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < num_parts:
            raise ValueError(f"`index` must be an integer in [0, {num_parts}), received index={index!r}.")
        self.index = int(index)

    def _check_shape(self, shape):
        shape = check_feature_map(self, shape, static_spatial=True, static_channels=False)
        if shape[1] % self.num_parts:
            raise ValueError(
                f"HorizontalStripe: map height {shape[1]} is not divisible by num_parts={self.num_parts} "
                f"(CCAN slices equal stripes); choose an input height giving a multiple of it."
            )
        return shape

    def call(self, inputs):
        _, h, w, _ = self._check_shape(inputs.shape)
        rows = h // self.num_parts
        stripe = ops.cast(inputs[:, self.index * rows:(self.index + 1) * rows], "float32")
        return ops.cast(ops.image.resize(stripe, (h, w), interpolation="bilinear"), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return self._check_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"index": self.index, "num_parts": self.num_parts})
        return config


def _head(x, feature_dim, branch, bn=True):
    """FC_1 (the d-dim feature) as Dense (-> BN); the last layer in float32 so features stay float32."""
    if not bn:
        return keras.layers.Dense(feature_dim, name=f"fc_{branch}", dtype="float32")(x)
    x = keras.layers.Dense(feature_dim, name=f"fc_{branch}")(x)
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"fc_{branch}_bn", dtype="float32")(x)


def _backbone_builders(backbone: str, branch3_kernel):
    """``(stem(x, width), stage(x, stage, width, prefix=...))`` of CCAN's `backbone` option."""
    if backbone == "googlenet_bn":
        k5 = check_branch3_kernel(3 if branch3_kernel is None else branch3_kernel)
        return bn_inception_stem, functools.partial(bn_inception_stage, branch3_kernel=k5)
    if branch3_kernel is not None:
        raise ValueError(f"`branch3_kernel` sets GoogLeNet's \"5x5\" branch and applies only to "
                         f"backbone='googlenet_bn', received branch3_kernel={branch3_kernel!r} "
                         f"with backbone={backbone!r}; leave it unset (None).")
    return inception_v2_stem, inception_v2_stage


def _check_input_shape(input_shape, num_parts):
    shape = check_input_shape(input_shape)
    # Z2 is 1/16 of the input (four stride-2 steps on either backbone); each of its kp stripes
    # needs >= 1 row.
    if shape[0] % (16 * num_parts):
        raise ValueError(
            f"`input_shape` height must be a multiple of 16 * num_parts = {16 * num_parts} (equal "
            f"stripes of Z1 at 1/8 and of Z2 at 1/16 of the input), received "
            f"input_shape={input_shape!r}; e.g. (256, 128, 3) or (128, 64, 3)."
        )
    return tuple(int(d) for d in shape)


@register_model("ccan", small={"input_shape": (128, 64, 3), "width_multiplier": 0.25, "feature_dim": 64})
def build_ccan(
    num_classes: int,
    input_shape=(256, 128, 3),
    num_parts: int = 4,
    feature_dim: int = 1024,
    width_multiplier: float = 1.0,
    reduction: int = 8,
    use_ss: bool = True,
    use_cc: bool | None = None,
    branches: str = "G+L",
    backbone: str = "googlenet_bn",
    branch3_kernel: int | None = None,
    fc_bn: bool = True,
    backbone_weights: str | None = None,
    name: str = "ccan",
) -> keras.Model:
    """Builds CCAN: a BN-Inception global branch with SS-attention and ``kp`` CC-attended part streams.

    Graph (layer names of the default ``backbone="googlenet_bn"``; Sec. 3.2, Fig. 3):

    - Global level 1: BN-Inception stem + stage 3 (``conv1`` .. ``inception3b``, 480 ch, 1/8) ->
      ``ss1`` (`SymmetricSelfAttention`, SS^G_1) -> ``Z1``. Level 2: stage 4 (``maxpool3``,
      ``inception4a`` .. ``inception4e``, 832 ch, 1/16) -> ``Z2``. Level 3: stage 5 (``maxpool4``,
      ``inception5a``, ``inception5b``, 1024 ch, 1/32) -> ``global_pool`` -> ``fc_global``
      (Dense d) -> ``fc_global_bn`` = ``features/global`` -> ``classifier_global``.
    - Part stream ``s`` (1..kp): ``part{s}_z1_stripe`` (`HorizontalStripe` of Z1, resized to Z1's
      size) -> its own stage 4 (``part{s}_inception4a`` ..., unshared) -> ``part{s}_cc``
      (`CrossCorrelatedAttention`, CC^L_{2,s}, query = this stream, key =
      ``part{s}_z2_stripe`` of Z2) -> its own stage 5 (``part{s}_inception5a`` ...) ->
      ``part{s}_pool``. ``local_concat`` (kp x 1024) -> ``fc_local`` -> ``fc_local_bn`` =
      ``features/local`` -> ``classifier_local``.
    - ``embedding`` = ``l2_global`` ++ ``l2_local`` (Sec. 3.4).

    ``backbone="inception_v2"`` swaps in Ioffe & Szegedy's BN-Inception
    (`tfreid.models.backbones.inception_v2`, the ReID community's ImageNet checkpoint): level 1 =
    stem + ``pool2_3x3_s2`` + 3a-3b (320 ch, 1/8), level 2 = 3c-4d (608 ch, 1/16), level 3 =
    4e-5b (1024 ch, 1/32), with that module's layer names (``inception_3b_output``,
    ``part{s}_inception_3c_3x3_conv``, ...); attention, stripes and heads take the level widths
    as they come.

    Decisions the paper leaves open: the CC query is the part stream (its residual continues the
    stream) and the key the global Z2 stripe; FC_1 is Dense + BN without ReLU (the BN, which the
    paper does not mention, fixes the scale at which the fixed triplet margin acts; ``fc_bn``,
    ``docs/models.md``); the "5x5" Inception branch is 3x3 as in the pretrained GoogLeNet-with-BN
    weights the paper fine-tunes (``branch3_kernel``); the global stage layers keep
    BN-Inception's names so ImageNet weights load by name, every part copy gets them too
    (``backbone_weights``).

    Ablations (paper Table 6): ``branches="G", use_ss=False`` (Id 1; with SS: Id 4), ``"L"``
    (Id 2), ``"G+L"`` with ``use_ss=False, use_cc=False`` (Id 3), ``use_ss=False`` (Id 5),
    defaults = CCAN (Id 6). The local branch needs global level 1 (Z1) and, with CC, level 2
    (Z2); layers nothing depends on are not built.

    Args:
        num_classes: number of training identities (classifier width).
        input_shape: ``(H, W, 3)``; H a multiple of ``16 * num_parts``. Default
            ``(256, 128, 3)``. ``W_alpha`` of the attention layers is sized from it.
        num_parts: ``kp``, part streams. Default 4.
        feature_dim: ``d``, width of FC_1 per branch. Default 1024.
        width_multiplier: scales every backbone width (1.0 = 480/832/1024 channels for
            googlenet_bn, 320/608/1024 for inception_v2).
        reduction: ``C / K`` of the attention projections. Default 8.
        use_ss: SS-attention after global level 1. Default True.
        use_cc: CC-attention in every part stream; ``None`` (default) = whenever the local branch
            is built. ``True`` without the local branch is an error.
        branches: ``"G+L"`` (default), ``"G"`` or ``"L"``.
        backbone: ``"googlenet_bn"`` (default: GoogLeNet v1 + BN, the paper's) or
            ``"inception_v2"`` (Ioffe & Szegedy's BN-Inception, Cadene's ImageNet weights).
        branch3_kernel: googlenet_bn's "5x5" branch kernel, 3 (``None``, the default: the
            pretrained "GoogLeNet with BN" of torchvision, which the paper fine-tunes, has 3x3
            there) or 5 (GoogLeNet). Any value with ``backbone="inception_v2"`` is an error.
        fc_bn: BN after FC_1 (default True, see above); False gives FC_1 as a bare Dense.
        backbone_weights: optional local ``.h5`` of the backbone's weights (by layer name), or
            ``"imagenet"`` (the backbone's converted PyTorch ImageNet checkpoint,
            `tfreid.models.convert`).
        name: model name.

    Returns:
        Functional `keras.Model` mapping ``[B, H, W, 3]`` to a dict: ``embedding``
        (``[B, 2d]`` for G+L, ``[B, d]`` otherwise), per present branch ``logits/global``,
        ``features/global``, ``logits/local``, ``features/local`` (float32), and the attention
        maps ``attention/ss_1`` ``[B, H/8, W/8, 1]`` and ``attention/cc_{s}`` ``[B, H/16, W/16, 1]``
        (column means of ``A``: how much each position is attended).

    Example:

    >>> model = build_ccan(751)
    >>> model(keras.ops.zeros((1, 256, 128, 3)))["embedding"].shape
    (1, 2048)

    Reference:
        "Cross-Correlated Attention Networks for Person Re-Identification" (CCAN), Sec. 3.2-3.4,
        Sec. 4.1, Fig. 3, Table 6.
    """
    num_classes = check_positive_int("num_classes", num_classes)
    num_parts = check_positive_int("num_parts", num_parts)
    feature_dim = check_positive_int("feature_dim", feature_dim)
    reduction = check_positive_int("reduction", reduction)
    width = check_width_multiplier(width_multiplier)
    weights_backbone = check_ccan_backbone(backbone)
    stem, stage = _backbone_builders(backbone, branch3_kernel)
    check_bool("use_ss", use_ss)
    check_bool("fc_bn", fc_bn)
    if branches not in BRANCHES:
        raise ValueError(f"`branches` must be one of {BRANCHES}, received branches={branches!r}.")
    use_global, use_local = "G" in branches, "L" in branches
    use_cc = use_local if use_cc is None else check_bool("use_cc", use_cc)
    if use_cc and not use_local:
        raise ValueError(f"use_cc=True needs the local branch (CC-attention sits in the part "
                         f"streams), received branches={branches!r}; pass use_cc=False.")
    input_shape = _check_input_shape(input_shape, num_parts)
    backbone_weights = check_weights_path(backbone_weights, weights_backbone)

    inputs = keras.Input(shape=input_shape, name="images")
    outputs, embedding = {}, []
    z1 = stage(stem(inputs, width), 3, width)
    if use_ss:
        z1, attended = SymmetricSelfAttention(reduction, return_attention=True, name="ss1")(z1)
        outputs["attention/ss_1"] = attended
    z2 = stage(z1, 4, width) if (use_global or use_cc) else None

    if use_global:
        x = stage(z2, 5, width)
        f_global = _head(keras.layers.GlobalAveragePooling2D(name="global_pool")(x), feature_dim, "global", fc_bn)
        outputs["features/global"] = f_global
        outputs["logits/global"] = keras.layers.Dense(num_classes, name="classifier_global", dtype="float32")(f_global)
        embedding.append(keras.layers.UnitNormalization(name="l2_global", dtype="float32")(f_global))

    if use_local:
        pooled = []
        for s in range(1, num_parts + 1):
            x = HorizontalStripe(s - 1, num_parts, name=f"part{s}_z1_stripe")(z1)
            x = stage(x, 4, width, prefix=f"part{s}_")
            if use_cc:
                key = HorizontalStripe(s - 1, num_parts, name=f"part{s}_z2_stripe")(z2)
                x, attended = CrossCorrelatedAttention(reduction, return_attention=True, name=f"part{s}_cc")(x, key)
                outputs[f"attention/cc_{s}"] = attended
            x = stage(x, 5, width, prefix=f"part{s}_")
            pooled.append(keras.layers.GlobalAveragePooling2D(name=f"part{s}_pool")(x))
        x = keras.layers.Concatenate(name="local_concat")(pooled) if num_parts > 1 else pooled[0]
        f_local = _head(x, feature_dim, "local", fc_bn)
        outputs["features/local"] = f_local
        outputs["logits/local"] = keras.layers.Dense(num_classes, name="classifier_local", dtype="float32")(f_local)
        embedding.append(keras.layers.UnitNormalization(name="l2_local", dtype="float32")(f_local))

    if len(embedding) > 1:
        outputs["embedding"] = keras.layers.Concatenate(name="embedding", dtype="float32")(embedding)
    else:
        outputs["embedding"] = embedding[0]
    model = keras.Model(inputs, outputs, name=name)
    if backbone_weights is not None:
        from tfreid.models.backbones.weights import load_backbone_weights

        load_backbone_weights(model, backbone_weights, backbone=weights_backbone,
                              prefixes=("", *(f"part{s}_" for s in range(1, num_parts + 1))))
    return model
