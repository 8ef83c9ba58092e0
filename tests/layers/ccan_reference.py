"""Independent NumPy version (float64, per image and per position) of the CCAN-family
self-attention: SymmetricSelfAttention (CCAN Eq. 1-3 with q = q', Remark 2) and the non-local
block (Wang et al.) it becomes without ``[A', A'^T] W_alpha``; written from the papers, not from
the layers' code. Plus the weight randomisation, input and gradient check the tests share."""

import keras
import numpy as np
import tensorflow as tf


def relu(x):
    return np.maximum(x, 0.0)


def self_attention(x, wg, wf, wh, ww, walpha=None, pairwise="dot", activation="relu"):
    """``z`` [B, M, N, C] and the column means of ``A`` [B, M, N, 1] for each image ``q = q'`` of x.

    ``g, f, h = act(q W_g), act(q W_f), act(q W_h)`` and ``A'_ij = g_i . f_j``; then
    - with ``walpha`` (SS, Eq. 1-2): ``A = ReLU([A', A'^T] W_alpha)``, ``y_i = 1/P sum_j A_ij h_j``;
    - without, ``pairwise="dot"``: ``A = A'``, ``y_i = 1/P sum_j A_ij h_j``;
    - without, ``pairwise="embedded_gaussian"``: ``A = softmax_j(A')``, ``y_i = sum_j A_ij h_j``;
    and ``z_i = act(y_i W_w) + q_i`` (Eq. 3).
    """
    act = relu if activation == "relu" else (lambda v: v)
    b_, m_, n_, c_ = x.shape
    p = m_ * n_
    zs, maps = [], []
    for b in range(b_):
        q = x[b].reshape(p, c_).astype(np.float64)
        g, f, h = act(q @ wg), act(q @ wf), act(q @ wh)
        a = np.empty((p, p))
        for i in range(p):
            for j in range(p):
                a[i, j] = g[i] @ f[j]
        norm = p
        if walpha is not None:
            a = relu(np.hstack([a, a.T]) @ walpha)
        elif pairwise == "embedded_gaussian":  # softmax over j of each row, no 1/P
            a = np.exp(a - a.max(axis=1, keepdims=True))
            a, norm = a / a.sum(axis=1, keepdims=True), 1
        y = np.stack([sum(a[i, j] * h[j] for j in range(p)) / norm for i in range(p)])
        zs.append((act(y @ ww) + q).reshape(m_, n_, c_))
        maps.append(a.mean(axis=0).reshape(m_, n_, 1))
    return np.stack(zs), np.stack(maps)


def set_random(layer, seed, scale=0.3):
    """Random values for every kernel (also a non-symmetric W_alpha), returned by name."""
    rng = np.random.default_rng(seed)
    values = {w.name: rng.normal(0.0, scale, tuple(w.shape)) for w in layer.weights}
    layer.set_weights([values[w.name] for w in layer.weights])
    return values


def saved_and_loaded(layer, x, tmp_path, seed):
    """Checks the get_config round trip, then saves a model of `layer` (random weights) and
    loads it back with safe_mode; returns (model, loaded)."""
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    inp = keras.Input(tuple(x.shape[1:]))
    model = keras.Model(inp, layer(inp))
    set_random(layer, seed)
    path = tmp_path / f"{layer.name}.keras"
    model.save(path)
    return model, keras.saving.load_model(path, safe_mode=True)


def random_map(shape, seed=0):
    """Mostly non-negative like the ReLU feature maps CCAN applies attention to, some negative."""
    return np.random.default_rng(seed).normal(0.5, 1.0, shape).astype("float32")


def check_input_gradient(layer, x, probe, eps=1e-6):
    """The tape gradient of ``sum(probe * layer(x))`` w.r.t. a single image ``x`` (float64) equals
    central differences; returns that loss (per batch row) for further checks."""
    assert x.shape[0] == 1
    loss = lambda v: tf.reduce_sum(layer(v) * probe, axis=(1, 2, 3))
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        value = tf.reduce_sum(loss(x_t))
    grad = np.asarray(tape.gradient(value, x_t))
    moved = np.repeat(x, 2 * x.size, axis=0)  # all +-eps perturbations in one batch
    for n, idx in enumerate(np.ndindex(x.shape[1:])):
        moved[(2 * n, *idx)] += eps
        moved[(2 * n + 1, *idx)] -= eps
    out = np.asarray(loss(moved))
    np.testing.assert_allclose(grad, ((out[0::2] - out[1::2]) / (2 * eps)).reshape(x.shape), rtol=1e-5, atol=1e-7)
    return loss
