"""HA-CNN: Harmonious Attention CNN (Li, Zhu, Gong, CVPR 2018) as a Keras functional model."""

from __future__ import annotations

import math

import keras

from tfreid.checks import check_input_shape, check_int_tuple
from tfreid.layers.conv_bn_relu import PYTORCH_INIT, ConvBNReLU
from tfreid.layers.harmonious_attention import HarmoniousAttention
from tfreid.layers.region_sampler import RegionSampler
from tfreid.layers.soft_attention import SoftAttention
from tfreid.layers.validation import PADDINGS, check_bool, check_choice, check_positive_int
from tfreid.models.blocks import ChannelMean, FoldRegions, InceptionA, InceptionB, PerRegion, UnfoldRegions
from tfreid.models.registry import register_model

LOCAL_BN = ("joint", "per_region")


def _head(x, feature_dim, prefix):
    """Dense -> BN -> ReLU feature layer; BN/ReLU in float32 so features are float32 under
    mixed precision (the heads are tiny, the cost is nil)."""
    x = keras.layers.Dense(feature_dim, kernel_initializer=PYTORCH_INIT, name=f"fc_{prefix}")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"fc_{prefix}_bn", dtype="float32")(x)
    return keras.layers.ReLU(name=f"fc_{prefix}_relu", dtype="float32")(x)


def _classifier(num_classes, prefix):
    return keras.layers.Dense(num_classes, kernel_initializer=PYTORCH_INIT,
                              name=f"classifier_{prefix}", dtype="float32")


