"""BN-Inception for CCAN: GoogLeNet v1 (Inception v1) with batch normalisation after every conv.

CCAN's backbone ("GoogLeNet-V1 with Batch Normalization pretrained on ImageNet", global levels of
480 / 832 / 1024 channels) is the network PyTorch ships as ``torchvision.models.googlenet``; this
module reproduces its layout so that its ImageNet weights can be ported layer by layer:

- convolutions without bias, each followed by BN (epsilon 1e-3, torchvision's ``BasicConv2d``)
  and ReLU; layer names mirror torchvision's module paths with ``_`` for ``.``
  (``inception4a.branch2.1.conv`` -> ``inception4a_branch2_1_conv``, ``..._bn``, ``..._relu``);
- the "5x5" branch uses a 3x3 kernel as torchvision's weights do (``branch3_kernel=5`` gives
  Szegedy et al.'s 5x5; the weights then do not port);
- ``maxpool1..3`` are 3x3/2 and ``maxpool4`` 2x2/2 in ceil mode; ``"same"`` max pooling is
  identical to ceil mode on even sizes (every size from a 256x128 or 128x64 input is even);
- ``conv1`` pads 3 on every side (``ZeroPadding2D`` + ``"valid"``), exactly PyTorch's padding.

Stages as CCAN uses them (input 256x128): stem (``conv1`` .. ``conv3``, 1/4 size), stage 3 =
``maxpool2`` + inception 3a-3b (480 ch, 1/8, CCAN level 1), stage 4 = ``maxpool3`` + 4a-4e
(832, 1/16, level 2), stage 5 = ``maxpool4`` + 5a-5b (1024, 1/32, level 3). ``prefix`` names
unshared copies (``part1_inception4a_branch1_conv``) which `load_backbone_weights(...,
prefixes=("", "part1_", ...))` fills from the same file. ``width_multiplier`` scales every width
(small test models).
"""

from __future__ import annotations

import numbers
import os

import keras

from tfreid.layers.fused_batch_normalization import FusedBatchNormalization

# (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool projection): GoogLeNet Table 1 = torchvision.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
STAGE_BLOCKS = {3: ("3a", "3b"), 4: ("4a", "4b", "4c", "4d", "4e"), 5: ("5a", "5b")}
STAGE_POOLS = {3: ("maxpool2", 3), 4: ("maxpool3", 3), 5: ("maxpool4", 2)}  # (name, kernel)
STAGE_OUTPUTS = {s: f"inception{blocks[-1]}" for s, blocks in STAGE_BLOCKS.items()}
BN_EPSILON = 1e-3  # torchvision BasicConv2d, so ImageNet statistics behave as trained
BN_MOMENTUM = 0.9  # PyTorch's 0.1


def check_width_multiplier(width_multiplier):
    ok = isinstance(width_multiplier, numbers.Real) and not isinstance(width_multiplier, bool)
    if not ok or not 0 < width_multiplier <= 4:
        raise ValueError(f"`width_multiplier` must be a number in (0, 4] (1.0 = BN-Inception), "
                         f"received width_multiplier={width_multiplier!r}.")
    return float(width_multiplier)


def check_branch3_kernel(kernel):
    if kernel not in (3, 5):
        raise ValueError(f"`branch3_kernel` must be 3 (torchvision's weights) or 5 (GoogLeNet "
                         f"paper), received branch3_kernel={kernel!r}.")
    return int(kernel)


def check_weights_path(weights, backbone: str = "bn_inception"):
    """Fail before building (tens of seconds) when the weights file cannot be there; returns the
    local file (``"imagenet"``: `backbone`'s converted file in the Keras cache) or ``None``."""
    from tfreid.models.backbones.weights import resolve_backbone_weights

    return resolve_backbone_weights(weights, backbone)


def check_stage(stage):
    if stage not in (3, 4, 5):
        raise ValueError(f"`stage` must be 3, 4 or 5, received stage={stage!r}.")
    return stage


def scaled(channels: int, width_multiplier: float) -> int:
    return max(1, int(round(channels * width_multiplier)))


def stage_channels(stage: int, width_multiplier: float = 1.0) -> int:
    """Output channels of stage 3, 4 or 5 (480 / 832 / 1024 at full width)."""
    c1, _, c3, _, c5, pool = INCEPTION[STAGE_BLOCKS[stage][-1]]
    return sum(scaled(c, width_multiplier) for c in (c1, c3, c5, pool))


def conv_bn_relu(x, filters, kernel, stride, name, padding="same", epsilon=BN_EPSILON):
    """Layers ``{name}_conv`` (no bias), ``{name}_bn``, ``{name}_relu``."""
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=epsilon, name=f"{name}_bn")(x)
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


