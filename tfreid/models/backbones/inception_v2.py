"""Inception-v2 (Ioffe & Szegedy's BN-Inception): an alternative CCAN backbone.

The network of the ReID community's ``bn_inception-52deb4733.pth`` (Cadene's
``pretrainedmodels.bninception``), reproduced so that its ImageNet weights port layer by layer
(`tfreid.models.convert`). Unlike GoogLeNet v1 (`tfreid.models.backbones.bn_inception`, the
backbone the CCAN paper names) its modules have a double 3x3 branch instead of the 5x5, an
average-pool projection, and two stride-2 modules (3c, 4e) instead of max pools between stages:

- every conv is followed by BN (epsilon 1e-5, PyTorch's default) and ReLU. Layer names: the
  Cadene conv module ``M`` becomes the units ``{M}_conv`` (no bias: Cadene's conv bias folds
  into the BN moving mean), ``{M}_bn`` (= Cadene's BN module name) and ``{M}_relu``
  (``inception_3a_double_3x3_1`` -> ``inception_3a_double_3x3_1_conv``, ``..._bn``,
  ``..._relu``); pools keep Cadene's names (``pool1_3x3_s2``, ``inception_3a_pool``) and a
  module's concatenation is ``inception_{block}_output``;
- stride-2 convs pad 1 (``conv1_7x7_s2``: 3) on every side (``ZeroPadding2D`` ``{M}_pad`` +
  ``"valid"``), exactly PyTorch's padding; stride-1 convs use ``"same"``;
- branch average pools are 3x3/1 with PyTorch's ``count_include_pad=True`` (`PaddedPooling2D`:
  border windows divide by 9, Keras's ``"same"`` average pool by the in-image count); 5b's branch pool is a 3x3/1 max
  pool, as in Cadene's network;
- the max pools (``pool1_3x3_s2``, ``pool2_3x3_s2``, 3c's and 4e's 3x3/2) are ceil-mode in
  PyTorch; ``"same"`` max pooling is identical on even sizes (every size from a 256x128 or
  128x64 input is even).

Stages as CCAN uses them (input 256x128): stem (``conv1_7x7_s2`` .. ``conv2_3x3``, 1/4 size, 192
ch), stage 3 = ``pool2_3x3_s2`` + 3a-3b (320 ch, 1/8, CCAN level 1), stage 4 = 3c (stride 2) +
4a-4d (608 ch, 1/16, level 2), stage 5 = 4e (stride 2) + 5a-5b (1024 ch, 1/32, level 3).
``prefix`` names unshared copies of a stage; ``width_multiplier`` scales every width.
"""

from __future__ import annotations

import keras

from tfreid.checks import check_input_shape
from tfreid.layers.padded_pooling import PaddedPooling2D
from tfreid.models.backbones.bn_inception import (check_stage, check_weights_path,
                                                  check_width_multiplier, conv_bn_relu, scaled)

# (1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool projection, branch pool):
# Cadene's bninception.py. "max/2" modules (3c, 4e) have no 1x1 branch, stride-2 3x3 and second
# double-3x3 convs, and pass the stride-2 max pool through without a projection.
INCEPTION = {
    "3a": (64, 64, 64, 64, 96, 32, "avg"),
    "3b": (64, 64, 96, 64, 96, 64, "avg"),
    "3c": (0, 128, 160, 64, 96, 0, "max/2"),
    "4a": (224, 64, 96, 96, 128, 128, "avg"),
    "4b": (192, 96, 128, 96, 128, 128, "avg"),
    "4c": (160, 128, 160, 128, 160, 128, "avg"),
    "4d": (96, 128, 192, 160, 192, 128, "avg"),
    "4e": (0, 128, 192, 192, 256, 0, "max/2"),
    "5a": (352, 192, 320, 160, 224, 128, "avg"),
    "5b": (352, 192, 320, 192, 224, 128, "max"),
}
STAGE_BLOCKS = {3: ("3a", "3b"), 4: ("3c", "4a", "4b", "4c", "4d"), 5: ("4e", "5a", "5b")}
STAGE_OUTPUTS = {s: f"inception_{blocks[-1]}_output" for s, blocks in STAGE_BLOCKS.items()}
STEM_UNITS = ("conv1_7x7_s2", "conv2_3x3_reduce", "conv2_3x3")
BN_EPSILON = 1e-5  # PyTorch's BatchNorm2d default, which Cadene's network uses


def module_units(block: str) -> list[str]:
    """Cadene's conv module names of inception module `block`, in Cadene's order."""
    c1, _, _, _, _, proj, _ = INCEPTION[block]
    names = ["1x1"] if c1 else []
    names += ["3x3_reduce", "3x3", "double_3x3_reduce", "double_3x3_1", "double_3x3_2"]
    return [f"inception_{block}_{n}" for n in names + (["pool_proj"] if proj else [])]


def conv_units() -> list[str]:
    """Every conv module name of the backbone (Cadene's), in network order."""
    return [*STEM_UNITS, *(unit for block in INCEPTION for unit in module_units(block))]


def _module_channels(block: str, cin: int, width_multiplier: float) -> int:
    c1, _, c3, _, cd, proj, pool = INCEPTION[block]
    widths = [scaled(c, width_multiplier) for c in (c1, c3, cd, proj) if c]
    return sum(widths) + (cin if pool == "max/2" else 0)


def stage_channels(stage: int, width_multiplier: float = 1.0) -> int:
    """Output channels of stage 3, 4 or 5 (320 / 608 / 1024 at full width)."""
    check_stage(stage)
    channels = scaled(192, width_multiplier)
    for s in range(3, stage + 1):
        for block in STAGE_BLOCKS[s]:
            channels = _module_channels(block, channels, width_multiplier)
    return channels


