"""ResNet-50 with `keras.applications.ResNet50` layer names, a configurable last stride and widths.

CAN, ADFL and AANet build on it. Layer names are exactly Keras's (``conv1_conv``,
``conv4_block6_out``, ...), optionally prefixed for per-branch copies (``part3_conv5_block1_1_conv``),
so Keras's ImageNet ``notop`` file loads by name from a local path
(`tfreid.models.backbones.weights.load_backbone_weights`). Stages are numbered as in the ReID papers:
stage 1..4 = Keras ``conv2``..``conv5``.
"""

from __future__ import annotations

import re
from typing import Callable

import keras

from tfreid.checks import check_int
from tfreid.layers.fused_batch_normalization import FusedBatchNormalization

# blocks per stage and whether the stage's first block strides (stage 1 follows the max pool)
STAGE_BLOCKS = {1: 3, 2: 4, 3: 6, 4: 3}
STAGE_OUTPUTS = {s: f"conv{s + 1}_block{n}_out" for s, n in STAGE_BLOCKS.items()}
BN_EPSILON = 1.001e-5  # keras.applications' value, so ImageNet statistics behave as trained
BN_MOMENTUM = 0.9  # PyTorch's 0.1: moving statistics settle within a short fine-tuning run
# torchvision's / torchreid's ResNet conv init, kaiming_normal_(mode="fan_out"): from scratch under
# Adam it trains like the PyTorch reference (docs/hacnn_real_data.md, ResNet-50 A/B).
RESNET_CONV_INIT = {"class_name": "VarianceScaling",
                    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}

# The BN closing a bottleneck's residual branch, in Keras's names or a prefixed copy
# ("conv4_block6_3_bn", "part3_conv5_block1_3_bn").
_RESIDUAL_LAST_BN = re.compile(r"(\w+_)?conv[2-5]_block\d+_3_bn")

AfterBlock = Callable[[str, keras.KerasTensor, keras.KerasTensor], keras.KerasTensor]
OnResidual = AfterBlock  # same signature, called on the residual branch before the shortcut add


def _check_width(base_width):
    check_int("base_width", base_width)  # 64 = ResNet-50


def _conv_bn(x, filters, kernel, stride, name, padding="valid"):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding,
                            kernel_initializer=RESNET_CONV_INIT, name=f"{name}_conv")(x)
    return FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(x)


