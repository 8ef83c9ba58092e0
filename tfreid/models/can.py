"""CAN: Collaborative Attention Network (multi-granularity parts on a stride-1 ResNet-50)."""

from __future__ import annotations

import numbers

import keras

from tfreid.checks import check_input_shape
from tfreid.layers.adaptive_concat_pooling import BIN_RULES, AdaptiveConcatPooling2D
from tfreid.layers.collaborative_attention import CollaborativeAttention
from tfreid.layers.cosine_classifier import CosineClassifier
from tfreid.layers.fused_batch_normalization import FusedBatchNormalization
from tfreid.layers.validation import check_bool, check_positive_int
from tfreid.models.backbones.resnet50 import resnet50_stage, resnet50_stem, zero_init_residuals
from tfreid.models.registry import register_model

# Output stride of ResNet-50 up to stage 3 (stem /4, stages 2-3 /2 each).
_STRIDE_TO_STAGE3 = 16
CLASSIFIERS = ("cosine", "linear")


def _check_parts(parts):
    try:
        items = tuple(parts)
    except TypeError:
        items = ()
    ok = bool(items) and all(
        isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 2 for n in items
    )
    if not ok or len(set(items)) != len(items):
        raise ValueError(
            "`parts` must be a non-empty tuple of distinct integers >= 2 (the stripe counts of the "
            f"part branches; the global branch is always built), received parts={parts!r}."
        )
    return tuple(int(n) for n in items)


def feature_names(parts=(3, 5, 7), collaborative: bool = True) -> list[str]:
    """Names of the embedded features in embedding order (Eq. 2: per branch, global block first).

    >>> feature_names((3,))
    ['global', 'part3_global', 'part3_1', 'part3_2']
    """
    names = ["global"]
    for n in parts:
        names.append(f"part{n}_global")
        names += [f"part{n}_{k}" for k in range(1, n if collaborative else n + 1)]
    return names


