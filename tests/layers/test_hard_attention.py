"""HardRegionAttention: stripe initialisation, range, gradients (analytic and through the
sampler), mixed precision, XLA and serialization."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.layers.hard_attention import HardRegionAttention, band_matrix, stripe_bias
from tfreid.layers.region_sampler import RegionSampler


def test_stripe_bias_values():
    np.testing.assert_allclose(stripe_bias(4), [0, -0.75, 0, -0.25, 0, 0.25, 0, 0.75])
    np.testing.assert_allclose(stripe_bias(1), [0, 0])
    np.testing.assert_allclose(stripe_bias(3), [0, -2 / 3, 0, 0, 0, 2 / 3], atol=1e-7)


def test_init_output_is_tanh_of_stripe_bias_for_any_input():
    layer = HardRegionAttention(num_regions=4)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(2, 10, 4, 16)), 100.0 * rng.normal(size=(1, 10, 4, 16))])
    theta = np.asarray(layer(x.astype("float32")))
    ty = np.tanh([-0.75, -0.25, 0.25, 0.75])
    want = np.stack([np.zeros(4), ty], axis=1)
    assert theta.shape == (3, 4, 2)
    for sample in theta:
        np.testing.assert_allclose(sample, want, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(layer.fc.kernel.numpy(), 0.0)


def test_init_regions_are_horizontal_stripes():
    # tanh(ty) keeps the four quarter-height stripes ordered top to bottom and full width.
    x = np.random.default_rng(1).normal(size=(1, 16, 8, 2)).astype("float32")
    theta = HardRegionAttention(num_regions=4)(x)
    rows = np.arange(16, dtype="float32").reshape(1, 16, 1, 1) * np.ones((1, 16, 8, 2), "float32")
    sampled = np.asarray(RegionSampler((4, 8))([rows, theta]))[0, :, :, :, 0]
    centres = sampled.mean(axis=(1, 2))
    assert np.all(np.diff(centres) > 0)
    np.testing.assert_allclose(sampled.std(axis=2), 0.0, atol=1e-5)  # constant along the width


def test_output_in_open_interval_and_depends_on_input():
    layer = HardRegionAttention(num_regions=5)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(6, 5, 3, 8)).astype("float32")
    layer.build(x.shape)
    layer.fc.kernel.assign(rng.normal(scale=2.0, size=(8, 10)).astype("float32"))
    theta = np.asarray(layer(x))
    assert theta.shape == (6, 5, 2)
    assert np.all(np.abs(theta) < 1.0)
    assert theta.std(axis=0).min() > 1e-3  # differs between samples once the kernel is non-zero
    logits = x.mean(axis=(1, 2)) @ layer.fc.kernel.numpy() + layer.fc.bias.numpy()
    np.testing.assert_allclose(theta, np.tanh(logits).reshape(6, 5, 2), atol=1e-6)


def test_gradient_reaches_dense_and_matches_analytic():
    layer = HardRegionAttention(num_regions=4)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 6, 4, 5)).astype("float32")
    upstream = rng.normal(size=(3, 4, 2)).astype("float32")
    with tf.GradientTape() as tape:
        theta = layer(x)
        loss = tf.reduce_sum(theta * upstream)
    grad_kernel, grad_bias = tape.gradient(loss, [layer.fc.kernel, layer.fc.bias])
    d_logits = (upstream * (1.0 - np.asarray(theta) ** 2)).reshape(3, 8)
    pooled = x.mean(axis=(1, 2))
    np.testing.assert_allclose(grad_bias.numpy(), d_logits.sum(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_kernel.numpy(), pooled.T @ d_logits, rtol=1e-5, atol=1e-6)
    assert np.abs(grad_kernel.numpy()).max() > 1e-3


def test_gradient_through_sampler_matches_finite_differences():
    # float64 end to end: d loss / d fc.bias through tanh -> RegionSampler.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 12, 6, 3))
    weights = rng.normal(size=(2, 4, 3, 6, 3))
    attention = HardRegionAttention(num_regions=4, dtype="float64")
    sampler = RegionSampler((3, 6), dtype="float64")
    attention.build(x.shape)
    bias = attention.fc.bias.numpy() + rng.uniform(-0.05, 0.05, size=8)  # off the pixel-grid kinks
    attention.fc.bias.assign(bias)

    def loss_at(b):
        attention.fc.bias.assign(b)
        return float(np.sum(np.asarray(sampler([x, attention(x)])) * weights))

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(sampler([x, attention(x)]) * weights)
    grad = tape.gradient(loss, attention.fc.bias).numpy()
    eps = 1e-6
    fd = np.array([(loss_at(bias + eps * e) - loss_at(bias - eps * e)) / (2 * eps) for e in np.eye(8)])
    attention.fc.bias.assign(bias)
    assert np.abs(fd).max() > 0.1
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


def test_xla_and_mixed_precision():
    x = np.random.default_rng(5).normal(size=(2, 8, 4, 6)).astype("float32")
    layer = HardRegionAttention(num_regions=4)
    layer.build(x.shape)
    layer.fc.kernel.assign(np.random.default_rng(6).normal(size=(6, 8)).astype("float32"))
    eager = np.asarray(layer(x))
    compiled = tf.function(lambda a: layer(a), jit_compile=True)
    np.testing.assert_allclose(compiled(x).numpy(), eager, atol=1e-6)
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        mixed = HardRegionAttention(num_regions=4)
        out = mixed(tf.cast(x, "float16"))
        mixed.fc.kernel.assign(layer.fc.kernel.numpy())
        out = mixed(tf.cast(x, "float16"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.fc.kernel.dtype == "float32" and out.dtype == tf.float16
    np.testing.assert_allclose(out.numpy().astype("float32"), eager, atol=5e-3)


def test_config_and_keras_save_load_safe_mode(tmp_path):
    layer = HardRegionAttention(num_regions=3, name="hard")
    assert layer.get_config()["num_regions"] == 3
    clone = HardRegionAttention.from_config(layer.get_config())
    assert clone.num_regions == 3 and clone.name == "hard"

    inputs = keras.Input((12, 6, 4))
    theta = HardRegionAttention(num_regions=3, name="hard")(inputs)
    sampled = RegionSampler((3, 6), name="sampler")([inputs, theta])
    model = keras.Model(inputs, {"theta": theta, "sampled": sampled})
    model.get_layer("hard").fc.kernel.assign(np.random.default_rng(7).normal(size=(4, 6)).astype("float32"))
    assert [w.path for w in model.get_layer("hard").weights] == ["hard/fc/kernel", "hard/fc/bias"]
    path = os.fspath(tmp_path / "hard.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(8).normal(size=(2, 12, 6, 4)).astype("float32")
    want, got = model(x), loaded(x)
    for key in ("theta", "sampled"):
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))
    # The loaded weights (not the stripe initialisation) are in effect.
    assert np.abs(np.asarray(got["theta"])[0] - np.asarray(got["theta"])[1]).max() > 1e-4


def test_compute_output_shape():
    assert HardRegionAttention(num_regions=6).compute_output_shape((None, 10, 4, 32)) == (None, 6, 2)


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "4"])
def test_bad_num_regions(value):
    with pytest.raises(ValueError, match=f"num_regions={value!r}"):
        HardRegionAttention(num_regions=value)


def test_bad_input_rank():
    with pytest.raises(ValueError, match=r"\[B, H, W, C\].*\(2, 16\)"):
        HardRegionAttention()(np.zeros((2, 16), "float32"))


# ----------------------------------------------------------------------------- localisation options
def test_stripe_pooling_matches_numpy():
    """pooling="stripes": the Dense reads the means of 8 horizontal bands (band-major)."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 16, 4, 5)).astype("float32")
    layer = HardRegionAttention(num_regions=4, pooling="stripes", stripes=8)
    layer.build(x.shape)
    assert tuple(layer.fc.kernel.shape) == (8 * 5, 8)
    kernel = rng.normal(scale=0.3, size=(40, 8)).astype("float32")
    layer.fc.kernel.assign(kernel)
    bands = x.reshape(3, 8, 2, 4, 5).mean(axis=(2, 3)).reshape(3, 40)  # 2-row bands
    want = np.tanh(bands @ kernel + stripe_bias(4)).reshape(3, 4, 2)
    np.testing.assert_allclose(np.asarray(layer(x)), want, rtol=1e-5, atol=1e-6)
    # unlike the global average, the bands see where a pattern sits vertically
    shifted = np.roll(x, 4, axis=1)
    assert np.abs(np.asarray(layer(shifted)) - np.asarray(layer(x))).max() > 1e-2
    plain = HardRegionAttention(num_regions=4)
    plain.build(x.shape)
    plain.fc.kernel.assign(rng.normal(size=(5, 8)).astype("float32"))
    np.testing.assert_allclose(np.asarray(plain(shifted)), np.asarray(plain(x)), atol=1e-6)


