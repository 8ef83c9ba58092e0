"""PyTorch's padding (``padding="symmetric"``): ConvBNReLU, PaddedPooling2D, the Inception units
and HA-CNN, against NumPy references that pad ``k // 2`` on every side as PyTorch does."""

import keras
import numpy as np
import pytest

from tfreid.layers import ConvBNReLU, PaddedPooling2D, SoftSpatialAttention
from tfreid.models.blocks import InceptionA, InceptionB
from tfreid.models.hacnn import build_hacnn

from tests.layers.test_soft_attention import EPS, randomise


def np_conv_symmetric(x, kernel, stride):
    """NHWC convolution with ``k // 2`` zeros on every side (PyTorch ``padding=k // 2``)."""
    k, p = kernel.shape[0], kernel.shape[0] // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    ho, wo = (x.shape[1] - 1) // stride + 1, (x.shape[2] - 1) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, kernel.shape[-1]))
    for i in range(k):
        for j in range(k):
            out += xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride] @ kernel[i, j]
    return out


def np_pool(x, mode, k, stride):
    """PyTorch MaxPool2d / AvgPool2d(count_include_pad=True) with padding ``k // 2``."""
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf if mode == "max" else 0.0)
    ho, wo = (x.shape[1] - 1) // stride + 1, (x.shape[2] - 1) // stride + 1
    windows = np.stack([xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
                        for i in range(k) for j in range(k)])
    return windows.max(0) if mode == "max" else windows.mean(0)


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(3, 10, 6, 8)).astype("float32")


@pytest.mark.parametrize("size", [(10, 6), (9, 7)])
@pytest.mark.parametrize("mode, stride", [("max", 2), ("max", 1), ("avg", 1), ("avg", 2)])
def test_padded_pooling_matches_pytorch_semantics(mode, stride, size):
    x = np.random.default_rng(1).normal(size=(2, *size, 3)).astype("float32")
    layer = PaddedPooling2D(mode, 3, strides=stride)
    got = np.asarray(layer(x))
    np.testing.assert_allclose(got, np_pool(x.astype("float64"), mode, 3, stride), rtol=1e-6, atol=1e-6)
    assert tuple(layer.compute_output_shape((None, *size, 3))) == (None, *got.shape[1:])


def test_padded_average_counts_the_padding_unlike_keras_same():
    ones = np.ones((1, 4, 4, 1), "float32")
    corner = float(PaddedPooling2D("avg")(ones)[0, 0, 0, 0])
    assert corner == pytest.approx(4 / 9)  # PyTorch: 4 image pixels / 9
    assert float(keras.layers.AveragePooling2D(3, 1, "same")(ones)[0, 0, 0, 0]) == pytest.approx(1.0)


def test_padded_max_pool_of_negative_inputs_ignores_the_padding():
    x = -np.arange(1, 17, dtype="float32").reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(np.asarray(PaddedPooling2D("max", 3, 2)(x))[0, :, :, 0], [[-1, -2], [-5, -6]])


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_bn_relu_symmetric_matches_numpy_in_both_modes(x, stride):
    layer = ConvBNReLU(5, 3, strides=stride, use_bias=True, padding="symmetric")
    layer.build(x.shape)
    kernel, bias, gamma, beta, mean, var = randomise(layer, 2)
    y = np_conv_symmetric(x.astype("float64"), kernel, stride) + bias
    want = np.maximum((y - mean) / np.sqrt(var + EPS) * gamma + beta, 0.0)
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), want, rtol=1e-4, atol=1e-5)
    mu, sigma2 = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))
    batch = np.maximum((y - mu) / np.sqrt(sigma2 + EPS) * gamma + beta, 0.0)
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), batch, rtol=1e-3, atol=1e-4)


def test_symmetric_and_same_differ_only_for_strided_convs(x):
    a, b = ConvBNReLU(4, 3, padding="same"), ConvBNReLU(4, 3, padding="symmetric")
    a.build(x.shape)
    b.build(x.shape)
    b.set_weights(a.get_weights())
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(x)), rtol=1e-6)
    a, b = ConvBNReLU(4, 3, strides=2, padding="same"), ConvBNReLU(4, 3, strides=2, padding="symmetric")
    a.build(x.shape)
    b.build(x.shape)
    randomise(a, 3)
    b.set_weights(a.get_weights())
    assert np.abs(np.asarray(a(x)) - np.asarray(b(x))).max() > 1e-2


def test_inception_b_symmetric_matches_numpy(x):
    layer = InceptionB(8, padding="symmetric")
    layer.build(x.shape)
    w = randomise(layer, 4)

    def cbr(z, i, stride=1):
        kernel, gamma, beta, mean, var = w[5 * i : 5 * i + 5]
        return np.maximum((np_conv_symmetric(z, kernel, stride) - mean) / np.sqrt(var + EPS) * gamma + beta, 0.0)

    xd = x.astype("float64")
    want = np.concatenate([cbr(cbr(xd, 0), 1, 2), cbr(cbr(cbr(xd, 2), 3), 4, 2), cbr(np_pool(xd, "max", 3, 2), 5)], -1)
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), want, rtol=1e-4, atol=1e-5)


def test_inception_a_symmetric_average_counts_padding(x):
    layer = InceptionA(8, padding="symmetric")
    layer.build(x.shape)
    w = randomise(layer, 5)
    kernel, gamma, beta, mean, var = w[-5:]  # stream 4: avgpool -> 1x1
    want = np.maximum((np_pool(x.astype("float64"), "avg", 3, 1) @ kernel[0, 0] - mean) / np.sqrt(var + EPS) * gamma
                      + beta, 0.0)
    np.testing.assert_allclose(np.asarray(layer(x, training=False))[..., -2:], want, rtol=1e-4, atol=1e-5)


def test_hacnn_symmetric_stem_and_round_trip(tmp_path):
    model = build_hacnn(5, widths=(16, 32, 48), feature_dim=16, padding="symmetric")
    images = np.random.default_rng(6).normal(size=(2, 160, 64, 3)).astype("float32")
    stem = model.get_layer("stem")
    kernel, gamma, beta, mean, var = randomise(stem, 7)
    probe = keras.Model(model.input, stem.output)
    want = np.maximum((np_conv_symmetric(images.astype("float64"), kernel, 2) - mean) / np.sqrt(var + EPS) * gamma
                      + beta, 0.0)
    np.testing.assert_allclose(np.asarray(probe(images)), want, rtol=1e-4, atol=1e-5)
    assert model.get_layer("ha1").soft.spatial.conv1.padding == "symmetric"
    path = tmp_path / "hacnn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(images)["embedding"]), np.asarray(model(images)["embedding"]),
                               rtol=1e-5, atol=1e-6)


def test_bad_padding_names_the_argument():
    for make in (lambda: ConvBNReLU(4, 3, padding="valid"), lambda: InceptionA(8, padding="torch"),
                 lambda: SoftSpatialAttention(padding=None), lambda: build_hacnn(5, padding="Same")):
        with pytest.raises(ValueError, match="`padding` must be 'same' or 'symmetric'"):
            make()
    with pytest.raises(ValueError, match="`mode` must be 'max' or 'avg'"):
        PaddedPooling2D("min")
    with pytest.raises(ValueError, match="`pool_size` must be odd"):
        PaddedPooling2D("max", 2)