@register_model("can", small={"input_shape": (128, 64, 3), "base_width": 8, "feature_dim": 32})
def build_can(
    num_classes: int,
    input_shape=(384, 128, 3),
    parts=(3, 5, 7),
    collaborative: bool = True,
    feature_dim: int = 256,
    last_stride: int = 1,
    bin_rule: str = "paper",
    classifier: str = "cosine",
    cosine_scale: float = 16.0,
    learn_cosine_scale: bool = False,
    feature_bn: bool = True,
    base_width: int = 64,
    backbone_weights: str | None = None,
    zero_init_residual: bool = True,
    name: str = "can",
) -> keras.Model:
    """Builds CAN: shared ResNet-50 stages 1-3, one unshared stage 4 per branch, part features
    merged by collaborative attention, one shared 1x1 embedding conv and a classifier per feature.

    Graph (layer names; ``b`` is a branch: ``global``, ``part3``, ``part5``, ``part7``):

    - Shared: ResNet-50 stem and stages 1-3 with ``keras.applications.ResNet50``'s names
      (``conv1_conv`` ... ``conv4_block6_out``).
    - Per branch: its own copy of stage 4, ``{b}_conv5_block1_1_conv`` ... ``{b}_conv5_block3_out``
      (stride ``last_stride``; 24x8 maps at 384x128 with stride 1), then ``{b}_pool``
      (`AdaptiveConcatPooling2D` to 1x1: the branch's global block, 2 x 2048 = 4096-D).
      Part branch ``n`` also pools to ``n x 1`` (``{b}_pool_parts``, CAN Eq. 1) and, with
      ``collaborative``, merges adjacent stripes (``{b}_ca``, `CollaborativeAttention`: n-1
      features); ``{b}_slice{k}`` (`Cropping2D`) picks part feature ``k``.
    - Every feature ``f`` (4 global + 2 + 4 + 6 = 16 with the defaults) goes through the ONE
      shared 1x1 conv ``embed_conv`` (4096 -> ``feature_dim``, no bias, Eq. 3-4), its own BN
      ``{f}_bn``, ``{f}_flatten`` -> ``features/{f}``, and its own classifier ``classifier_{f}``:
      a `CosineClassifier` (normalised feature and weights, scale ``cosine_scale``; Sec. 4.6
      "we also normalize the features and weights in FC Layer").
    - ``embedding`` = concatenation of the L2-normalised features ``l2_{f}`` (16 x 256 = 4096-D,
      norm ``sqrt(16)``): the cosine similarity of two embeddings is the mean cosine similarity
      of their 16 features, so each stripe feature weighs the same; compare with cosine distance.
    - ``features/global_concat`` (the 4 global features) and ``features/local_concat`` (the part
      features), un-normalised, for the clustering losses (triplet, center) on global and local
      features (paper Table 4, last row).

    Decisions the paper leaves open: BN (no ReLU) follows the shared embedding conv, one BN per
    feature; not in Eq. 3 (``feature_bn=False`` is the linear map alone) but kept because the
    triplet and center losses act on concatenations of features from different branches, whose
    scales BN equalises (``docs/models.md``); pooling concatenates max then average; the
    cosine classifier's scale (the paper gives none) is 16. Without ``collaborative`` (the
    "w/o CA" rows of Table 3) part branch ``n`` yields its ``n`` stripes directly.

    Args:
        num_classes: number of training identities (width of every classifier).
        input_shape: ``(H, W, 3)`` normalised float input. Default ``(384, 128, 3)`` (paper). ``H``
            must give stage-4 maps with at least ``max(parts)`` rows (``H >= 16 * max(parts)``
            with ``last_stride=1``).
        parts: stripe counts of the part branches (distinct, >= 2). Default ``(3, 5, 7)``, the
            paper's best "part-1,3,5,7"; ``(2, 3)`` gives "part-1,2,3".
        collaborative: merge adjacent stripes (CA). Default True.
        feature_dim: output width of the shared embedding conv. Default 256.
        last_stride: stride of the stage-4 copies, 1 (paper) or 2.
        bin_rule: ``"paper"`` (Eq. 1) or ``"pytorch"`` (adaptive pooling bins of PyTorch/Keras).
        classifier: ``"cosine"`` (default, the paper's normalised FC) or ``"linear"`` (``Dense``).
        cosine_scale: scale ``s`` of the cosine classifiers (> 0). Default 16.
        learn_cosine_scale: train ``s`` (one scalar per classifier). Default False.
        feature_bn: BN after the embedding conv, one per feature. Default True.
        base_width: ResNet-50 width (64); smaller values give the same graph, narrower (tests).
        backbone_weights: optional local ImageNet ``.h5`` (Keras ``..._notop.h5`` or
            ``.weights.h5``) loaded by layer name into the shared stages and into EVERY stage-4
            copy; or ``"imagenet"`` (Keras's ResNet-50 file, downloaded once and cached).
        zero_init_residual: start every residual block as the identity (gamma of its last BN
            = 0), which makes the from-scratch ResNet-50 learn much faster early on; loaded
            ``backbone_weights`` overwrite it. Default True.
        name: model name.

    Returns:
        Functional `keras.Model` mapping ``[B, H, W, 3]`` to a dict: ``embedding``
        ``[B, F * feature_dim]`` (F features), ``features/{f}`` ``[B, feature_dim]`` and
        ``logits/{f}`` ``[B, num_classes]`` for each name of `feature_names(parts, collaborative)`,
        ``features/global_concat`` ``[B, (1 + len(parts)) * feature_dim]`` and
        ``features/local_concat``. All float32 under any dtype policy.

    Example:

    >>> out = build_can(751)(keras.ops.zeros((2, 384, 128, 3)))
    >>> out["embedding"].shape, out["logits/part7_6"].shape
    ((2, 4096), (2, 751))

    Reference:
        Collaborative Attention Network for Person Re-identification (CAN), Sec. 3.2-3.3, Fig. 2-3,
        Tables 1-4; G. Wang et al., "Learning Discriminative Features with Multiple Granularities
        for Person Re-Identification" (MGN), ACM MM 2018.
    """
    num_classes = check_positive_int("num_classes", num_classes)
    feature_dim = check_positive_int("feature_dim", feature_dim)
    check_bool("collaborative", collaborative)
    check_bool("zero_init_residual", zero_init_residual)
    parts = _check_parts(parts)
    if last_stride not in (1, 2) or isinstance(last_stride, bool):
        raise ValueError(f"`last_stride` must be 1 or 2, received last_stride={last_stride!r}.")
    if classifier not in CLASSIFIERS:
        raise ValueError(f"`classifier` must be one of {CLASSIFIERS}, received classifier={classifier!r}.")
    check_bool("feature_bn", feature_bn)
    CosineClassifier(1, scale=cosine_scale, learn_scale=learn_cosine_scale)  # validates both
    if bin_rule not in BIN_RULES:
        raise ValueError(f"`bin_rule` must be one of {BIN_RULES}, received bin_rule={bin_rule!r}.")
    input_shape = check_input_shape(input_shape)

    inputs = keras.Input(shape=input_shape, name="images")
    x = resnet50_stem(inputs, base_width)
    for stage in (1, 2, 3):
        x = resnet50_stage(x, stage, base_width=base_width)
    rows = x.shape[1] if last_stride == 1 else -(-x.shape[1] // 2)
    if rows < max(parts):
        raise ValueError(
            f"input_shape={input_shape!r} gives {rows}-row stage-4 maps (last_stride={last_stride}) "
            f"but parts={parts!r} needs at least {max(parts)} rows; use an input height >= "
            f"{_STRIDE_TO_STAGE3 * last_stride * max(parts)}."
        )

    embed = keras.layers.Conv2D(feature_dim, 1, use_bias=False, name="embed_conv")
    pooled = {}  # feature name -> [B, 1, 1, 4096] pooled block, in embedding order
    branches = ["global"] + [f"part{n}" for n in parts]
    for branch, n in zip(branches, (1,) + parts):
        y = resnet50_stage(x, 4, last_stride, base_width=base_width, prefix=f"{branch}_")
        pooled["global" if n == 1 else f"{branch}_global"] = AdaptiveConcatPooling2D(
            1, bin_rule=bin_rule, name=f"{branch}_pool")(y)
        if n == 1:
            continue
        stripes = AdaptiveConcatPooling2D((n, 1), bin_rule=bin_rule, name=f"{branch}_pool_parts")(y)
        if collaborative:
            stripes = CollaborativeAttention(name=f"{branch}_ca")(stripes)
        count = stripes.shape[1]
        for k in range(count):
            pooled[f"{branch}_{k + 1}"] = keras.layers.Cropping2D(
                ((k, count - 1 - k), (0, 0)), name=f"{branch}_slice{k + 1}")(stripes)

    outputs, normalised, global_feats, local_feats = {}, [], [], []
    for feat, block in pooled.items():
        f = embed(block)  # the same layer (same kernel) for every feature
        # BN and everything after it in float32: features/logits are float32 under mixed precision.
        if feature_bn:
            f = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{feat}_bn", dtype="float32")(f)
        f = keras.layers.Flatten(name=f"{feat}_flatten", dtype="float32")(f)
        outputs[f"features/{feat}"] = f
        if classifier == "cosine":
            head = CosineClassifier(num_classes, scale=cosine_scale, learn_scale=learn_cosine_scale,
                                    name=f"classifier_{feat}", dtype="float32")
        else:
            head = keras.layers.Dense(num_classes, name=f"classifier_{feat}", dtype="float32")
        outputs[f"logits/{feat}"] = head(f)
        normalised.append(keras.layers.UnitNormalization(name=f"l2_{feat}", dtype="float32")(f))
        (global_feats if feat.endswith("global") else local_feats).append(f)
    outputs["features/global_concat"] = keras.layers.Concatenate(
        name="global_concat", dtype="float32")(global_feats)
    outputs["features/local_concat"] = keras.layers.Concatenate(
        name="local_concat", dtype="float32")(local_feats)
    outputs["embedding"] = keras.layers.Concatenate(name="embedding", dtype="float32")(normalised)
    model = keras.Model(inputs, outputs, name=name)

    if zero_init_residual:
        zero_init_residuals(model)
    if backbone_weights:
        from tfreid.models.backbones.weights import load_backbone_weights

        # "" first: the shared stages carry Keras's own names; every stage-4 copy gets conv5_*.
        load_backbone_weights(model, backbone_weights, prefixes=("",) + tuple(f"{b}_" for b in branches))
    return model
