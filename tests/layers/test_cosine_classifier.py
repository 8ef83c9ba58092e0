"""CosineClassifier against NumPy: logits, gradients (features, weights, scale), zero vectors,
mixed precision, serialisation and argument errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.layers import CosineClassifier


def np_forward(x, w, s):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=0, keepdims=True)
    return s * xn @ wn, xn, wn


def np_gradients(x, w, s, upstream):
    """d sum(upstream * logits) / d (x, w, s), derived by hand: the gradient of v / |v| is
    (g - u (u . g)) / |v| with u = v / |v|."""
    logits, xn, wn = np_forward(x, w, s)
    g_xn = s * upstream @ wn.T
    g_x = (g_xn - xn * (xn * g_xn).sum(1, keepdims=True)) / np.linalg.norm(x, axis=1, keepdims=True)
    g_wn = s * xn.T @ upstream
    g_w = (g_wn - wn * (wn * g_wn).sum(0, keepdims=True)) / np.linalg.norm(w, axis=0, keepdims=True)
    return g_x, g_w, float((upstream * logits).sum() / s)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 12)), rng.normal(size=(12, 7)), rng.normal(size=(5, 7))


@pytest.mark.parametrize("learn_scale", [False, True])
def test_logits_and_gradients_match_numpy(data, learn_scale):
    x, w, upstream = data
    layer = CosineClassifier(7, scale=8.0, learn_scale=learn_scale, dtype="float64")
    layer.build(x.shape)
    layer.kernel.assign(w)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        logits = layer(xt)
        loss = tf.reduce_sum(logits * upstream)
    want, _, _ = np_forward(x, w, 8.0)
    np.testing.assert_allclose(logits.numpy(), want, rtol=1e-12, atol=1e-12)
    assert np.abs(logits.numpy()).max() <= 8.0
    sources = [xt, layer.kernel] + ([layer.scale_weight] if learn_scale else [])
    grads = [g.numpy() for g in tape.gradient(loss, sources)]
    g_x, g_w, g_s = np_gradients(x, w, 8.0, upstream)
    np.testing.assert_allclose(grads[0], g_x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads[1], g_w, rtol=1e-10, atol=1e-12)
    if learn_scale:
        np.testing.assert_allclose(grads[2], g_s, rtol=1e-10)
        assert [v.name for v in layer.trainable_weights] == ["kernel", "scale"]
    else:
        assert [v.name for v in layer.trainable_weights] == ["kernel"]


def test_logits_ignore_feature_and_weight_norms(data):
    x, w, _ = data
    layer = CosineClassifier(7)
    layer.build(x.shape)
    layer.kernel.assign(w.astype("float32"))
    base = np.asarray(layer(x.astype("float32")))
    scaled = x * np.arange(1, 6)[:, None]
    np.testing.assert_allclose(np.asarray(layer(scaled.astype("float32"))), base, rtol=1e-5, atol=1e-5)
    layer.kernel.assign((w * 3.0).astype("float32"))
    np.testing.assert_allclose(np.asarray(layer(x.astype("float32"))), base, rtol=1e-5, atol=1e-5)


def test_zero_feature_gives_zero_logits_and_finite_gradients():
    layer = CosineClassifier(3)
    x = tf.constant([[0.0, 0.0], [1.0, 0.0]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = layer(x)
        total = tf.reduce_sum(logits)
    grad = tape.gradient(total, x).numpy()
    np.testing.assert_array_equal(logits.numpy()[0], 0.0)
    assert np.isfinite(grad).all()


def test_mixed_precision_and_round_trip(tmp_path):
    x = np.random.default_rng(1).normal(size=(3, 8)).astype("float32")
    inputs = keras.Input((8,))
    model = keras.Model(inputs, CosineClassifier(4, scale=10.0, learn_scale=True, name="cls")(inputs))
    model.save(tmp_path / "cls.keras")
    loaded = keras.saving.load_model(tmp_path / "cls.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
    assert {k: loaded.get_layer("cls").get_config()[k] for k in ("units", "scale", "learn_scale")} == {
        "units": 4, "scale": 10.0, "learn_scale": True}
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        mixed = CosineClassifier(4)
        out = mixed(x)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.kernel.dtype == "float32" and out.dtype == "bfloat16"
    assert CosineClassifier(4).compute_output_shape((None, 8)) == (None, 4)


@pytest.mark.parametrize("kwargs,match", [
    ({"units": 0}, "units"), ({"units": 3, "scale": 0.0}, "scale"), ({"units": 3, "scale": True}, "scale"),
    ({"units": 3, "learn_scale": 1}, "learn_scale"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CosineClassifier(**kwargs)


def test_bad_input_rank():
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        CosineClassifier(3)(np.zeros((2, 4, 4), "float32"))
