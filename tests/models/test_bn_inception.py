"""BN-Inception backbone: torchvision GoogLeNet size/cost, layout, names; weight loading (also
Inception-v2's)."""

import keras
import numpy as np
import pytest

from tfreid.models.backbones import bn_inception_stage, bn_inception_stem, build_bn_inception, build_inception_v2
from tfreid.models.backbones.bn_inception import INCEPTION, STAGE_BLOCKS
from tfreid.models.complexity import count_flops, count_params

# torchvision.models.googlenet (aux_logits=False): 6,624,904 parameters, of which the ImageNet
# classifier fc holds 1024 * 1000 + 1000.
TORCHVISION_GOOGLENET_NO_FC = 6_624_904 - 1_025_000


def conv_bn(cin, cout, k):
    return k * k * cin * cout + 2 * cout  # kernel (no bias) + BN gamma, beta


def inception_params(cin, spec, k5=3):
    c1, r3, c3, r5, c5, pool = spec
    return (conv_bn(cin, c1, 1) + conv_bn(cin, r3, 1) + conv_bn(r3, c3, 3) + conv_bn(cin, r5, 1)
            + conv_bn(r5, c5, k5) + conv_bn(cin, pool, 1))


def backbone_params(k5=3):
    total, cin = conv_bn(3, 64, 7) + conv_bn(64, 64, 1) + conv_bn(64, 192, 3), 192
    for blocks in STAGE_BLOCKS.values():
        for block in blocks:
            total += inception_params(cin, INCEPTION[block], k5)
            c1, _, c3, _, c5, pool = INCEPTION[block]
            cin = c1 + c3 + c5 + pool
    return total


def backbone_macs(h, w, k5=3):
    """Per-layer multiply-accumulates: torchvision's GoogLeNet forward up to inception5b."""
    h, w = h // 2, w // 2
    total = h * w * 3 * 64 * 49
    h, w = h // 2, w // 2
    total += h * w * (64 * 64 + 64 * 192 * 9)
    cin = 192
    for blocks in STAGE_BLOCKS.values():
        h, w = h // 2, w // 2
        for block in blocks:
            c1, r3, c3, r5, c5, pool = INCEPTION[block]
            total += h * w * (cin * (c1 + r3 + r5 + pool) + r3 * c3 * 9 + r5 * c5 * k5 * k5)
            cin = c1 + c3 + c5 + pool
    return total


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(0)
    return build_bn_inception((64, 32, 3), width_multiplier=0.25)


def test_full_size_matches_torchvision_googlenet_count_and_cost():
    model = build_bn_inception((224, 224, 3))
    assert count_params(model) == backbone_params() == TORCHVISION_GOOGLENET_NO_FC == 5_599_904
    assert count_flops(model, (224, 224, 3)) == backbone_macs(224, 224)
    assert abs(backbone_macs(224, 224) - 1.5e9) / 1.5e9 < 0.01  # GoogLeNet's ~1.5 G multiply-adds
    out = model.output
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "inception3b": (None, 28, 28, 480), "inception4e": (None, 14, 14, 832), "inception5b": (None, 7, 7, 1024)}
    # torchvision module paths with "_" for ".": inception4a.branch2.1.conv -> inception4a_branch2_1_conv
    assert model.get_layer("inception4a_branch2_1_conv").kernel.shape == (3, 3, 96, 208)
    assert model.get_layer("inception3a_branch3_1_conv").kernel.shape == (3, 3, 16, 32)
    assert model.get_layer("conv1_conv").kernel.shape == (7, 7, 3, 64)
    assert model.get_layer("conv1_bn").epsilon == 1e-3
    assert model.get_layer("maxpool4").pool_size == (2, 2)


def test_paper_5x5_variant():
    model = build_bn_inception((64, 32, 3), branch3_kernel=5)
    assert model.get_layer("inception3a_branch3_1_conv").kernel.shape == (5, 5, 16, 32)
    assert count_params(model) == backbone_params(k5=5)


def test_stem_and_stage_semantics(small):
    """conv1 pads 3 on every side (PyTorch), max pools are ceil-mode, blocks concatenate
    [1x1, 3x3, "5x5", pool] in that order."""
    names = ["conv1_pad", "conv1_relu", "maxpool1", "inception3a_branch1_relu", "inception3a_branch2_1_relu",
             "inception3a_branch3_1_relu", "inception3a_branch4_1_relu", "inception3a"]
    probe = keras.Model(small.input, [small.get_layer(n).output for n in names])
    x = np.random.default_rng(1).normal(size=(2, 64, 32, 3)).astype("float32")
    pad, conv1, pool1, b1, b2, b3, b4, block = (np.asarray(v) for v in probe(x))
    np.testing.assert_array_equal(pad[:, 3:-3, 3:-3], x)
    assert pad.shape == (2, 70, 38, 3) and conv1.shape[1:3] == (32, 16)
    # ceil-mode 3x3/2 max pool, windows clipped at the border
    want = np.stack([np.stack([conv1[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2)) for j in range(8)], 1)
                     for i in range(16)], 1)
    np.testing.assert_array_equal(pool1, want)
    np.testing.assert_array_equal(block, np.concatenate([b1, b2, b3, b4], axis=-1))


def test_width_multiplier_and_prefixed_copies():
    inputs = keras.Input((64, 32, 3))
    x = bn_inception_stage(bn_inception_stem(inputs, 0.5), 3, 0.5)
    a = bn_inception_stage(x, 4, 0.5, prefix="part1_")
    b = bn_inception_stage(x, 4, 0.5, prefix="part2_")
    model = keras.Model(inputs, [a, b])
    assert x.shape[-1] == 240 and a.shape[-1] == 416
    k1 = model.get_layer("part1_inception4a_branch1_conv").kernel
    k2 = model.get_layer("part2_inception4a_branch1_conv").kernel
    assert k1 is not k2 and k1.path != k2.path
    with pytest.raises(ValueError, match="stage=2"):
        bn_inception_stage(x, 2)
    with pytest.raises(ValueError, match="width_multiplier=0"):
        build_bn_inception((64, 32, 3), width_multiplier=0)
    with pytest.raises(ValueError, match="branch3_kernel=7"):
        build_bn_inception((64, 32, 3), branch3_kernel=7)
    with pytest.raises(ValueError, match="input_shape"):
        build_bn_inception((64, 32))


@pytest.mark.parametrize("build", [build_bn_inception, build_inception_v2])
def test_weights_load_by_layer_name(build, tmp_path):
    keras.utils.set_random_seed(0)
    small = build((64, 32, 3), width_multiplier=0.25)
    rng = np.random.default_rng(2)
    for var in small.weights:  # random values everywhere, BN statistics included
        var.assign(rng.normal(0.0, 0.1, var.shape).astype("float32") + (1.0 if "variance" in var.path else 0.0))
    path = str(tmp_path / "backbone.weights.h5")
    small.save_weights(path)
    loaded = build((64, 32, 3), width_multiplier=0.25, weights=path)
    x = rng.normal(size=(2, 64, 32, 3)).astype("float32")
    for key, value in small(x, training=False).items():
        np.testing.assert_array_equal(np.asarray(loaded(x, training=False)[key]), np.asarray(value), err_msg=key)
    with pytest.raises(FileNotFoundError, match="missing.h5"):  # before building anything
        build((64, 32, 3), weights=str(tmp_path / "missing.h5"))