def test_center_normalises_the_pooled_input_with_batch_statistics():
    rng = np.random.default_rng(10)
    x = (rng.normal(size=(6, 5, 3, 4)) + 3.0).astype("float32")  # all-positive-like offsets
    layer = HardRegionAttention(num_regions=2, center=True)
    layer.build(x.shape)
    kernel = rng.normal(size=(4, 4)).astype("float32")
    layer.fc.kernel.assign(kernel)
    pooled = x.mean(axis=(1, 2)).astype("float64")
    normed = (pooled - pooled.mean(0)) / np.sqrt(pooled.var(0) + 1e-3)  # Keras BN epsilon
    want = np.tanh(normed @ kernel + stripe_bias(2)).reshape(6, 2, 2)
    np.testing.assert_allclose(np.asarray(layer(x, training=True)), want, rtol=1e-4, atol=1e-5)
    assert [w.path.split("/", 1)[1] for w in layer.non_trainable_weights] == [
        "center/moving_mean", "center/moving_variance"]


def test_frozen_theta_stays_at_the_stripes():
    x = np.random.default_rng(11).normal(size=(4, 8, 4, 6)).astype("float32")
    layer = HardRegionAttention(num_regions=4, frozen=True)
    layer.build(x.shape)
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 2
    stripes = np.stack([np.zeros(4), np.tanh([-0.75, -0.25, 0.25, 0.75])], axis=1)
    np.testing.assert_allclose(np.asarray(layer(x)), np.broadcast_to(stripes, (4, 4, 2)), rtol=1e-6)