@register_model("hacnn", small={"widths": [32, 64, 96], "feature_dim": 64})
def build_hacnn(
    num_classes: int,
    input_shape=(160, 64, 3),
    widths=(128, 256, 384),
    local_sizes=((24, 28), (12, 14), (6, 7)),
    num_regions: int = 4,
    region_scale=(0.25, 1.0),
    feature_dim: int = 512,
    reduction: int = 16,
    learn_region: bool = True,
    conv_bias: bool = False,
    padding: str = "same",
    sample_then_resize: bool = False,
    local_bn: str = "joint",
    hard_attention: dict | None = None,
    name: str = "hacnn",
) -> keras.Model:
    """Builds HA-CNN: a global Inception branch with Harmonious Attention and a local branch.

    Graph (``L = len(widths)`` levels):

    - ``stem``: 3x3/s2 conv-BN-ReLU, 32 filters, shared by both branches.
    - Global level ``l``: ``global{l}_inception_a`` (stride 1) -> ``global{l}_inception_b``
      (stride 2) -> ``ha{l}`` (`HarmoniousAttention`: soft map + theta) ->
      ``global{l}_attend`` (features x soft map); ``soft{l}_map`` is the channel mean of the soft
      map for visualisation. Without ``learn_region`` the module is ``sa{l}`` (`SoftAttention`).
    - Local level ``l``: ``local{l}_sample`` (`RegionSampler`) crops ``T`` regions located by
      ``theta_l`` from the **input** of global level ``l`` at ``local_sizes[l]``; they are folded
      into the batch (``local{l}_fold``), from level 2 on added to the previous local output
      (``local{l}_interact``, cross-attention interaction Eq. 6) and go through
      ``local{l}_inception_b`` — ONE Inception-B per level shared by all regions.
    - Heads: ``global_pool`` -> ``fc_global`` (Dense) -> ``fc_global_bn`` -> ``fc_global_relu``
      -> ``classifier_global``; local: ``local_pool`` -> ``local_unfold`` + ``local_concat``
      (region-major concatenation of the ``T`` pooled vectors) -> ``fc_local`` ... ->
      ``classifier_local``. ``embedding`` = ``l2_global`` ++ ``l2_local``.

    Differences from torchreid's port (all documented, none changes the parameter structure):
    convolutions have no bias by default (BN follows; ``conv_bias=True`` gives torchreid's exact
    2,929,112 parameters), regions are sampled directly at the local size (torchreid samples at
    the source size then resizes: ``sample_then_resize``), and the local BN sees all regions in
    one batch (torchreid: one region at a time, ``local_bn="per_region"``).

    Args:
        num_classes: number of training identities (classifier width).
        input_shape: ``(H, W, 3)`` of the normalised float input. Default ``(160, 64, 3)``.
        widths: channels ``d_1..d_L`` of the Inception units (multiples of 4, >= reduction).
        local_sizes: ``(h, w)`` of the sampled regions per level; level ``l + 1`` must be
            ``ceil`` half of level ``l`` (the local Inception-B halves the size before the add).
        num_regions: number of hard-attention regions ``T``. Default 4.
        region_scale: ``(s_h, s_w)`` fixed region scale. Default ``(0.25, 1.0)`` (stripes).
        feature_dim: width of each branch's feature layer. Default 512.
        reduction: channel-attention reduction rate. Default 16.
        learn_region: if False, no hard attention and no local branch; the embedding is
            ``L2(global)`` only and the local / theta outputs are absent.
        conv_bias: biases on the convolutions (torchreid parity). Default False.
        padding: ``"symmetric"`` (PyTorch's: strided convs and pools pad ``k // 2`` on every
            side, average pools count the padding, as torchreid) or ``"same"`` (TF's: a strided
            conv on an even size pads only the bottom/right). Default ``"same"``.
        sample_then_resize: sample each region at its source map's size, then resize it to the
            local size (torchreid's two steps, see `RegionSampler`). Default False: one step.
        local_bn: ``"joint"`` (one local Inception-B call on all regions folded into the batch:
            batch norm over all regions together) or ``"per_region"`` (one call per region,
            torchreid's layout: statistics per region, `PerRegion`). Default ``"joint"``.
        hard_attention: options of every level's `HardRegionAttention` for localisation
            experiments, e.g. ``{"pooling": "stripes"}``, ``{"center": True}``,
            ``{"frozen": True}`` (theta fixed at the stripes). Default None: the paper's.
        name: model name.

    Returns:
        Functional `keras.Model` mapping ``[B, H, W, 3]`` images to a dict: ``embedding``
        ``[B, 2 * feature_dim]`` (``[B, feature_dim]`` without regions), ``logits/global``,
        ``features/global``, ``attention/soft_{l}`` (``[B, h_l, w_l, 1]``: channel mean of the
        soft map applied at level ``l``, in ``[0.5, 1)``) and, with ``learn_region``,
        ``logits/local``, ``features/local``, ``attention/theta_{l}`` (``[B, T, 2]``, ``(tx, ty)``).
        Logits, features and embedding are float32 under any dtype policy.

    Example:

    >>> model = build_hacnn(751)
    >>> out = model(keras.ops.zeros((2, 160, 64, 3)))
    >>> out["embedding"].shape, out["logits/local"].shape
    ((2, 1024), (2, 751))

    Reference:
        W. Li, X. Zhu, S. Gong, "Harmonious Attention Network for Person Re-Identification",
        CVPR 2018, Sec. 3, Fig. 2-3.
    """
    num_classes = check_positive_int("num_classes", num_classes)
    num_regions = check_positive_int("num_regions", num_regions)
    feature_dim = check_positive_int("feature_dim", feature_dim)
    reduction = check_positive_int("reduction", reduction)
    check_bool("learn_region", learn_region)
    check_bool("sample_then_resize", sample_then_resize)
    check_choice("local_bn", local_bn, LOCAL_BN)
    input_shape = check_input_shape(input_shape)
    widths = check_int_tuple("widths", widths)
    for w in widths:
        if w % 4 or w < reduction:
            raise ValueError(
                f"every width must be a multiple of 4 and >= reduction={reduction}, received widths={widths!r}."
            )
    try:
        local_sizes = tuple(check_int_tuple("local_sizes", s, 2) for s in local_sizes)
    except (TypeError, ValueError):
        raise ValueError(
            f"`local_sizes` must be a tuple of (h, w) pairs of positive integers, received local_sizes={local_sizes!r}."
        ) from None
    if learn_region:
        if len(local_sizes) != len(widths):
            raise ValueError(
                f"`local_sizes` needs one (h, w) per level ({len(widths)}), received local_sizes={local_sizes!r}."
            )
        for prev, cur in zip(local_sizes, local_sizes[1:]):
            if cur != (math.ceil(prev[0] / 2), math.ceil(prev[1] / 2)):
                raise ValueError(
                    f"`local_sizes` must halve from level to level (ceil), received local_sizes={local_sizes!r}."
                )

    inputs = keras.Input(shape=input_shape, name="images")
    conv = dict(use_bias=conv_bias, padding=check_choice("padding", padding, PADDINGS))
    x = ConvBNReLU(32, 3, strides=2, name="stem", **conv)(inputs)
    outputs = {}
    local = None
    for level, (width, size) in enumerate(zip(widths, local_sizes if learn_region else [None] * len(widths)), 1):
        level_input = x
        y = InceptionA(width, name=f"global{level}_inception_a", **conv)(level_input)
        y = InceptionB(width, name=f"global{level}_inception_b", **conv)(y)
        if learn_region:
            soft, theta = HarmoniousAttention(
                num_regions, reduction=reduction, hard_options=hard_attention, name=f"ha{level}", **conv
            )(y)
            outputs[f"attention/theta_{level}"] = theta
        else:
            soft = SoftAttention(reduction=reduction, name=f"sa{level}", **conv)(y)
        outputs[f"attention/soft_{level}"] = ChannelMean(name=f"soft{level}_map")(soft)
        x = keras.layers.Multiply(name=f"global{level}_attend")([y, soft])

        if learn_region:
            regions = RegionSampler(size, scale=region_scale, sample_then_resize=sample_then_resize,
                                    name=f"local{level}_sample")([level_input, theta])
            regions = FoldRegions(name=f"local{level}_fold")(regions)
            if local is not None:
                regions = keras.layers.Add(name=f"local{level}_interact")([regions, local])
            inception = InceptionB(width, name=f"local{level}_inception_b", **conv)
            if local_bn == "per_region":
                inception = PerRegion(inception, num_regions, name=f"local{level}_per_region")
            local = inception(regions)

    f_global = _head(keras.layers.GlobalAveragePooling2D(name="global_pool")(x), feature_dim, "global")
    outputs["features/global"] = f_global
    outputs["logits/global"] = _classifier(num_classes, "global")(f_global)
    embedding = [keras.layers.UnitNormalization(name="l2_global", dtype="float32")(f_global)]
    if learn_region:
        pooled = keras.layers.GlobalAveragePooling2D(name="local_pool")(local)
        pooled = UnfoldRegions(num_regions, name="local_unfold")(pooled)
        pooled = keras.layers.Flatten(name="local_concat")(pooled)
        f_local = _head(pooled, feature_dim, "local")
        outputs["features/local"] = f_local
        outputs["logits/local"] = _classifier(num_classes, "local")(f_local)
        embedding.append(keras.layers.UnitNormalization(name="l2_local", dtype="float32")(f_local))
        outputs["embedding"] = keras.layers.Concatenate(name="embedding", dtype="float32")(embedding)
    else:
        outputs["embedding"] = embedding[0]
    return keras.Model(inputs, outputs, name=name)
