"""NumPy re-implementation of the ADFL supplementary equations (5)-(14) and Eq. (3), written per
sample in the paper's channel-first ``C x H x W`` layout (the layers work in NHWC), plus the
finite-difference and serialisation helpers the attention-layer tests share."""

import keras
import numpy as np
import tensorflow as tf


def softmax_rows(e):
    e = e - e.max(axis=-1, keepdims=True)
    p = np.exp(e)
    return p / p.sum(axis=-1, keepdims=True)


def chw(x):
    """NHWC batch -> list of C x H x W arrays (the paper's layout)."""
    return [np.transpose(s, (2, 0, 1)) for s in np.asarray(x, np.float64)]


def nhwc(samples):
    return np.stack([np.transpose(s, (1, 2, 0)) for s in samples])


def conv1x1(x, kernel, bias):
    """C x H x W -> C' x H x W with a Keras 1x1 kernel [1, 1, C, C']."""
    c, h, w = x.shape
    out = kernel[0, 0].T @ x.reshape(c, h * w)
    if bias is not None:
        out = out + bias[:, None]
    return out.reshape(-1, h, w)


# ----------------------------------------------------------------------------- Type I
def position(x, wq, bq, wk, bk, wv, bv, alpha):
    """Eq. (5)-(6); returns (outputs NHWC, attention received per position [B, H, W, 1])."""
    outs, maps = [], []
    for i in chw(x):
        c, h, w = i.shape
        k = conv1x1(i, wk, bk).reshape(-1, h * w)  # C' x HW
        q = conv1x1(i, wq, bq).reshape(-1, h * w)
        v = conv1x1(i, wv, bv).reshape(c, h * w)
        a = np.empty((h * w, h * w))
        for j in range(h * w):  # A[j, i] = exp(K_i . Q_j) / sum_i exp(K_i . Q_j)
            a[j] = softmax_rows(np.array([k[:, n] @ q[:, j] for n in range(h * w)]))
        o = alpha * np.stack([v @ a[j] for j in range(h * w)], axis=1) + i.reshape(c, h * w)
        outs.append(o.reshape(c, h, w))
        maps.append(a.mean(axis=0).reshape(1, h, w))
    return nhwc(outs), nhwc(maps)


def channel_self(x, alpha):
    """Eq. (7)-(8)."""
    outs = []
    for i in chw(x):
        c, h, w = i.shape
        flat = i.reshape(c, h * w)
        a = softmax_rows(np.array([[flat[n] @ flat[j] for n in range(c)] for j in range(c)]))
        outs.append((alpha * a @ flat + flat).reshape(c, h, w))
    return nhwc(outs)


def hyper(x, wq, bq, wk, bk, wv, bv, we, be, alpha):
    """Eq. (9) and steps iv-vi; returns (outputs, attention received per position)."""
    outs, maps = [], []
    for i in chw(x):
        c, h, w = i.shape
        k = conv1x1(i, wk, bk).reshape(-1)  # C'HW scalars (channel-major order)
        q = conv1x1(i, wq, bq).reshape(-1)
        v = conv1x1(i, wv, bv).reshape(-1)
        a = softmax_rows(np.outer(q, k))  # A[j, i] = softmax_i(K_i Q_j)
        y = (a @ v).reshape(-1, h, w)
        outs.append(alpha * conv1x1(y, we, be) + i)
        maps.append(a.mean(axis=0).reshape(-1, h, w).sum(axis=0, keepdims=True))
    return nhwc(outs), nhwc(maps)


def batch(x, alpha):
    """Eq. (10)-(11) over the whole batch."""
    samples = chw(x)
    f = np.stack([s.reshape(-1) for s in samples])  # B x CHW
    a = softmax_rows(f @ f.T)
    o = alpha * a @ f + f
    return nhwc([row.reshape(samples[0].shape) for row in o])


