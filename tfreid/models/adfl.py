"""ADFL (attention-based discriminative feature learning) and its strong ResNet-50 baseline."""

from __future__ import annotations

import keras

from tfreid.checks import check_input_shape
from tfreid.layers.attention_arrangement import AttentionArrangement
from tfreid.layers.batch_attention import BatchAttention
from tfreid.layers.channel_self_attention import ChannelSelfAttention
from tfreid.layers.conv_bn_relu import PYTORCH_INIT, ConvBNReLU
from tfreid.layers.direct_channel_attention import DirectChannelAttention
from tfreid.layers.direct_hyper_attention import DirectHyperAttention
from tfreid.layers.direct_spatial_attention import DirectSpatialAttention
from tfreid.layers.hyper_attention import HyperAttention
from tfreid.layers.position_attention import PositionAttention
from tfreid.layers.validation import check_bool, check_positive_int
from tfreid.models.backbones.resnet50 import (STAGE_BLOCKS, resnet50_model, resnet50_stage,
                                                 resnet50_stem)
from tfreid.models.registry import register_model

# The paper's module names (Table II): type digit + s(patial) / c(hannel) / h(yper) / b(atch)
# or an arrangement of the spatial and channel modules of that type (Fig. 6).
ATTENTION_MODULES = ("1s", "1c", "1h", "1b", "1sc", "1cs", "1sum",
                     "2s", "2c", "2h", "2sc", "2cs", "2sum", "2multiply")
FUSIONS = ("cat", "sum")


def attention_layer(module: str, name: str, spatial_reduction: int = 8, hyper_reduction: int = 64,
                    channel_reduction: int = 16, kernel_size: int = 3) -> keras.layers.Layer:
    """The ADFL attention module called `module` (e.g. ``"1sum"``, ``"2c"``), as one layer.

    Modules with a spatial map (1s, 1h, 2s, 2h and every arrangement) return ``(output, map)``
    with ``map`` ``[B, H, W, 1]``; the others (1c, 1b, 2c) return the output only.
    """
    if module not in ATTENTION_MODULES:
        raise ValueError(f"`attention` must be one of {', '.join(ATTENTION_MODULES)} or None, "
                         f"received attention={module!r}.")
    kind, rest = int(module[0]), module[1:]
    if rest in ("sc", "cs", "sum", "multiply"):
        return AttentionArrangement(kind, rest, spatial_reduction=spatial_reduction,
                                    channel_reduction=channel_reduction, kernel_size=kernel_size,
                                    return_attention=True, name=name)
    return {
        "1s": lambda: PositionAttention(spatial_reduction, return_attention=True, name=name),
        "1c": lambda: ChannelSelfAttention(name=name),
        "1h": lambda: HyperAttention(hyper_reduction, return_attention=True, name=name),
        "1b": lambda: BatchAttention(name=name),
        "2s": lambda: DirectSpatialAttention(kernel_size, return_attention=True, name=name),
        "2c": lambda: DirectChannelAttention(channel_reduction, name=name),
        "2h": lambda: DirectHyperAttention(return_attention=True, name=name),
    }[module]()


def _check_stages(value):
    try:
        stages = tuple(value)
    except TypeError:
        stages = None
    if (stages is None or not stages or len(set(stages)) != len(stages)
            or any(isinstance(s, bool) or s not in (2, 3, 4) for s in stages)):
        raise ValueError("`attention_stages` must be distinct stages among 2, 3, 4 (attn2/attn3/"
                         f"attn4), received attention_stages={value!r}.")
    return tuple(sorted(int(s) for s in stages))


def _bnneck(x, num_classes, suffix):
    """BNNeck (Luo et al.): BN on the feature; the bias-free classifier sees the BN output."""
    bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"bnneck_{suffix}",
                                         dtype="float32")(x)
    logits = keras.layers.Dense(num_classes, use_bias=False, kernel_initializer=PYTORCH_INIT,
                                name=f"classifier_{suffix}", dtype="float32")(bn)
    return bn, logits


