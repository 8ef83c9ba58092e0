"""Soft attention layers (HA-CNN) against an independent NumPy re-implementation."""

import math

import keras
import numpy as np
import pytest

from tfreid.layers import ConvBNReLU, SoftAttention, SoftChannelAttention, SoftSpatialAttention

EPS = 1e-5  # ConvBNReLU's BN epsilon


# ----------------------------------------------------------------------------- NumPy reference
def np_conv_same(x, kernel, stride):
    """NHWC convolution with TF "same" padding (extra padding at the bottom/right)."""
    b, h, w, _ = x.shape
    k = kernel.shape[0]
    ho, wo = math.ceil(h / stride), math.ceil(w / stride)
    ph = max((ho - 1) * stride + k - h, 0)
    pw = max((wo - 1) * stride + k - w, 0)
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((b, ho, wo, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            patch = xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
            out += patch @ kernel[i, j]
    return out


def np_conv_bn_relu(x, weights, stride=1):
    kernel, gamma, beta, mean, var = weights
    y = np_conv_same(x, kernel, stride)
    return np.maximum((y - mean) / np.sqrt(var + EPS) * gamma + beta, 0.0)


def np_resize_bilinear(x, out_h, out_w):
    """Bilinear resize with half-pixel centres (TF2 / TFLite default), edge-clamped."""

    def axis_weights(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        m = np.zeros((n_out, n_in))
        np.add.at(m, (np.arange(n_out), lo), 1 - (src - lo))
        np.add.at(m, (np.arange(n_out), hi), src - lo)
        return m

    my, mx = axis_weights(x.shape[1], out_h), axis_weights(x.shape[2], out_w)
    return np.einsum("ih,bhwc,jw->bijc", my, x, mx)


def np_spatial(x, w):
    s = x.mean(-1, keepdims=True)
    s = np_conv_bn_relu(s, w[0:5], stride=2)
    s = np_resize_bilinear(s, x.shape[1], x.shape[2])
    return np_conv_bn_relu(s, w[5:10])


def np_channel(x, w):
    c = x.mean(axis=(1, 2), keepdims=True)
    return np_conv_bn_relu(np_conv_bn_relu(c, w[0:5]), w[5:10])


def np_soft(x, w):
    y = np_spatial(x, w[0:10]) * np_channel(x, w[10:20])
    return 1.0 / (1.0 + np.exp(-np_conv_bn_relu(y, w[20:25])))


def randomise(layer, seed):
    """Random kernels and BN parameters/statistics (so inference mode is not the identity)."""
    rng = np.random.default_rng(seed)
    new = []
    for w in layer.weights:
        shape = tuple(w.shape)
        if w.name == "moving_variance":
            new.append(rng.uniform(0.5, 2.0, shape))
        elif w.name == "gamma":
            new.append(rng.uniform(0.5, 1.5, shape))
        elif w.name == "beta":  # positive offsets keep every ReLU partly active
            new.append(rng.uniform(0.2, 0.6, shape))
        elif w.name == "moving_mean":
            new.append(rng.normal(0.0, 0.1, shape))
        else:
            new.append(rng.normal(0.0, 1.0 / math.sqrt(np.prod(shape[:-1])), shape))
    layer.set_weights([v.astype("float32") for v in new])
    return [v.astype("float64") for v in new]


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(3, 10, 6, 32)).astype("float32")


# ----------------------------------------------------------------------------- values
def test_conv_bn_relu_matches_numpy_stride2(x):
    layer = ConvBNReLU(5, 3, strides=2)
    layer.build(x.shape)
    w = randomise(layer, 1)
    got = np.asarray(layer(x, training=False))
    assert got.shape == (3, 5, 3, 5)
    np.testing.assert_allclose(got, np_conv_bn_relu(x, w, stride=2), rtol=1e-4, atol=1e-5)


def test_spatial_attention_matches_numpy(x):
    layer = SoftSpatialAttention()
    layer.build(x.shape)
    w = randomise(layer, 2)
    got = np.asarray(layer(x, training=False))
    want = np_spatial(x, w)
    assert got.shape == (3, 10, 6, 1)
    assert want.std() > 1e-3  # the reference is not a constant (weights are not degenerate)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_spatial_attention_odd_size_resizes_back_to_input():
    xo = np.random.default_rng(3).normal(size=(2, 7, 5, 4)).astype("float32")
    layer = SoftSpatialAttention()
    layer.build(xo.shape)
    w = randomise(layer, 3)
    np.testing.assert_allclose(np.asarray(layer(xo, training=False)), np_spatial(xo, w), rtol=1e-4, atol=1e-5)


def test_channel_attention_matches_numpy(x):
    layer = SoftChannelAttention(reduction=8)
    layer.build(x.shape)
    w = randomise(layer, 4)
    assert [tuple(v.shape) for v in layer.weights][0] == (1, 1, 32, 4)  # C / r bottleneck
    got = np.asarray(layer(x, training=False))
    assert got.shape == (3, 1, 1, 32)
    np.testing.assert_allclose(got, np_channel(x, w), rtol=1e-4, atol=1e-5)


def test_soft_attention_matches_numpy_and_lies_in_half_open_range(x):
    layer = SoftAttention(reduction=8)
    layer.build(x.shape)
    w = randomise(layer, 5)
    got = np.asarray(layer(x, training=False))
    want = np_soft(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert got.min() >= 0.5 and got.max() < 1.0
    assert got.max() > 0.55  # not the degenerate all-0.5 map


def test_soft_attention_range_in_training_mode():
    # Batch statistics make every ReLU half-active regardless of the weights' signs.
    xr = keras.random.normal((4, 40, 16, 128), seed=7)
    a = np.asarray(SoftAttention()(xr, training=True))
    assert a.shape == (4, 40, 16, 128)
    assert a.min() >= 0.5 and a.max() < 1.0 and a.std() > 0.01


def test_soft_attention_parameter_count_matches_paper_formula():
    c, r = 128, 16
    layer = SoftAttention(reduction=r)
    layer.build((None, 40, 16, c))
    trainable = sum(int(np.prod(v.shape)) for v in layer.trainable_weights)
    # Paper: spatial 9 + 1, channel 2 c^2 / r, blend c^2; plus BN gamma/beta per conv output.
    assert trainable == (9 + 1) + 2 * c * c // r + c * c + 2 * (1 + 1 + c // r + c + c)


# ----------------------------------------------------------------------------- contracts
@pytest.mark.parametrize(
    "layer, in_shape, out_shape",
    [
        (ConvBNReLU(8, 3, strides=2), (None, 7, 5, 3), (None, 4, 3, 8)),
        (SoftSpatialAttention(), (None, 40, 16, 128), (None, 40, 16, 1)),
        (SoftChannelAttention(), (None, 40, 16, 128), (None, 1, 1, 128)),
        (SoftAttention(), (None, 40, 16, 128), (None, 40, 16, 128)),
    ],
)
def test_compute_output_shape_matches_call(layer, in_shape, out_shape):
    assert tuple(layer.compute_output_shape(in_shape)) == out_shape
    y = layer(np.zeros((2, *in_shape[1:]), "float32"))
    assert tuple(y.shape) == (2, *out_shape[1:])


@pytest.mark.parametrize(
    "layer",
    [
        ConvBNReLU(8, 3, strides=2, use_bias=True, bn_momentum=0.8, bn_epsilon=1e-3, name="c"),
        SoftSpatialAttention(use_bias=True, name="s"),
        SoftChannelAttention(reduction=4, use_bias=True, name="ch"),
        SoftAttention(reduction=8, use_bias=True, name="sa"),
    ],
)
def test_get_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    x = np.random.default_rng(8).normal(size=(2, 8, 6, 16)).astype("float32")
    y = layer(x, training=False)
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(x, training=False)), np.asarray(y), rtol=1e-6)


def test_keras_safe_mode_round_trip(tmp_path, x):
    inp = keras.Input(x.shape[1:])
    out = SoftAttention(reduction=8, name="sa")(inp)
    model = keras.Model(inp, [out, SoftSpatialAttention(name="sp")(inp), SoftChannelAttention(8, name="ch")(inp)])
    randomise(model, 9)
    path = tmp_path / "soft.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(model(x, training=False), loaded(x, training=False)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_mixed_precision_run(x):
    layer = SoftAttention(reduction=8, dtype="mixed_float16")
    a = layer(x, training=True)
    assert keras.backend.standardize_dtype(a.dtype) == "float16"
    assert layer.conv.conv.kernel.dtype == "float32"  # variables stay float32
    a = np.asarray(a, dtype="float32")
    assert np.isfinite(a).all() and a.min() >= 0.5 and a.max() <= 1.0


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="reduction"):
        SoftAttention(reduction=0)
    with pytest.raises(ValueError, match="filters"):
        ConvBNReLU(0)
    with pytest.raises(ValueError, match="C=8 must be >= reduction=16"):
        SoftChannelAttention()(np.zeros((1, 4, 4, 8), "float32"))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        SoftAttention()(np.zeros((2, 16), "float32"))


def test_conv_bn_relu_training_mode_uses_batch_statistics(x):
    layer = ConvBNReLU(6, 3, use_bias=True)
    layer.build(x.shape)
    kernel, bias, gamma, beta, mean, var = randomise(layer, 10)
    got = np.asarray(layer(x, training=True))
    new_mean, new_var = (np.asarray(v, "float64") for v in layer.bn.non_trainable_weights)
    y = np_conv_same(x, kernel, 1) + bias
    mu, sigma2 = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))  # biased batch variance
    want = np.maximum((y - mu) / np.sqrt(sigma2 + EPS) * gamma + beta, 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    # Moving statistics move 10% towards the batch ones (Keras keeps the biased variance).
    np.testing.assert_allclose(new_mean, 0.9 * mean + 0.1 * mu, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(new_var, 0.9 * var + 0.1 * sigma2, rtol=1e-5, atol=1e-6)
    # Inference (BN folded into the convolution) uses the moving statistics instead.
    folded = np.asarray(layer(x, training=False))
    ref = np.maximum((y - new_mean) / np.sqrt(new_var + EPS) * gamma + beta, 0)
    np.testing.assert_allclose(folded, ref, rtol=1e-4, atol=1e-5)