def inception_block(x, block: str, width_multiplier: float = 1.0, branch3_kernel: int = 3, prefix: str = ""):
    """Inception module ``block`` ("3a" .. "5b"): 1x1 | 1x1->3x3 | 1x1->"5x5" | maxpool->1x1."""
    c1, r3, c3, r5, c5, pool = (scaled(c, width_multiplier) for c in INCEPTION[block])
    name = f"{prefix}inception{block}"
    b1 = conv_bn_relu(x, c1, 1, 1, f"{name}_branch1")
    b2 = conv_bn_relu(conv_bn_relu(x, r3, 1, 1, f"{name}_branch2_0"), c3, 3, 1, f"{name}_branch2_1")
    b3 = conv_bn_relu(conv_bn_relu(x, r5, 1, 1, f"{name}_branch3_0"), c5, branch3_kernel, 1, f"{name}_branch3_1")
    b4 = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_branch4_pool")(x)
    b4 = conv_bn_relu(b4, pool, 1, 1, f"{name}_branch4_1")
    return keras.layers.Concatenate(name=name)([b1, b2, b3, b4])


def bn_inception_stem(x, width_multiplier: float = 1.0, prefix: str = ""):
    """``conv1`` (7x7/2) -> ``maxpool1`` (3x3/2) -> ``conv2`` (1x1) -> ``conv3`` (3x3): 1/4 size,
    192 channels at full width."""
    w = check_width_multiplier(width_multiplier)
    x = keras.layers.ZeroPadding2D(3, name=f"{prefix}conv1_pad")(x)
    x = conv_bn_relu(x, scaled(64, w), 7, 2, f"{prefix}conv1", padding="valid")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{prefix}maxpool1")(x)
    x = conv_bn_relu(x, scaled(64, w), 1, 1, f"{prefix}conv2")
    return conv_bn_relu(x, scaled(192, w), 3, 1, f"{prefix}conv3")


def bn_inception_stage(x, stage: int, width_multiplier: float = 1.0, branch3_kernel: int = 3, prefix: str = ""):
    """Stage 3, 4 or 5: its stride-2 max pool then its inception modules (see module docstring).

    Args:
        x: the stem's output (stage 3) or the previous stage's.
        stage: 3 (inception 3a-3b, 480 ch), 4 (4a-4e, 832 ch) or 5 (5a-5b, 1024 ch).
        width_multiplier: scales every width (1.0 = BN-Inception).
        branch3_kernel: kernel of the "5x5" branch, 3 (torchvision) or 5 (paper).
        prefix: prepended to every layer name, for unshared copies of a stage.

    Returns:
        The stage output, ``[B, ceil(H / 2), ceil(W / 2), stage_channels(stage)]``.
    """
    check_stage(stage)
    w = check_width_multiplier(width_multiplier)
    k = check_branch3_kernel(branch3_kernel)
    pool, kernel = STAGE_POOLS[stage]
    x = keras.layers.MaxPooling2D(kernel, strides=2, padding="same", name=f"{prefix}{pool}")(x)
    for block in STAGE_BLOCKS[stage]:
        x = inception_block(x, block, w, k, prefix)
    return x


def build_bn_inception(input_shape=(256, 128, 3), width_multiplier: float = 1.0, branch3_kernel: int = 3,
                       weights: str | None = None, name: str = "bn_inception") -> keras.Model:
    """BN-Inception feature extractor with the three outputs CCAN uses.

    Args:
        input_shape: ``(H, W, 3)`` of the normalised float input. Default ``(256, 128, 3)``.
        width_multiplier: scales every width (1.0 = BN-Inception; e.g. 0.25 for tests).
        branch3_kernel: 3 (torchvision's GoogLeNet, default) or 5 (GoogLeNet paper).
        weights: ``None`` (random initialisation), the path of a local ``.h5`` file (Keras
            legacy or ``.weights.h5``) whose layer names follow this module, or ``"imagenet"``
            (the file `tfreid.models.convert` writes from the PyTorch checkpoint).
        name: model name.

    Returns:
        Functional `keras.Model` mapping images to ``{"inception3b": [B, H/8, W/8, 480],
        "inception4e": [B, H/16, W/16, 832], "inception5b": [B, H/32, W/32, 1024]}``.

    Example:

    >>> model = build_bn_inception((256, 128, 3))
    >>> {k: v.shape for k, v in model(keras.ops.zeros((1, 256, 128, 3))).items()}
    {'inception3b': (1, 32, 16, 480), 'inception4e': (1, 16, 8, 832), 'inception5b': (1, 8, 4, 1024)}

    Reference:
        C. Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (Table 1); S. Ioffe,
        C. Szegedy, "Batch Normalization", ICML 2015; torchvision ``googlenet``.
    """
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else ()
    if len(shape) != 3 or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(f"`input_shape` must be (H, W, C) positive integers, received input_shape={input_shape!r}.")
    weights = check_weights_path(weights)
    inputs = keras.Input(shape=shape, name="images")
    x = bn_inception_stem(inputs, width_multiplier)
    outputs = {}
    for stage in (3, 4, 5):
        x = bn_inception_stage(x, stage, width_multiplier, branch3_kernel)
        outputs[STAGE_OUTPUTS[stage]] = x
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        from tfreid.models.backbones.weights import load_backbone_weights

        load_backbone_weights(model, weights, backbone="bn_inception")
    return model
