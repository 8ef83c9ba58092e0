"""ADFL Type II (direct) attention layers and the arrangements against Eq. (3), (12)-(14)."""

import numpy as np
import pytest

import adfl_reference as ref
from tfreid.layers import (AttentionArrangement, ChannelSelfAttention, DirectChannelAttention,
                           DirectHyperAttention, DirectSpatialAttention, PositionAttention)

SHAPE = (2, 5, 3, 32)


@pytest.fixture
def x():
    return ref.random_map(SHAPE)


def spatial_weights(layer):
    return np.asarray(layer.conv.kernel)


def channel_weights(layer):
    return [np.asarray(w) for w in (layer.fc1.kernel, layer.fc1.bias, layer.fc2.kernel, layer.fc2.bias)]


# ----------------------------------------------------------------------------- single modules
def test_direct_spatial_matches_eq_12(x):
    layer = ref.built(DirectSpatialAttention(kernel_size=3, return_attention=True), x)
    assert layer.conv.kernel.shape == (3, 3, 2, 1) and layer.conv.bias is None
    out, amap = (np.asarray(t) for t in layer(x))
    want, want_map = ref.direct_spatial(x, spatial_weights(layer))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(amap, want_map, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(amap.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    assert amap.std() > 1e-3  # not uniform: the random conv really weights the positions


def test_direct_channel_matches_eq_13(x):
    layer = ref.built(DirectChannelAttention(reduction=16), x)
    assert layer.fc1.kernel.shape == (32, 2) and layer.fc2.kernel.shape == (2, 32)
    want = ref.direct_channel(x, *channel_weights(layer))
    np.testing.assert_allclose(np.asarray(layer(x)), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(layer.attention_map(x)).sum(axis=-1), 1.0, rtol=1e-5)


def test_direct_hyper_matches_eq_14(x):
    layer = DirectHyperAttention(return_attention=True)
    out, amap = (np.asarray(t) for t in layer(x))
    want, want_map = ref.direct_hyper(x)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(amap, want_map, rtol=1e-5, atol=1e-9)
    assert not layer.weights


# ----------------------------------------------------------------------------- arrangements
@pytest.mark.parametrize("arrangement", ["sc", "cs", "sum", "multiply"])
def test_type2_arrangements_match_fig_6(arrangement, x):
    layer = ref.built(AttentionArrangement(2, arrangement, channel_reduction=16, return_attention=True), x)
    kernel, mlp = spatial_weights(layer.spatial), channel_weights(layer.channel)

    def s(v):
        return ref.direct_spatial(v, kernel)

    def c(v):
        return ref.direct_channel(v, *mlp)

    want, want_map = {
        "sc": lambda: (c(s(x)[0]), s(x)[1]),
        "cs": lambda: s(c(x)),
        "sum": lambda: (s(x)[0] + c(x), s(x)[1]),
        "multiply": lambda: (ref.multiply(x, kernel, *mlp), s(x)[1]),
    }[arrangement]()
    out, amap = (np.asarray(t) for t in layer(x))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(amap, want_map, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("arrangement", ["sc", "cs", "sum"])
def test_type1_arrangements_match_fig_6(arrangement, x):
    layer = ref.built(AttentionArrangement(1, arrangement, spatial_reduction=8, return_attention=True), x)
    layer.spatial.alpha.assign(0.7)
    layer.channel.alpha.assign(-0.4)
    p = layer.spatial
    pw = [np.asarray(w) for w in (p.query.kernel, p.query.bias, p.key.kernel, p.key.bias,
                                  p.value.kernel, p.value.bias)]

    def s(v):
        return ref.position(v, *pw, 0.7)

    def c(v):
        return ref.channel_self(v, -0.4)

    want, want_map = {
        "sc": lambda: (c(s(x)[0]), s(x)[1]),
        "cs": lambda: s(c(x)),
        "sum": lambda: (s(x)[0] + c(x), s(x)[1]),  # each keeps its residual: starts at 2 I
    }[arrangement]()
    out, amap = (np.asarray(t) for t in layer(x))
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(amap, want_map, rtol=1e-4, atol=1e-6)


def test_arrangement_sublayers_are_the_single_modules():
    one, two = AttentionArrangement(1, "sum"), AttentionArrangement(2, "multiply")
    assert isinstance(one.spatial, PositionAttention) and isinstance(one.channel, ChannelSelfAttention)
    assert isinstance(two.spatial, DirectSpatialAttention) and isinstance(two.channel, DirectChannelAttention)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("make", [
    lambda: DirectSpatialAttention(dtype="float64"),
    lambda: DirectChannelAttention(reduction=8, dtype="float64"),
    lambda: DirectHyperAttention(dtype="float64"),
    lambda: AttentionArrangement(2, "multiply", channel_reduction=8, dtype="float64"),
    lambda: AttentionArrangement(1, "sum", spatial_reduction=8, dtype="float64"),
], ids=["2s", "2c", "2h", "2multiply", "1sum"])
def test_gradients_match_finite_differences(make):
    x = ref.random_map((2, 4, 3, 16), seed=5, dtype="float64")
    ref.check_gradients(ref.built(make(), x, seed=6, alpha=0.7), x)


# ----------------------------------------------------------------------------- serialisation etc.
@pytest.mark.parametrize("make", [
    lambda: DirectSpatialAttention(kernel_size=5, return_attention=True, name="sa"),
    lambda: DirectChannelAttention(reduction=8, name="ca"),
    lambda: DirectHyperAttention(return_attention=True, name="ha"),
    lambda: AttentionArrangement(2, "cs", channel_reduction=8, kernel_size=5, return_attention=True, name="ar2"),
    lambda: AttentionArrangement(1, "sc", spatial_reduction=4, name="ar1"),
], ids=["2s", "2c", "2h", "2cs", "1sc"])
def test_config_round_trip_and_keras_file(make, x, tmp_path):
    ref.check_serialisation(ref.built(make(), x, seed=7, alpha=0.5), x, tmp_path)


def test_mixed_precision_outputs_finite():
    big = np.random.default_rng(8).normal(0.0, 1.0, (2, 12, 4, 64)).astype("float32")
    full = ref.built(AttentionArrangement(2, "multiply"), big, seed=9)
    half = ref.built_under_policy("mixed_bfloat16", lambda: AttentionArrangement(2, "multiply"), big)
    half.set_weights(full.get_weights())
    out = np.asarray(half(big)).astype("float32")
    want = np.asarray(full(big))
    assert np.isfinite(out).all() and half.compute_dtype == "bfloat16"
    # bfloat16 keeps ~3 significant digits of the convolution/MLP logits, so a few percent
    assert np.abs(out - want).mean() < 5e-2 * np.abs(want).mean()


def test_bad_arguments():
    with pytest.raises(ValueError, match="attention_type"):
        AttentionArrangement(3, "sum")
    with pytest.raises(ValueError, match="arrangement"):
        AttentionArrangement(1, "parallel")
    with pytest.raises(ValueError, match="multiply"):
        AttentionArrangement(1, "multiply")
    with pytest.raises(ValueError, match="kernel_size"):
        DirectSpatialAttention(kernel_size=0)
    with pytest.raises(ValueError, match=r"C=8 must be >= reduction=16"):
        DirectChannelAttention()(np.zeros((1, 3, 3, 8), "float32"))