# ----------------------------------------------------------------------------- Type II
def spatial_map(i, kernel):
    """A^s (H x W) of Eq. (12) for one C x H x W sample; `kernel` [k, k, 2, 1], same padding."""
    c, h, w = i.shape
    pooled = np.stack([i.mean(axis=0), i.max(axis=0)])  # [Avg(I); Max(I)]
    k = kernel.shape[0]
    pad = np.pad(pooled, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    logits = np.zeros((h, w))
    for r in range(h):
        for s in range(w):
            logits[r, s] = sum(pad[ch, r + di, s + dj] * kernel[di, dj, ch, 0]
                               for ch in range(2) for di in range(k) for dj in range(k))
    return softmax_rows(logits.reshape(1, -1)).reshape(h, w)


def channel_map(i, w1, b1, w2, b2):
    """A^c (C) of Eq. (13): softmax(MLP(AvgPool(I)) + MLP(MaxPool(I)))."""
    def mlp(v):
        return w2.T @ np.maximum(w1.T @ v + b1, 0.0) + b2
    return softmax_rows((mlp(i.mean(axis=(1, 2))) + mlp(i.max(axis=(1, 2))))[None])[0]


def direct_spatial(x, kernel):
    samples = chw(x)
    maps = [spatial_map(i, kernel) for i in samples]
    return nhwc([m[None] * i for m, i in zip(maps, samples)]), nhwc([m[None] for m in maps])


def direct_channel(x, w1, b1, w2, b2):
    return nhwc([channel_map(i, w1, b1, w2, b2)[:, None, None] * i for i in chw(x)])


def direct_hyper(x):
    """Eq. (14); returns (outputs, attention mass per position)."""
    outs, maps = [], []
    for i in chw(x):
        a = softmax_rows(i.reshape(1, -1)).reshape(i.shape)
        outs.append(a * i)
        maps.append(a.sum(axis=0, keepdims=True))
    return nhwc(outs), nhwc(maps)


def multiply(x, kernel, w1, b1, w2, b2):
    """Eq. (3): A^SC = A^c (x) A^s, then O = A^SC (x) I."""
    return nhwc([channel_map(i, w1, b1, w2, b2)[:, None, None] * spatial_map(i, kernel)[None] * i
                 for i in chw(x)])


# ----------------------------------------------------------------------------- helpers
def random_map(shape, seed=0, scale=0.5, dtype="float32"):
    return np.random.default_rng(seed).normal(0.0, scale, shape).astype(dtype)


def built(layer, x, seed=1, alpha=None):
    """`layer` built on `x`, with `randomise`d weights."""
    layer(x)
    randomise(layer, seed, alpha=alpha)
    return layer


def built_under_policy(policy, make, x):
    """``make()`` built on `x` under the global dtype policy `policy` (restored to float32)."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        layer = make()
        layer(x)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return layer


def randomise(layer, seed, scale=0.3, alpha=None):
    """Random weights (and a given non-zero alpha: at 0 the Type I layers are the identity)."""
    rng = np.random.default_rng(seed)
    for var in layer.weights:
        if var.path.endswith("alpha"):
            var.assign(np.asarray(alpha if alpha is not None else rng.uniform(0.5, 1.5), var.dtype))
        else:
            var.assign(rng.normal(0.0, scale, var.shape).astype(var.dtype))


def check_gradients(layer, x, seed=0, eps=1e-6, rtol=1e-5):
    """Directional finite differences (float64) of sum(R * layer(x)) w.r.t. x and every weight."""
    rng = np.random.default_rng(seed)
    x = tf.constant(x, tf.float64)
    probe = tf.constant(rng.normal(size=tuple(layer.compute_output_shape(x.shape))), tf.float64)
    variables = list(layer.trainable_weights)
    assert variables or layer.name, "nothing to differentiate"

    def loss(inputs):
        out = layer(inputs)
        return tf.reduce_sum(probe * (out[0] if isinstance(out, tuple) else out))

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(x)
    grads = tape.gradient(value, [x, *variables])
    assert all(g is not None for g in grads)
    d = rng.normal(size=x.shape)
    numeric = (loss(x + eps * d) - loss(x - eps * d)) / (2 * eps)
    np.testing.assert_allclose(float(tf.reduce_sum(grads[0] * d)), float(numeric), rtol=rtol, atol=1e-8)
    for var, grad in zip(variables, grads[1:]):
        d = rng.normal(size=var.shape)
        saved = var.numpy()
        var.assign(saved + eps * d)
        plus = loss(x)
        var.assign(saved - eps * d)
        minus = loss(x)
        var.assign(saved)
        np.testing.assert_allclose(float(tf.reduce_sum(grad * d)), float((plus - minus) / (2 * eps)),
                                   rtol=rtol, atol=1e-8, err_msg=var.path)
        assert float(tf.reduce_max(tf.abs(grad))) > 0, var.path


def check_serialisation(layer, x, tmp_path):
    """get_config round trip and a `.keras` save/load with safe_mode give identical outputs."""
    want = layer(x)
    clone = type(layer).from_config(layer.get_config())
    clone(x)
    clone.set_weights(layer.get_weights())
    got = clone(x)
    for a, b in zip(keras.tree.flatten(want), keras.tree.flatten(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    inputs = keras.Input(tuple(x.shape[1:]))
    model = keras.Model(inputs, type(layer).from_config(layer.get_config())(inputs))
    model.layers[-1].set_weights(layer.get_weights())
    path = tmp_path / f"{layer.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for a, b in zip(keras.tree.flatten(want), keras.tree.flatten(loaded(x))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)
