"""SymmetricSelfAttention (CCAN Remark 2, Q = Q') against a direct NumPy implementation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.layers import CrossCorrelatedAttention, SymmetricSelfAttention

B, M, N, C = 2, 4, 2, 16


def relu(x):
    return np.maximum(x, 0.0)


def np_ss(x, wg, wf, wh, walpha, ww):
    """Eq. 1-3 with q = q' (independent W_f, W_g), per position; z and column means of A."""
    b_, m_, n_, c_ = x.shape
    p = m_ * n_
    zs, maps = [], []
    for b in range(b_):
        q = x[b].reshape(p, c_).astype(np.float64)
        g, f, h = relu(q @ wg), relu(q @ wf), relu(q @ wh)
        a_prime = np.empty((p, p))
        for i in range(p):
            for j in range(p):
                a_prime[i, j] = g[i] @ f[j]
        a = relu(np.hstack([a_prime, a_prime.T]) @ walpha)
        y = np.stack([sum(a[i, j] * h[j] for j in range(p)) / p for i in range(p)])
        zs.append((relu(y @ ww) + q).reshape(m_, n_, c_))
        maps.append(a.mean(axis=0).reshape(m_, n_, 1))
    return np.stack(zs), np.stack(maps)


def set_random(layer, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    values = {w.name: rng.normal(0.0, scale, tuple(w.shape)) for w in layer.weights}
    layer.set_weights([values[w.name] for w in layer.weights])
    return values


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(0.5, 1.0, (B, M, N, C)).astype("float32")


def test_matches_numpy(x):
    layer = SymmetricSelfAttention(return_attention=True)
    layer(x)
    w = set_random(layer, 1)
    assert w["alpha_kernel"].shape == (2 * M * N, M * N) and w["g_kernel"].shape == (C, C // 8)
    z, attended = layer(x)
    want_z, want_map = np_ss(x, *(w[k] for k in ("g_kernel", "f_kernel", "h_kernel", "alpha_kernel", "w_kernel")))
    np.testing.assert_allclose(np.asarray(z), want_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(attended), want_map, rtol=1e-5, atol=1e-6)


def test_equals_cross_correlated_attention_of_a_map_with_itself(x):
    ss = SymmetricSelfAttention()
    ss(x)
    set_random(ss, 2)
    cc = CrossCorrelatedAttention()
    cc(x, x)
    cc.set_weights(ss.get_weights())
    np.testing.assert_array_equal(np.asarray(ss(x)), np.asarray(cc(x, x)))
    # f and g are separate projections: A' is not symmetric, the concat with A'^T matters.
    w = {v.name: np.asarray(v, np.float64) for v in ss.weights}
    q = x[0].reshape(M * N, C)
    a_prime = relu(q @ w["g_kernel"]) @ relu(q @ w["f_kernel"]).T
    assert np.abs(a_prime - a_prime.T).max() > 1e-2


def test_gradient_matches_central_differences():
    rng = np.random.default_rng(3)
    x = rng.normal(0.5, 1.0, (1, 2, 2, 16))
    layer = SymmetricSelfAttention(dtype="float64")
    layer(x)
    set_random(layer, 4, scale=0.5)
    probe = rng.normal(size=x.shape)
    loss = lambda v: tf.reduce_sum(layer(v) * probe, axis=(1, 2, 3))
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        value = tf.reduce_sum(loss(x_t))
    grad = np.asarray(tape.gradient(value, x_t))
    eps = 1e-6
    moved = np.repeat(x, 2 * x.size, axis=0)  # all +-eps perturbations in one batch
    for n, idx in enumerate(np.ndindex(x.shape[1:])):
        moved[(2 * n, *idx)] += eps
        moved[(2 * n + 1, *idx)] -= eps
    out = np.asarray(loss(moved))
    np.testing.assert_allclose(grad, ((out[0::2] - out[1::2]) / (2 * eps)).reshape(x.shape), rtol=1e-5, atol=1e-7)
    # Every kernel (incl. W_alpha) receives a finite, non-zero gradient.
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(loss(x_t))
    for var, g in zip(layer.weights, tape.gradient(value, layer.weights)):
        assert g is not None and np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0, var.name


def test_config_and_keras_file_round_trip(x, tmp_path):
    layer = SymmetricSelfAttention(reduction=4, return_attention=True, name="ss")
    config = layer.get_config()
    assert SymmetricSelfAttention.from_config(config).get_config() == config
    inp = keras.Input((M, N, C))
    model = keras.Model(inp, layer(inp))
    set_random(layer, 5)
    path = tmp_path / "ss.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
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