def bottleneck_block(x, filters: int, stride: int, conv_shortcut: bool, name: str,
                     on_residual: OnResidual | None = None):
    """One ResNet v1 bottleneck (1x1 -> 3x3 -> 1x1 x4, stride on the first 1x1 as Keras does).

    ``on_residual(name, x, residual)``, if given, replaces the residual branch's output before
    the shortcut is added (AANet's OFA mask with ``mask_target="residual"``).
    """
    if conv_shortcut:
        shortcut = _conv_bn(x, 4 * filters, 1, stride, f"{name}_0")
    else:
        shortcut = x
    y = _conv_bn(x, filters, 1, stride, f"{name}_1")
    y = keras.layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = _conv_bn(y, filters, 3, 1, f"{name}_2", padding="same")
    y = keras.layers.Activation("relu", name=f"{name}_2_relu")(y)
    y = _conv_bn(y, 4 * filters, 1, 1, f"{name}_3")
    if on_residual is not None:
        y = on_residual(name, x, y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.Activation("relu", name=f"{name}_out")(y)


def resnet50_stem(x, base_width: int = 64, prefix: str = ""):
    """``conv1`` (7x7/2 conv-BN-ReLU) and ``pool1`` (3x3/2 max pool): 1/4 of the input size."""
    _check_width(base_width)
    x = keras.layers.ZeroPadding2D(((3, 3), (3, 3)), name=f"{prefix}conv1_pad")(x)
    x = _conv_bn(x, base_width, 7, 2, f"{prefix}conv1")
    x = keras.layers.Activation("relu", name=f"{prefix}conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name=f"{prefix}pool1_pad")(x)
    return keras.layers.MaxPooling2D(3, strides=2, name=f"{prefix}pool1_pool")(x)


def resnet50_stage(x, stage: int, stride: int | None = None, base_width: int = 64,
                   prefix: str = "", after_block: AfterBlock | None = None,
                   on_residual: OnResidual | None = None):
    """Residual stage ``stage`` (1..4 = Keras ``conv2``..``conv5``) applied to `x`.

    Args:
        x: the previous stage's output (or the stem's).
        stage: 1, 2, 3 or 4.
        stride: stride of the stage's first block; default 1 for stage 1, else 2. ReID models use
            ``stride=1`` for stage 4 (the "last stride" trick: 2x larger final maps).
        base_width: bottleneck width of stage 1 (64 in ResNet-50); stage s uses
            ``base_width * 2**(s-1)`` and outputs 4x that.
        prefix: prepended to every layer name, for unshared copies of a stage (e.g. one per branch).
        after_block: optional ``fn(block_name, block_input, block_output) -> tensor`` called on each
            residual block; its result feeds the next block (AANet multiplies the block output by an
            attention map computed from the block input).
        on_residual: optional ``fn(block_name, block_input, residual) -> tensor`` called on each
            block's residual branch before its shortcut is added (AANet's ``mask_target="residual"``).
    """
    if stage not in STAGE_BLOCKS:
        raise ValueError(f"stage must be one of 1, 2, 3, 4, received stage={stage!r}")
    _check_width(base_width)
    if stride is None:
        stride = 1 if stage == 1 else 2
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, received stride={stride!r}")
    filters = base_width * 2 ** (stage - 1)
    for block in range(1, STAGE_BLOCKS[stage] + 1):
        name = f"{prefix}conv{stage + 1}_block{block}"
        y = bottleneck_block(x, filters, stride if block == 1 else 1, block == 1, name, on_residual)
        x = after_block(name, x, y) if after_block is not None else y
    return x


def build_resnet50(input_shape=(256, 128, 3), last_stride: int = 2, base_width: int = 64,
                   weights: str | None = None, name: str = "resnet50") -> keras.Model:
    """ResNet-50 feature extractor with dict outputs ``stage1``..``stage4``.

    Args:
        input_shape: ``(H, W, 3)`` of the (normalised) input images.
        last_stride: stride of stage 4, 2 as in ImageNet ResNet-50 or 1 as in ReID models.
        base_width: 64 for ResNet-50; smaller values give the same graph, narrower (tests).
        weights: optional local ``.h5`` file (Keras's ``..._notop.h5`` or a ``.weights.h5``) loaded
            by layer name, or ``"imagenet"`` (Keras's file, downloaded once and cached).
        name: model name.

    Returns:
        A functional `keras.Model` whose outputs are ``{"stage1": ..., "stage4": ...}`` (the
        ``conv{2..5}_block{last}_out`` tensors; 256, 512, 1024, 2048 channels at width 64).

    Example:

    >>> net = build_resnet50((64, 32, 3), last_stride=1, base_width=8)
    >>> net.output["stage4"].shape
    (None, 4, 2, 256)

    Reference:
        K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition", CVPR 2016;
        H. Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification",
        CVPRW 2019 (last stride 1).
    """
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, received last_stride={last_stride!r}")
    inputs = keras.Input(input_shape, name="images")
    x = resnet50_stem(inputs, base_width)
    outputs = {}
    for stage in STAGE_BLOCKS:
        stride = last_stride if stage == 4 else None
        x = resnet50_stage(x, stage, stride, base_width)
        outputs[f"stage{stage}"] = x
    model = keras.Model(inputs, outputs, name=name)
    if weights:
        from tfreid.models.backbones.weights import load_backbone_weights

        load_backbone_weights(model, weights)
    return model


def resnet50_model(inputs, outputs, name: str, zero_init_residual: bool = False,
                   backbone_weights: str | None = None, prefixes=("",)) -> keras.Model:
    """The functional model of a ResNet-50-based network, initialised as its builder asks.

    Args:
        inputs, outputs, name: as for `keras.Model`.
        zero_init_residual: start every residual block as the identity (`zero_init_residuals`).
        backbone_weights: optional local ImageNet ``.h5`` file, or ``"imagenet"`` (Keras's
            file, downloaded once and cached), loaded by layer name afterwards (it overwrites the
            zero initialisation).
        prefixes: layer-name prefixes of the backbone copies (`load_backbone_weights`).
    """
    model = keras.Model(inputs, outputs, name=name)
    if zero_init_residual:
        zero_init_residuals(model)
    if backbone_weights:
        from tfreid.models.backbones.weights import load_backbone_weights

        load_backbone_weights(model, backbone_weights, prefixes=prefixes)
    return model


def zero_init_residuals(model: keras.Model) -> int:
    """Start every bottleneck of `model` as the identity: the BN closing its residual branch gets
    gamma = 0 (Goyal et al. 2017, "Accurate, Large Minibatch SGD", Sec. 5.1).

    A from-scratch ResNet-50 then trains several times faster in its first epochs, which is what
    the short synthetic recipes need; loading ImageNet weights afterwards overwrites it.

    Returns:
        The number of BN layers set (16 per full ResNet-50 copy).
    """
    count = 0
    for layer in model.layers:
        if _RESIDUAL_LAST_BN.fullmatch(layer.name):
            layer.gamma.assign(keras.ops.zeros_like(layer.gamma))
            count += 1
    return count
