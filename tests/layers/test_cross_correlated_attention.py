"""CrossCorrelatedAttention (CCAN Eq. 1-3) against a direct NumPy implementation of the paper."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ccan_reference import set_random
from tfreid.layers import CrossCorrelatedAttention

B, M, N, C, C_KEY = 2, 3, 2, 16, 24
K = C // 8


def relu(x):
    return np.maximum(x, 0.0)


def np_cca(query, key, wg, wf, wh, walpha, ww):
    """CCAN Sec. 3.1 written out per image and per position, float64.

    q_i = Q(m, n, :) with i = m * N + n; Eq. 1: A = phi([A', A'^T] W_alpha), A' = g(q) f(q')^T;
    Eq. 2: y_i = 1/MN sum_j A_ij phi(h(q_j)); Eq. 3: z_i = phi(y_i W_w) + q_i.
    Returns z [B, M, N, C] and the column means of A [B, M, N, 1].
    """
    b_, m_, n_, c_ = query.shape
    p = m_ * n_
    zs, maps = [], []
    for b in range(b_):
        q = query[b].reshape(p, c_).astype(np.float64)
        qk = key[b].reshape(p, -1).astype(np.float64)
        g, f, h = relu(q @ wg), relu(qk @ wf), relu(q @ wh)
        a_prime = np.array([[g[i] @ f[j] for j in range(p)] for i in range(p)])
        a = relu(np.concatenate([a_prime, a_prime.T], axis=1) @ walpha)
        z = np.zeros_like(q)
        for i in range(p):
            y_i = sum(a[i, j] * h[j] for j in range(p)) / p
            z[i] = relu(y_i @ ww) + q[i]
        zs.append(z.reshape(m_, n_, c_))
        maps.append(a.mean(axis=0).reshape(m_, n_, 1))
    return np.stack(zs), np.stack(maps)


@pytest.fixture
def inputs():
    rng = np.random.default_rng(0)
    # Non-negative like the ReLU feature maps CCAN applies it to, plus negative entries.
    query = rng.normal(0.5, 1.0, (B, M, N, C)).astype("float32")
    key = rng.normal(0.5, 1.0, (B, M, N, C_KEY)).astype("float32")
    return query, key


def test_matches_numpy_with_set_random(inputs):
    query, key = inputs
    layer = CrossCorrelatedAttention(return_attention=True)
    layer(query, key)
    w = set_random(layer, 1)
    assert {k: v.shape for k, v in w.items()} == {
        "g_kernel": (C, K), "f_kernel": (C_KEY, K), "h_kernel": (C, K),
        "alpha_kernel": (2 * M * N, M * N), "w_kernel": (K, C)}
    z, attended = layer(query, key)
    want_z, want_map = np_cca(query, key, w["g_kernel"], w["f_kernel"], w["h_kernel"],
                              w["alpha_kernel"], w["w_kernel"])
    np.testing.assert_allclose(np.asarray(z), want_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(attended), want_map, rtol=1e-5, atol=1e-6)
    # The attention path is not a no-op: z differs from the residual q.
    assert np.abs(want_z - query).max() > 0.1


def test_key_matters_and_order_matters(inputs):
    query, key = inputs
    layer = CrossCorrelatedAttention()
    layer(query, key)
    set_random(layer, 2)
    z = np.asarray(layer(query, key))
    other_key = np.asarray(layer(query, key[::-1]))
    assert np.abs(z - other_key).max() > 1e-3


def test_symmetric_initialisation_gives_symmetrised_correlation(inputs):
    query, key = inputs
    layer = CrossCorrelatedAttention(return_attention=True)
    z, attended = layer(query, key)
    p = M * N
    walpha = np.asarray(layer.alpha_kernel)
    np.testing.assert_array_equal(walpha, np.concatenate([np.eye(p), np.eye(p)]) / 2)
    w = {v.name: np.asarray(v, np.float64) for v in layer.weights}
    want_z, want_map = np_cca(query, key, w["g_kernel"], w["f_kernel"], w["h_kernel"], walpha, w["w_kernel"])
    np.testing.assert_allclose(np.asarray(z), want_z, rtol=1e-5, atol=1e-5)
    # With W_alpha = [I; I] / 2, A = (A' + A'^T) / 2: column means = mean of row and column sums.
    q = query.reshape(B, p, C).astype(np.float64)
    g, f = relu(q @ w["g_kernel"]), relu(key.reshape(B, p, C_KEY) @ w["f_kernel"])
    a_prime = np.einsum("bik,bjk->bij", g, f)
    sym = (a_prime.mean(axis=1) + a_prime.mean(axis=2)) / 2
    np.testing.assert_allclose(np.asarray(attended).reshape(B, p), sym, rtol=1e-5)


def test_default_initialisation_starts_near_identity():
    """W_w starts at Glorot / 20: the attention term is a small but non-zero part of z
    (Glorot-sized W_w makes it several times larger than q, see near_identity_initializer)."""
    keras.utils.set_random_seed(0)
    q = np.maximum(np.random.default_rng(0).normal(size=(2, 8, 4, 256)), 0).astype("float32")
    layer = CrossCorrelatedAttention()
    z = np.asarray(layer(q, q))
    ratio = np.linalg.norm(z - q) / np.linalg.norm(q)
    assert 0.02 < ratio < 0.5, ratio
    k = 256 // 8
    limit = np.sqrt(6.0 / (k + 256)) / 20  # Glorot-uniform bound / 20
    w = np.asarray(layer.w_kernel)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.8 * limit
    glorot = CrossCorrelatedAttention(output_initializer="glorot_uniform")
    ratio_glorot = np.linalg.norm(np.asarray(glorot(q, q)) - q) / np.linalg.norm(q)
    assert ratio_glorot > 1.0, ratio_glorot


def test_gradients_match_central_differences():
    """float64 layer on a 2x2 map: tape gradients w.r.t. both inputs and every kernel."""
    rng = np.random.default_rng(3)
    query = rng.normal(0.5, 1.0, (1, 2, 2, 8))
    key = rng.normal(0.5, 1.0, (1, 2, 2, 8))
    layer = CrossCorrelatedAttention(dtype="float64")
    layer(query, key)
    set_random(layer, 4, scale=0.5)
    probe = rng.normal(size=(1, 2, 2, 8))  # loss = <z, probe>, per image of a batch
    loss = lambda q, k: tf.reduce_sum(layer(q, k) * probe, axis=(1, 2, 3))
    q_t, k_t = tf.constant(query), tf.constant(key)
    with tf.GradientTape() as tape:
        tape.watch([q_t, k_t])
        value = tf.reduce_sum(loss(q_t, k_t))
    grads = tape.gradient(value, [q_t, k_t, *layer.weights])
    assert all(g is not None and np.isfinite(np.asarray(g)).all() for g in grads)
    eps = 1e-6

    def input_numeric(x, which):
        # Every +-eps perturbation of one input as one batch: a single layer call.
        moved = np.repeat(x, 2 * x.size, axis=0)
        for n, idx in enumerate(np.ndindex(x.shape[1:])):
            moved[(2 * n, *idx)] += eps
            moved[(2 * n + 1, *idx)] -= eps
        other = np.repeat(key if which == "query" else query, 2 * x.size, axis=0)
        out = np.asarray(loss(moved, other) if which == "query" else loss(other, moved))
        return ((out[0::2] - out[1::2]) / (2 * eps)).reshape(x.shape)

    np.testing.assert_allclose(np.asarray(grads[0]), input_numeric(query, "query"), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(grads[1]), input_numeric(key, "key"), rtol=1e-5, atol=1e-7)
    for var, grad in zip(layer.weights, grads[2:]):
        base = np.asarray(var).copy()
        flat = rng.choice(base.size, size=min(base.size, 6), replace=False)  # a sample of entries
        for idx in (np.unravel_index(i, base.shape) for i in flat):
            out = []
            for sign in (1, -1):
                moved = base.copy()
                moved[idx] += sign * eps
                var.assign(moved)
                out.append(float(loss(query, key)[0]))
            var.assign(base)
            np.testing.assert_allclose(float(np.asarray(grad)[idx]), (out[0] - out[1]) / (2 * eps),
                                       rtol=1e-5, atol=1e-7, err_msg=var.name)


def test_config_round_trip_and_keras_file(inputs, tmp_path):
    query, key = inputs
    layer = CrossCorrelatedAttention(reduction=4, return_attention=True, name="cc",
                                     kernel_initializer="he_normal")
    config = layer.get_config()
    assert config["reduction"] == 4 and config["return_attention"] is True
    assert config["alpha_initializer"] == "symmetric"
    clone = CrossCorrelatedAttention.from_config(config)
    assert clone.get_config() == config

    q_in, k_in = keras.Input((M, N, C)), keras.Input((M, N, C_KEY))
    model = keras.Model([q_in, k_in], layer(q_in, k_in))
    set_random(layer, 5)
    path = tmp_path / "cc.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for got, want in zip(loaded([query, key]), model([query, key])):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert type(loaded.get_layer("cc")) is CrossCorrelatedAttention


def test_other_initialiser_for_alpha_serialises():
    layer = CrossCorrelatedAttention(alpha_initializer="zeros")
    layer(np.ones((1, 2, 2, 8), "float32"), np.ones((1, 2, 2, 8), "float32"))
    assert not np.asarray(layer.alpha_kernel).any()
    clone = CrossCorrelatedAttention.from_config(layer.get_config())
    assert isinstance(clone.alpha_initializer, keras.initializers.Zeros)


def test_mixed_precision_stays_close_and_finite(inputs):
    query, key = inputs
    ref = CrossCorrelatedAttention(return_attention=True)
    want = ref(query * 3, key * 3)
    half = CrossCorrelatedAttention(return_attention=True, dtype="mixed_float16")
    half(query, key)
    half.set_weights(ref.get_weights())
    z, attended = half(query * 3, key * 3)
    assert z.dtype == "float16" and attended.dtype == "float32"
    assert np.isfinite(np.asarray(z, np.float32)).all()
    np.testing.assert_allclose(np.asarray(z, np.float32), np.asarray(want[0]), rtol=1e-2, atol=2e-2)
    np.testing.assert_allclose(np.asarray(attended), np.asarray(want[1]), rtol=2e-2)


def test_bad_arguments_and_shapes_raise_value_error():
    q = np.zeros((1, 4, 2, 16), "float32")
    with pytest.raises(ValueError, match="reduction=0"):
        CrossCorrelatedAttention(reduction=0)
    with pytest.raises(ValueError, match="return_attention"):
        CrossCorrelatedAttention(return_attention="yes")
    with pytest.raises(ValueError, match="channels C=16 must be >= reduction=32"):
        CrossCorrelatedAttention(reduction=32)(q, q)
    with pytest.raises(ValueError, match="same spatial size"):
        CrossCorrelatedAttention()(q, np.zeros((1, 2, 4, 16), "float32"))
    with pytest.raises(ValueError, match="static H, W and C"):
        CrossCorrelatedAttention()(keras.Input((None, 2, 16)), keras.Input((None, 2, 16)))
    layer = CrossCorrelatedAttention()
    layer(q, q)
    with pytest.raises(ValueError, match=r"built for M x N = \(4, 2\).*spatial size \(2, 2\)"):
        layer(q[:, :2], q[:, :2])
