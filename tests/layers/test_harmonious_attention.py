"""HarmoniousAttention: soft + hard attention from one input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.layers import HardRegionAttention, HarmoniousAttention, SoftAttention

STRIPES = np.tanh(np.array([[0.0, -0.75], [0.0, -0.25], [0.0, 0.25], [0.0, 0.75]]))


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(3, 8, 6, 32)).astype("float32")


def _randomise(layer, seed):
    """Random weights and BN statistics; positive BN offsets keep the ReLUs partly active."""
    rng = np.random.default_rng(seed)
    draw = {
        "moving_variance": lambda s: rng.uniform(0.5, 2.0, s),
        "gamma": lambda s: rng.uniform(0.5, 1.5, s),
        "beta": lambda s: rng.uniform(0.2, 0.6, s),
        "moving_mean": lambda s: rng.normal(0.0, 0.1, s),
    }
    layer.set_weights([draw.get(w.name, lambda s: rng.normal(0.0, 0.3, s))(w.shape) for w in layer.weights])


def test_outputs_soft_map_and_stripe_theta_at_init(x):
    ha = HarmoniousAttention(num_regions=4, reduction=8)
    soft, theta = ha(x, training=True)
    assert tuple(soft.shape) == (3, 8, 6, 32) and tuple(theta.shape) == (3, 4, 2)
    soft = np.asarray(soft)
    assert soft.min() >= 0.5 and soft.max() < 1.0
    # Zero Dense kernel: every image gets the same four horizontal stripes, top to bottom.
    np.testing.assert_allclose(np.asarray(theta), np.broadcast_to(STRIPES, (3, 4, 2)), atol=1e-6)


def test_soft_part_equals_soft_attention_and_hard_part_equals_numpy(x):
    ha = HarmoniousAttention(num_regions=3, reduction=8)
    ha.build(x.shape)
    _randomise(ha, 1)
    soft, theta = ha(x, training=False)

    ref = SoftAttention(reduction=8)
    ref.build(x.shape)
    ref.set_weights(ha.soft.get_weights())
    np.testing.assert_allclose(np.asarray(soft), np.asarray(ref(x, training=False)), rtol=1e-6)

    kernel, bias = (np.asarray(v, "float64") for v in ha.hard.fc.weights)
    want = np.tanh(x.mean(axis=(1, 2)) @ kernel + bias).reshape(3, 3, 2)  # (tx, ty) per region
    np.testing.assert_allclose(np.asarray(theta), want, rtol=1e-5, atol=1e-6)
    assert np.abs(want - want[:1]).max() > 1e-3  # input-dependent once the kernel is non-zero


def test_both_parts_are_learned_from_the_same_input(x):
    ha = HarmoniousAttention(reduction=8)
    ha.build(x.shape)
    _randomise(ha, 2)
    xt = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        soft, theta = ha(xt, training=False)
        ls, lt = tf.reduce_sum(soft), tf.reduce_sum(theta)
    assert float(tf.reduce_max(tf.abs(tape.gradient(ls, xt)))) > 0
    assert float(tf.reduce_max(tf.abs(tape.gradient(lt, xt)))) > 0
    assert isinstance(ha.hard, HardRegionAttention) and isinstance(ha.soft, SoftAttention)


def test_compute_output_shape_and_config_round_trip(x):
    ha = HarmoniousAttention(num_regions=5, reduction=4, use_bias=True, name="ha")
    soft_shape, theta_shape = ha.compute_output_shape((None, 8, 6, 32))
    assert tuple(soft_shape) == (None, 8, 6, 32) and tuple(theta_shape) == (None, 5, 2)
    config = ha.get_config()
    clone = HarmoniousAttention.from_config(config)
    assert clone.get_config() == config
    assert (clone.num_regions, clone.reduction, clone.use_bias) == (5, 4, True)
    ha(x)
    clone(x)
    # use_bias adds one bias per conv (5 convs: 1 + 1 + 32/4 + 32 + 32 channels).
    n = sum(int(np.prod(w.shape)) for w in ha.trainable_weights)
    no_bias = HarmoniousAttention(num_regions=5, reduction=4)
    no_bias(x)
    m = sum(int(np.prod(w.shape)) for w in no_bias.trainable_weights)
    assert n - m == 1 + 1 + 8 + 32 + 32


def test_keras_safe_mode_round_trip(tmp_path, x):
    inp = keras.Input(x.shape[1:])
    soft, theta = HarmoniousAttention(reduction=8, name="ha1")(inp)
    model = keras.Model(inp, {"soft": soft, "theta": theta})
    _randomise(model.get_layer("ha1"), 3)
    model.save(tmp_path / "ha.keras")
    loaded = keras.saving.load_model(tmp_path / "ha.keras", safe_mode=True)
    a, b = model(x, training=False), loaded(x, training=False)
    for key in ("soft", "theta"):
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_mixed_precision(x):
    soft, theta = HarmoniousAttention(reduction=8, dtype="mixed_float16")(x)
    assert keras.backend.standardize_dtype(soft.dtype) == "float16"
    np.testing.assert_allclose(np.asarray(theta, "float32")[0], STRIPES, atol=1e-3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_regions"):
        HarmoniousAttention(num_regions=0)
    with pytest.raises(ValueError, match="reduction"):
        HarmoniousAttention(reduction=-1)
    with pytest.raises(ValueError, match="received shape"):
        HarmoniousAttention()(np.zeros((2, 32), "float32"))