@register_model("adfl", small={"input_shape": (64, 32, 3), "base_width": 8, "bottleneck_dim": 64})
def build_adfl(num_classes: int, input_shape=(384, 128, 3), attention: str | None = "1sum",
               attention_stages=(3,), af_stage: int | None = 3, af_fusion: str = "cat",
               af_dim: int | None = None, bottleneck_dim: int | None = 1024, last_stride: int = 1,
               spatial_reduction: int = 8, hyper_reduction: int = 64, channel_reduction: int = 16,
               kernel_size: int = 3, base_width: int = 64, backbone_weights: str | None = None,
               zero_init_residual: bool = True, name: str = "adfl") -> keras.Model:
    """Builds ADFL: the strong ResNet-50 baseline + attention modules + an attention-feature skip.

    Graph (Fig. 2-3). The default is the paper's best model,
    AF3-cat-1024-attn3-1sum:

    - ResNet-50 (`tfreid.models.backbones.resnet50`, Keras layer names ``conv1_conv`` ..
      ``conv5_block3_out``), stage 4 with stride ``last_stride`` (1: 24x8 maps at 384x128).
    - ``attn{s}``: the attention module named `attention` after stage ``s`` for each ``s`` in
      `attention_stages` (stage 2/3/4 = Keras ``conv3``/``conv4``/``conv5``), feeding the
      next stage. Modules with a spatial map also output it as ``attention/attn{s}``.
    - Backbone head: ``global_pool`` (global MAX pooling) -> ``bottleneck`` (Dense to
      `bottleneck_dim`, skipped if None) = ``features/global`` (the pre-BN feature: triplet
      loss) -> ``bnneck_global`` (BN) -> ``classifier_global`` (no bias) = ``logits/global``.
    - AF skip (``af_stage`` not None): the output of ``attn{af_stage}`` -> ``af{s}_conv1``
      (3x3 conv-BN-ReLU, stride 2 from stage 2 so the map matches stage 4's size) ->
      ``af{s}_conv2`` (1x1 conv-BN-ReLU), both `af_dim` wide -> ``af{s}_pool`` (global max) ->
      ``af_fusion`` (``"cat"``: concatenation, ``"sum"``: addition) with ``features/global``
      = ``features/fused`` (triplet) -> ``bnneck_fused`` -> ``classifier_fused`` =
      ``logits/fused``. Both heads are trained ("a BN layer with triplet loss and then a FC
      layer with softmax loss", Sec. III-C, as for the backbone).
    - ``embedding``: the output of the LAST BN layer — ``bnneck_fused`` with the AF skip, else
      ``bnneck_global`` (Sec. V-B "Features"; the BNNeck convention: the triplet shapes the
      pre-BN space, the BN output is what the classifier separates and what is compared at
      test time, with the cosine distance in the tfreid recipes).

    Args:
        num_classes: number of training identities.
        input_shape: ``(H, W, 3)`` of the normalised input. Default ``(384, 128, 3)`` (paper).
        attention: one of `ATTENTION_MODULES` (``"1s"`` .. ``"2multiply"``) or None (baseline).
        attention_stages: stages (2, 3, 4) after which `attention` is inserted. Default (3,).
        af_stage: stage whose attention output feeds the AF skip (must be in
            `attention_stages`), or None for no skip. Default 3.
        af_fusion: ``"cat"`` or ``"sum"`` (``sum`` needs ``af_dim`` = the backbone feature
            width). Default ``"cat"``.
        af_dim: width of the AF conv block (512 / 1024 / 2048 in the paper); default the width
            of ``features/global`` (1024 with the default bottleneck).
        bottleneck_dim: width of the bottleneck FC, or None for none (2048-D feature). Default
            1024 (the paper's "dimension of final person features").
        last_stride: stride of stage 4, 1 (default) or 2.
        spatial_reduction: ``C / C'`` of the 1s projections. Default 8.
        hyper_reduction: ``C / C'`` of the 1h projections. Default 64.
        channel_reduction: MLP reduction of 2c. Default 16.
        kernel_size: convolution size of 2s. Default 3.
        base_width: ResNet width (64 = ResNet-50; smaller for tests, same graph).
        backbone_weights: optional local ImageNet ``.h5`` loaded into the backbone by layer name,
            or ``"imagenet"`` (Keras's ResNet-50 file, downloaded once and cached).
        zero_init_residual: start every residual block as the identity (gamma of its last BN
            = 0, `zero_init_residuals`), so a from-scratch ResNet-50 learns within a short run;
            loaded ``backbone_weights`` overwrite it. Default True.
        name: model name.

    Returns:
        Functional `keras.Model` mapping ``[B, H, W, 3]`` images to a dict of float32 tensors:
        ``embedding``, ``features/global``, ``logits/global`` and, with the AF skip,
        ``features/fused``, ``logits/fused``; ``attention/attn{s}`` ``[B, h_s, w_s, 1]`` for
        modules with a spatial map.

    Example:

    >>> model = build_adfl(751)
    >>> out = model(keras.ops.zeros((2, 384, 128, 3)))
    >>> out["embedding"].shape, out["attention/attn3"].shape
    ((2, 2048), (2, 24, 8, 1))

    Reference:
        H. Liu, J. Cheng, S. Wang, W. Wang, "Attention: A Big Surprise for Cross-Domain Person
        Re-Identification", arXiv 2019, Sec. III, V-B, Fig. 2-3, Table III; H. Luo et al.,
        "Bag of Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019.
    """
    num_classes = check_positive_int("num_classes", num_classes)
    check_bool("zero_init_residual", zero_init_residual)
    input_shape = check_input_shape(input_shape)
    stages = _check_stages(attention_stages) if attention is not None else ()
    if attention is not None and attention not in ATTENTION_MODULES:
        raise ValueError(f"`attention` must be one of {', '.join(ATTENTION_MODULES)} or None, "
                         f"received attention={attention!r}.")
    if af_stage is not None and af_stage not in stages:
        raise ValueError(f"`af_stage`={af_stage!r} must be one of the attention stages "
                         f"{stages} (the AF skip takes an attention output), or None.")
    if af_fusion not in FUSIONS:
        raise ValueError(f"`af_fusion` must be one of {FUSIONS}, received af_fusion={af_fusion!r}.")
    if bottleneck_dim is not None:
        bottleneck_dim = check_positive_int("bottleneck_dim", bottleneck_dim)
    if last_stride not in (1, 2) or isinstance(last_stride, bool):
        raise ValueError(f"`last_stride` must be 1 or 2, received last_stride={last_stride!r}.")
    feature_dim = bottleneck_dim or 32 * base_width  # stage 4 has 4 * 8 * base_width channels
    af_dim = feature_dim if af_dim is None else check_positive_int("af_dim", af_dim)
    if af_stage is not None and af_fusion == "sum" and af_dim != feature_dim:
        raise ValueError(f"af_fusion='sum' adds the AF feature to the {feature_dim}-D backbone "
                         f"feature: `af_dim` must be {feature_dim}, received af_dim={af_dim}.")
    reductions = dict(spatial_reduction=check_positive_int("spatial_reduction", spatial_reduction),
                      hyper_reduction=check_positive_int("hyper_reduction", hyper_reduction),
                      channel_reduction=check_positive_int("channel_reduction", channel_reduction),
                      kernel_size=check_positive_int("kernel_size", kernel_size))

    inputs = keras.Input(shape=input_shape, name="images")
    outputs, attended = {}, {}
    x = resnet50_stem(inputs, base_width)
    for stage in STAGE_BLOCKS:
        x = resnet50_stage(x, stage, last_stride if stage == 4 else None, base_width)
        if stage in stages:
            y = attention_layer(attention, f"attn{stage}", **reductions)(x)
            if isinstance(y, tuple):
                y, outputs[f"attention/attn{stage}"] = y
            x = attended[stage] = y

    # The head runs in float32 (features, logits and embedding stay float32 under mixed
    # precision); it is a few matrix-vector products per image.
    g = keras.layers.GlobalMaxPooling2D(name="global_pool", dtype="float32")(x)
    if bottleneck_dim is not None:
        g = keras.layers.Dense(bottleneck_dim, kernel_initializer=PYTORCH_INIT, name="bottleneck",
                               dtype="float32")(g)
    outputs["features/global"] = g
    embedding, outputs["logits/global"] = _bnneck(g, num_classes, "global")

    if af_stage is not None:
        source = attended[af_stage]
        stride = max(1, round(source.shape[1] / x.shape[1]))  # AF2: stage 2 is 2x stage 4's size
        a = ConvBNReLU(af_dim, 3, strides=stride, kernel_initializer="he_normal",
                       name=f"af{af_stage}_conv1")(source)
        a = ConvBNReLU(af_dim, 1, kernel_initializer="he_normal", name=f"af{af_stage}_conv2")(a)
        a = keras.layers.GlobalMaxPooling2D(name=f"af{af_stage}_pool", dtype="float32")(a)
        fuse = (keras.layers.Concatenate(name="af_fusion", dtype="float32") if af_fusion == "cat"
                else keras.layers.Add(name="af_fusion", dtype="float32"))
        fused = fuse([g, a])
        outputs["features/fused"] = fused
        embedding, outputs["logits/fused"] = _bnneck(fused, num_classes, "fused")
    outputs["embedding"] = embedding
    return resnet50_model(inputs, outputs, name, zero_init_residual, backbone_weights)
