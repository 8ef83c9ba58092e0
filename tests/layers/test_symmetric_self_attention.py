"""SymmetricSelfAttention (CCAN Remark 2, Q = Q') against a direct NumPy implementation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ccan_reference as ref
from tfreid.layers import CrossCorrelatedAttention, SymmetricSelfAttention

B, M, N, C = 2, 4, 2, 16


@pytest.fixture
def x():
    return ref.random_map((B, M, N, C))


def test_matches_numpy(x):
    layer = SymmetricSelfAttention(return_attention=True)
    layer(x)
    w = ref.set_random(layer, 1)
    assert w["alpha_kernel"].shape == (2 * M * N, M * N) and w["g_kernel"].shape == (C, C // 8)
    z, attended = layer(x)
    want_z, want_map = ref.self_attention(x, *(w[k] for k in ("g_kernel", "f_kernel", "h_kernel", "w_kernel")),
                                          walpha=w["alpha_kernel"])
    np.testing.assert_allclose(np.asarray(z), want_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(attended), want_map, rtol=1e-5, atol=1e-6)


def test_equals_cross_correlated_attention_of_a_map_with_itself(x):
    ss = SymmetricSelfAttention()
    ss(x)
    ref.set_random(ss, 2)
    cc = CrossCorrelatedAttention()
    cc(x, x)
    cc.set_weights(ss.get_weights())
    np.testing.assert_array_equal(np.asarray(ss(x)), np.asarray(cc(x, x)))
    # f and g are separate projections: A' is not symmetric, the concat with A'^T matters.
    w = {v.name: np.asarray(v, np.float64) for v in ss.weights}
    q = x[0].reshape(M * N, C)
    a_prime = ref.relu(q @ w["g_kernel"]) @ ref.relu(q @ w["f_kernel"]).T
    assert np.abs(a_prime - a_prime.T).max() > 1e-2


def test_gradient_matches_central_differences():
    rng = np.random.default_rng(3)
    x = rng.normal(0.5, 1.0, (1, 2, 2, 16))
    layer = SymmetricSelfAttention(dtype="float64")
    layer(x)
    ref.set_random(layer, 4, scale=0.5)
    loss = ref.check_input_gradient(layer, x, rng.normal(size=x.shape))
    # Every kernel (incl. W_alpha) receives a finite, non-zero gradient.
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(loss(tf.constant(x)))
    for var, g in zip(layer.weights, tape.gradient(value, layer.weights)):
        assert g is not None and np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0, var.name


def test_config_and_keras_file_round_trip(x, tmp_path):
    layer = SymmetricSelfAttention(reduction=4, return_attention=True, name="ss")
    model, loaded = ref.saved_and_loaded(layer, x, tmp_path, seed=5)
    assert type(loaded.get_layer("ss")) is SymmetricSelfAttention
    for got, want in zip(loaded(x), model(x)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert layer.compute_output_shape((None, M, N, C)) == ((None, M, N, C), (None, M, N, 1))


def test_fixed_spatial_size_is_enforced(x):
    layer = SymmetricSelfAttention()
    layer(x)
    with pytest.raises(ValueError, match=r"built for M x N = \(4, 2\)"):
        layer(np.zeros((1, 2, 4, C), "float32"))
    with pytest.raises(ValueError, match="static H, W and C"):
        SymmetricSelfAttention()(keras.Input((None, None, C)))
