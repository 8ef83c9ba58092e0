"""Independent NumPy versions of AANet's attention equations (float64), for the layer tests.

Written from the paper (Sec. 3.2-3.3) with explicit loops / np.interp, not from the layers' code.
"""

import math

import numpy as np

BN_EPS = 1e-5


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def conv_same(x, kernel, stride=1):
    """NHWC convolution, rectangular kernel [kh, kw, cin, cout], TF "same" padding."""
    b, h, w, _ = x.shape
    kh, kw = kernel.shape[:2]
    ho, wo = math.ceil(h / stride), math.ceil(w / stride)
    ph = max((ho - 1) * stride + kh - h, 0)
    pw = max((wo - 1) * stride + kw - w, 0)
    xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    out = np.zeros((b, ho, wo, kernel.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
            out += patch @ kernel[i, j]
    return out


def conv_bn(x, weights, stride=1, relu=True):
    kernel, gamma, beta, mean, var = weights
    y = (conv_same(x, kernel, stride) - mean) / np.sqrt(var + BN_EPS) * gamma + beta
    return np.maximum(y, 0.0) if relu else y


def fca(x, w):
    """Foreground-aware channel attention: w = [k1, b1, k2, b2] (1x1 convs as matrices)."""
    k1, b1, k2, b2 = w
    signature = x.mean(axis=(1, 2)) - x.min(axis=(1, 2))  # GAP - GMinP, [B, C]
    hidden = np.maximum(signature @ k1.reshape(k1.shape[-2:]) + b1, 0.0)
    return sigmoid(hidden @ k2.reshape(k2.shape[-2:]) + b2)[:, None, None, :]


def msa(x, w, kernel_sizes=(1, 3, 5, 7), stride=1, layout="compact"):
    """Multi-scale spatial attention; `w` = the layer's weights in its order (5 per conv-BN).

    literal: each branch expands back to C (conv-BN-ReLU), the branches are summed, then the
    fuse conv-BN. compact: branch b's own 1x1 conv (its slice of the fuse kernel) maps its C/r
    channels to the output, the per-branch results are summed, then BN.
    """
    units = [w[i : i + 5] for i in range(0, len(w), 5)]
    branches, u = [], 0
    for n in kernel_sizes:
        count = (1 if n == 1 else 3) + (layout == "literal")  # reduce, (1xn, nx1,) (expand)
        y = x
        for weights in units[u : u + count]:
            y = conv_bn(y, weights)
        branches.append(y)
        u += count
    kernel, gamma, beta, mean, var = units[u]
    if layout == "literal":
        return sigmoid(conv_bn(sum(branches), units[u], stride=stride, relu=False))
    total, start = 0.0, 0
    for y in branches:
        mid = y.shape[-1]
        total = total + conv_same(y, kernel[:, :, start : start + mid], stride)
        start += mid
    assert start == kernel.shape[2]
    return sigmoid((total - mean) / np.sqrt(var + BN_EPS) * gamma + beta)


def resize_linear(v, length):
    """1-D linear resize, half-pixel centres, clamped at the ends (np.interp clamps)."""
    n = len(v)
    src = (np.arange(length) + 0.5) * n / length - 0.5
    return np.interp(src, np.arange(n), v)


def kept_range(profile, threshold):
    idx = np.nonzero(profile >= threshold)[0]
    if len(idx) == 0:
        return 0, len(profile) - 1
    return idx[0], idx[-1]


def alignment_vector(feature, weight, t_h, t_w, length):
    """AAM for ONE image [H, W, C] and ONE class weight [C]: CAM -> min-max -> crop -> vector."""
    cam = np.tensordot(feature, weight, axes=([2], [0]))  # Eq. 4, [H, W]
    span = cam.max() - cam.min()
    norm = (cam - cam.min()) / span if span > 1e-6 else np.zeros_like(cam)  # Eq. 5
    r0, r1 = kept_range(norm.mean(axis=1), t_h)  # vertical profile: one value per row
    c0, c1 = kept_range(norm.mean(axis=0), t_w)
    cropped = norm[r0 : r1 + 1, c0 : c1 + 1]
    return resize_linear(cropped.mean(axis=1), length)


def randomise(layer, seed):
    """Random kernels/biases and BN parameters/statistics; returns the float64 values."""
    rng = np.random.default_rng(seed)
    new = []
    for w in layer.weights:
        shape = tuple(w.shape)
        name = w.name
        if name == "moving_variance":
            new.append(rng.uniform(0.5, 2.0, shape))
        elif name == "gamma":
            new.append(rng.uniform(0.5, 1.5, shape))
        elif name in ("beta", "bias"):
            new.append(rng.uniform(-0.3, 0.6, shape))
        elif name == "moving_mean":
            new.append(rng.normal(0.0, 0.1, shape))
        else:
            new.append(rng.normal(0.0, 1.0 / math.sqrt(np.prod(shape[:-1])), shape))
    layer.set_weights([v.astype("float32") for v in new])
    return [v.astype("float64") for v in new]
