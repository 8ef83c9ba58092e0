"""ForegroundChannelAttention (AANet FCA) against NumPy: values, GMinP effect, gradients, config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aanet_reference import fca, randomise
from tfreid.layers import ForegroundChannelAttention


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(3, 6, 4, 32)).astype("float32")


def test_matches_numpy(x):
    layer = ForegroundChannelAttention(reduction=8)
    layer.build(x.shape)
    w = randomise(layer, 1)
    assert [tuple(v.shape) for v in layer.weights] == [(1, 1, 32, 4), (4,), (1, 1, 4, 32), (32,)]
    got = np.asarray(layer(x))
    want = fca(x, w)
    assert got.shape == (3, 1, 1, 32)
    assert want.std() > 0.05  # a non-degenerate reference
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_out_channels_weights_another_width(x):
    layer = ForegroundChannelAttention(reduction=16, out_channels=48)
    layer.build(x.shape)
    w = randomise(layer, 2)
    got = np.asarray(layer(x))
    assert got.shape == (3, 1, 1, 48) == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(got, fca(x, w), rtol=1e-5, atol=1e-6)


def test_signature_is_gap_minus_global_min(x):
    """A per-channel constant background cancels in GAP - GMinP; plain GAP (SE) would see it.
    Moving the minimum alone (same mean) changes the attention: GMinP is really used."""
    layer = ForegroundChannelAttention(reduction=8)
    layer.build(x.shape)
    randomise(layer, 3)
    offset = np.random.default_rng(1).normal(size=(1, 1, 1, 32)).astype("float32") * 5
    np.testing.assert_allclose(np.asarray(layer(x + offset)), np.asarray(layer(x)), rtol=1e-4, atol=1e-5)
    y = x.copy()
    y[:, 0, 0, :] -= 3.0  # lower the minimum ...
    y[:, 1, 1, :] += 3.0  # ... keeping the mean
    np.testing.assert_allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-5)
    assert np.abs(np.asarray(layer(y)) - np.asarray(layer(x))).max() > 1e-3


def test_gradients_reach_input_and_both_convs(x):
    layer = ForegroundChannelAttention(reduction=8)
    layer.build(x.shape)
    randomise(layer, 4)  # seeded: unseeded init can switch off all 4 ReLU units (zero conv1 grads)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(layer(xt) * tf.range(32, dtype=tf.float32))
    grads = tape.gradient(loss, [xt, *layer.trainable_weights])
    for g in grads:
        assert g is not None and np.isfinite(g).all() and float(tf.reduce_max(tf.abs(g))) > 0
    # d signature / d x = 1/HW everywhere, minus 1 at the channel's minimum: per image and
    # channel the gradient takes one value on every pixel but the argmin.
    gx = np.asarray(grads[0]).reshape(3, 24, 32)
    argmin = x.reshape(3, 24, 32).argmin(axis=1)
    for b in range(3):
        for c in range(32):
            g = gx[b, :, c]
            others = np.delete(g, argmin[b, c])
            np.testing.assert_allclose(others, others[0], rtol=1e-5, atol=1e-9)
            np.testing.assert_allclose(g[argmin[b, c]], others[0] * (1 - 24), rtol=1e-4, atol=1e-9)


def test_serialisation_round_trip(x, tmp_path):
    inputs = keras.Input((6, 4, 32))
    model = keras.Model(inputs, ForegroundChannelAttention(reduction=4, out_channels=8, name="fca")(inputs))
    randomise(model.get_layer("fca"), 4)
    path = tmp_path / "fca.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
    config = model.get_layer("fca").get_config()
    assert {k: config[k] for k in ("reduction", "out_channels", "use_bias")} == {
        "reduction": 4, "out_channels": 8, "use_bias": True}


@pytest.mark.parametrize("kwargs,match", [
    ({"reduction": 0}, "reduction"),
    ({"reduction": 2.5}, "reduction"),
    ({"out_channels": -1}, "out_channels"),
    ({"use_bias": "yes"}, "use_bias"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForegroundChannelAttention(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"channels C=8 must be >= reduction=16"):
        ForegroundChannelAttention()(np.zeros((1, 2, 2, 8), "float32"))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        ForegroundChannelAttention(reduction=2)(np.zeros((1, 2, 8), "float32"))
