"""Inception-v2 (Cadene's BN-Inception) backbone: size and cost against Cadene's network computed
by hand, layout, PyTorch's pooling and padding semantics, names, copies, errors (weight loading
by name: test_bn_inception.py)."""

import keras
import numpy as np
import pytest

from pytorch_state_dicts import CADENE, cadene_convs
from tfreid.models.backbones import build_inception_v2, inception_v2_stage, inception_v2_stem
from tfreid.models.backbones.inception_v2 import stage_channels
from tfreid.models.complexity import count_flops, count_params

# pretrainedmodels.bninception.BNInception(): 11,295,240 parameters, of which last_linear holds
# 1024 * 1000 + 1000 and the conv biases (which fold into BN here) one per conv filter.
CADENE_PARAMS, CADENE_FC = 11_295_240, 1_025_000


def backbone_macs(h, w):
    """Multiply-accumulates of Cadene's forward up to inception_5b, module by module."""
    h, w = h // 2, w // 2
    total = h * w * 3 * 64 * 49
    h, w = h // 2, w // 2
    total += h * w * (64 * 64 + 64 * 192 * 9)
    h, w, cin = h // 2, w // 2, 192  # pool2
    for c1, r3, c3, rd, cd, proj in CADENE.values():
        if proj:
            total += h * w * (cin * (c1 + r3 + rd + proj) + 9 * (r3 * c3 + rd * cd + cd * cd))
            cin = c1 + c3 + cd + proj
        else:  # 3x3 and second double 3x3 at stride 2
            total += h * w * (cin * (r3 + rd) + 9 * rd * cd)
            h, w = h // 2, w // 2
            total += h * w * 9 * (r3 * c3 + cd * cd)
            cin += c3 + cd
    return total


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(0)
    return build_inception_v2((64, 32, 3), width_multiplier=0.25)


def test_full_size_matches_cadene_count_cost_and_widths():
    model = build_inception_v2((224, 224, 3))
    convs = cadene_convs()
    conv_bn = sum(k * k * cin * cout + 2 * cout for _, cin, cout, k in convs)
    conv_biases = sum(cout for _, _, cout, _ in convs)
    assert len(convs) == 69 and conv_biases == 10_016
    assert count_params(model) == conv_bn == CADENE_PARAMS - CADENE_FC - conv_biases == 10_260_224
    assert count_flops(model, (224, 224, 3)) == backbone_macs(224, 224)
    assert abs(backbone_macs(224, 224) - 2.0e9) / 2.0e9 < 0.03  # BN-Inception's ~2 G multiply-adds
    assert {k: tuple(v.shape) for k, v in model.output.items()} == {
        "inception_3b_output": (None, 28, 28, 320), "inception_4d_output": (None, 14, 14, 608),
        "inception_5b_output": (None, 7, 7, 1024)}
    assert [stage_channels(s) for s in (3, 4, 5)] == [320, 608, 1024]
    for name, cin, cout, k in convs:  # Cadene's module M -> M_conv / M_bn
        assert model.get_layer(f"{name}_conv").kernel.shape == (k, k, cin, cout), name
        assert model.get_layer(f"{name}_bn").epsilon == 1e-5
    assert model.get_layer("inception_3c_output").output.shape[-1] == 576
    assert model.get_layer("inception_4e_output").output.shape[-1] == 1056