def _unit(x, filters, kernel, stride, name):
    if stride == 1:
        return conv_bn_relu(x, filters, kernel, 1, name, epsilon=BN_EPSILON)
    x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    return conv_bn_relu(x, filters, kernel, stride, name, padding="valid", epsilon=BN_EPSILON)


def inception_module(x, block: str, width_multiplier: float = 1.0, prefix: str = ""):
    """Inception-v2 module ``block`` ("3a" .. "5b"): [1x1 |] 1x1->3x3 | 1x1->3x3->3x3 | pool[->1x1]."""
    *widths, pool = INCEPTION[block]
    c1, r3, c3, rd, cd, proj = (scaled(c, width_multiplier) if c else 0 for c in widths)
    name = f"{prefix}inception_{block}"
    stride = 2 if pool == "max/2" else 1
    branches = [_unit(x, c1, 1, 1, f"{name}_1x1")] if c1 else []
    branches.append(_unit(_unit(x, r3, 1, 1, f"{name}_3x3_reduce"), c3, 3, stride, f"{name}_3x3"))
    double = _unit(_unit(x, rd, 1, 1, f"{name}_double_3x3_reduce"), cd, 3, 1, f"{name}_double_3x3_1")
    branches.append(_unit(double, cd, 3, stride, f"{name}_double_3x3_2"))
    if pool == "avg":
        pooled = PaddedPooling2D("avg", 3, strides=1, name=f"{name}_pool")(x)
    else:
        pooled = keras.layers.MaxPooling2D(3, strides=stride, padding="same", name=f"{name}_pool")(x)
    branches.append(_unit(pooled, proj, 1, 1, f"{name}_pool_proj") if proj else pooled)
    return keras.layers.Concatenate(name=f"{name}_output")(branches)


def inception_v2_stem(x, width_multiplier: float = 1.0, prefix: str = ""):
    """``conv1_7x7_s2`` -> ``pool1_3x3_s2`` -> ``conv2_3x3_reduce`` (1x1) -> ``conv2_3x3``: 1/4
    size, 192 channels at full width."""
    w = check_width_multiplier(width_multiplier)
    x = _unit(x, scaled(64, w), 7, 2, f"{prefix}conv1_7x7_s2")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{prefix}pool1_3x3_s2")(x)
    x = _unit(x, scaled(64, w), 1, 1, f"{prefix}conv2_3x3_reduce")
    return _unit(x, scaled(192, w), 3, 1, f"{prefix}conv2_3x3")


def inception_v2_stage(x, stage: int, width_multiplier: float = 1.0, prefix: str = ""):
    """Stage 3, 4 or 5 (see module docstring); each halves the spatial size.

    Args:
        x: the stem's output (stage 3) or the previous stage's.
        stage: 3 (``pool2_3x3_s2`` + 3a-3b, 320 ch), 4 (3c + 4a-4d, 608 ch) or 5 (4e + 5a-5b,
            1024 ch).
        width_multiplier: scales every width (1.0 = Inception-v2).
        prefix: prepended to every layer name, for unshared copies of a stage.

    Returns:
        The stage output, ``[B, ceil(H / 2), ceil(W / 2), stage_channels(stage)]``.
    """
    check_stage(stage)
    w = check_width_multiplier(width_multiplier)
    if stage == 3:
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{prefix}pool2_3x3_s2")(x)
    for block in STAGE_BLOCKS[stage]:
        x = inception_module(x, block, w, prefix)
    return x


def build_inception_v2(input_shape=(256, 128, 3), width_multiplier: float = 1.0,
                       weights: str | None = None, name: str = "inception_v2") -> keras.Model:
    """Inception-v2 (BN-Inception) feature extractor with the three outputs CCAN uses.

    Args:
        input_shape: ``(H, W, 3)`` of the ImageNet-normalised RGB input. Default ``(256, 128, 3)``.
        width_multiplier: scales every width (1.0 = Inception-v2; e.g. 0.25 for tests).
        weights: ``None`` (random initialisation), the path of a local ``.h5`` file whose layer
            names follow this module, or ``"imagenet"`` (the file `tfreid.models.convert` writes
            from Cadene's ``bn_inception-52deb4733.pth``).
        name: model name.

    Returns:
        Functional `keras.Model` mapping images to ``{"inception_3b_output": [B, H/8, W/8, 320],
        "inception_4d_output": [B, H/16, W/16, 608], "inception_5b_output": [B, H/32, W/32,
        1024]}``.

    Example:

    >>> model = build_inception_v2((256, 128, 3))
    >>> {k: v.shape for k, v in model(keras.ops.zeros((1, 256, 128, 3))).items()}
    {'inception_3b_output': (1, 32, 16, 320), 'inception_4d_output': (1, 16, 8, 608), 'inception_5b_output': (1, 8, 4, 1024)}

    Reference:
        S. Ioffe, C. Szegedy, "Batch Normalization: Accelerating Deep Network Training by
        Reducing Internal Covariate Shift", ICML 2015 (Fig. 5); Cadene's pretrainedmodels
        ``bninception``.
    """
    shape = check_input_shape(input_shape)
    weights = check_weights_path(weights, "inception_v2")
    inputs = keras.Input(shape=shape, name="images")
    x = inception_v2_stem(inputs, width_multiplier)
    outputs = {}
    for stage in (3, 4, 5):
        x = inception_v2_stage(x, stage, width_multiplier)
        outputs[STAGE_OUTPUTS[stage]] = x
    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        from tfreid.models.backbones.weights import load_backbone_weights

        load_backbone_weights(model, weights, backbone="inception_v2")
    return model