def test_options_round_trip_and_errors():
    layer = HardRegionAttention(num_regions=3, pooling="stripes", stripes=4, center=True, frozen=True)
    clone = HardRegionAttention.from_config(layer.get_config())
    assert (clone.pooling, clone.stripes, clone.center, clone.frozen) == ("stripes", 4, True, True)
    assert not clone.fc.trainable
    with pytest.raises(ValueError, match="pooling='max'"):
        HardRegionAttention(pooling="max")
    with pytest.raises(ValueError, match="stripes=0"):
        HardRegionAttention(pooling="stripes", stripes=0)
    with pytest.raises(ValueError, match="frozen=1"):
        HardRegionAttention(frozen=1)
    with pytest.raises(ValueError, match="static H, W"):
        HardRegionAttention(pooling="stripes").compute_output_shape((None, None, 4, 8))


def test_band_matrix_uses_pytorch_adaptive_pooling_edges():
    # H=5, S=3: torch.nn.AdaptiveAvgPool1d(3) averages rows 0-1, 1-3, 3-4
    want = np.array([[1 / 2, 1 / 2, 0, 0, 0], [0, 1 / 3, 1 / 3, 1 / 3, 0], [0, 0, 0, 1 / 2, 1 / 2]])
    np.testing.assert_allclose(band_matrix(5, 3), want, rtol=1e-6)
    np.testing.assert_allclose(band_matrix(20, 8).sum(axis=1), 1.0, rtol=1e-6)


def test_stripe_pooling_runs_in_a_graph_with_an_unknown_batch():
    # HA-CNN's level-1 maps are 40x16; Keras's AdaptiveAveragePooling2D failed on them here.
    layer = HardRegionAttention(num_regions=4, pooling="stripes", stripes=8)
    x = tf.random.stateless_normal((2, 40, 16, 6), seed=(1, 2))
    layer.build(x.shape)
    layer.fc.kernel.assign(tf.random.stateless_normal(layer.fc.kernel.shape, seed=(3, 4)) * 0.1)
    eager = np.asarray(layer(x))
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, 40, 16, 6), tf.float32)])
    np.testing.assert_allclose(np.asarray(fn(x)), eager, rtol=1e-5, atol=1e-6)
    assert np.abs(eager - np.asarray(layer(tf.roll(x, 10, axis=1)))).max() > 1e-3  # bands see position