def test_pytorch_padding_and_pooling_semantics(small):
    """conv1 pads 3 and stride-2 convs pad 1 on every side; branch average pools count the zero
    padding (count_include_pad); 3c's pool is a ceil-mode 3x3/2 max pool passed through, 5b's a
    3x3/1 max pool; modules concatenate in Cadene's order."""
    names = ["conv1_7x7_s2_pad", "inception_3b_output", "inception_3c_3x3_reduce_relu", "inception_3c_3x3_pad",
             "inception_3c_pool", "inception_3c_3x3_relu", "inception_3c_double_3x3_2_relu", "inception_3c_output",
             "inception_3a_pool", "pool2_3x3_s2", "inception_4d_output", "inception_5b_pool", "inception_5a_output",
             "inception_3a_1x1_relu", "inception_3a_3x3_relu", "inception_3a_double_3x3_2_relu",
             "inception_3a_pool_proj_relu", "inception_3a_output"]
    probe = keras.Model(small.input, [small.get_layer(n).output for n in names])
    x = np.random.default_rng(1).normal(size=(2, 64, 32, 3)).astype("float32")
    v = dict(zip(names, (np.asarray(t) for t in probe(x))))
    np.testing.assert_array_equal(v["conv1_7x7_s2_pad"][:, 3:-3, 3:-3], x)
    reduce, padded = v["inception_3c_3x3_reduce_relu"], v["inception_3c_3x3_pad"]
    assert padded.shape[1:3] == (reduce.shape[1] + 2, reduce.shape[2] + 2)
    np.testing.assert_array_equal(padded[:, 1:-1, 1:-1], reduce)

    def pool(a, k, s, fn, pad_value=None):
        """PyTorch pooling: zero (avg) or no (max) padding of 1 when pad_value is given, ceil mode."""
        if pad_value is not None:
            a = np.pad(a, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad_value)
        rows, cols = -(-(a.shape[1] - k) // s) + 1, -(-(a.shape[2] - k) // s) + 1
        return np.stack([np.stack([fn(a[:, i * s:i * s + k, j * s:j * s + k], axis=(1, 2)) for j in range(cols)], 1)
                         for i in range(rows)], 1)

    np.testing.assert_allclose(v["inception_3a_pool"], pool(v["pool2_3x3_s2"], 3, 1, np.mean, 0.0), rtol=1e-5, atol=1e-6)
    three_b = v["inception_3b_output"]
    np.testing.assert_array_equal(v["inception_3c_pool"], pool(three_b, 3, 2, np.max))
    np.testing.assert_array_equal(v["inception_5b_pool"], pool(v["inception_5a_output"], 3, 1, np.max, -np.inf))
    np.testing.assert_array_equal(v["inception_3c_output"], np.concatenate(
        [v["inception_3c_3x3_relu"], v["inception_3c_double_3x3_2_relu"], v["inception_3c_pool"]], -1))
    np.testing.assert_array_equal(v["inception_3a_output"], np.concatenate(
        [v[f"inception_3a_{b}_relu"] for b in ("1x1", "3x3", "double_3x3_2", "pool_proj")], -1))
    assert three_b.shape[1:3] == (8, 4) and v["inception_3c_output"].shape[1:3] == (4, 2)
    assert v["inception_4d_output"].shape[-1] == stage_channels(4, 0.25)


def test_width_multiplier_and_prefixed_copies():
    inputs = keras.Input((64, 32, 3))
    x = inception_v2_stage(inception_v2_stem(inputs, 0.5), 3, 0.5)
    a = inception_v2_stage(x, 4, 0.5, prefix="part1_")
    b = inception_v2_stage(inception_v2_stage(x, 4, 0.5, prefix="part2_"), 5, 0.5, prefix="part2_")
    model = keras.Model(inputs, [a, b])
    assert (x.shape[-1], a.shape[-1], b.shape[-1]) == (160, 304, 512)
    assert [stage_channels(s, 0.5) for s in (3, 4, 5)] == [160, 304, 512]
    k1 = model.get_layer("part1_inception_3c_3x3_conv").kernel
    k2 = model.get_layer("part2_inception_3c_3x3_conv").kernel
    assert k1 is not k2 and k1.path != k2.path
    with pytest.raises(ValueError, match="stage=2"):
        inception_v2_stage(x, 2)
    with pytest.raises(ValueError, match="stage=6"):
        stage_channels(6)
    with pytest.raises(ValueError, match="width_multiplier=0"):
        build_inception_v2((64, 32, 3), width_multiplier=0)
    with pytest.raises(ValueError, match="input_shape"):
        build_inception_v2((64, 32))
