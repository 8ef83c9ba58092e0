"""Pairwise distances for metric-learning losses, with finite gradients everywhere.

The plain formulas have two places where the gradient is undefined: `sqrt` at 0 (two identical
embeddings, or an embedding with itself) and `x / ||x||` at a zero vector. Both are handled
with a masked `tf.where`: the unsafe branch is evaluated on a harmless stand-in value so its
gradient is finite, and the result (and its gradient) is exactly 0 where the input is
degenerate. Compare `sqrt(x + eps)`, which biases every distance by a little.
"""

from __future__ import annotations

import tensorflow as tf

METRICS = ("euclidean", "sqeuclidean", "cosine")

# Squared norms / squared distances at or below this are treated as exactly zero.
_EPS = 1e-12


def safe_sqrt(x, eps: float = _EPS):
    """`sqrt(x)` for `x >= 0` with value 0 and gradient 0 where `x <= eps`.

    Args:
        x: float tensor (negative entries, e.g. round-off in `|a|^2 + |b|^2 - 2ab`, count as 0).
        eps: threshold below which `x` is treated as 0.

    Returns:
        Tensor like `x`.

    Example:
        >>> safe_sqrt(tf.constant([0.0, 4.0])).numpy()
        array([0., 2.], dtype=float32)
    """
    positive = x > eps
    # sqrt is evaluated on 1.0 where masked out, so the discarded branch has gradient 0.5, not inf.
    return tf.where(positive, tf.sqrt(tf.where(positive, x, tf.ones_like(x))), tf.zeros_like(x))


def safe_l2_normalize(x, axis: int = -1, eps: float = _EPS):
    """`x / ||x||` along `axis`; a zero vector maps to the zero vector with zero gradient.

    `tf.math.l2_normalize` also avoids the division by zero, but its gradient at a zero vector is
    `1 / sqrt(eps)` (1e6), which blows up training; here it is exactly 0.

    Args:
        x: float tensor.
        axis: the vector axis.
        eps: squared norms at or below this count as zero.

    Returns:
        Tensor like `x`; unit rows, or zero rows for (near-)zero input rows.
    """
    sq = tf.reduce_sum(tf.square(x), axis=axis, keepdims=True)
    nonzero = sq > eps
    inv = tf.where(nonzero, tf.math.rsqrt(tf.where(nonzero, sq, tf.ones_like(sq))),
                   tf.zeros_like(sq))
    return x * inv


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"`metric` must be one of {METRICS}; received {metric!r}.")
    return metric


def pairwise_distance(a, b, metric: str = "euclidean"):
    """Distance matrix `D[i, j] = d(a_i, b_j)`.

    Args:
        a: float tensor `[n, D]`.
        b: float tensor `[m, D]`.
        metric: `"euclidean"` (`||a - b||`), `"sqeuclidean"` (`||a - b||^2`) or `"cosine"`
            (`1 - cos(a, b)`; a zero vector has cosine similarity 0 with everything, so
            distance 1).

    Returns:
        float32 tensor `[n, m]`, every entry `>= 0` (round-off below 0 is clipped) and with
        finite gradients, including for identical rows and zero vectors.

    Example:
        >>> pairwise_distance(tf.constant([[0.0, 0.0]]), tf.constant([[3.0, 4.0]])).numpy()
        array([[5.]], dtype=float32)
    """
    check_metric(metric)
    a = tf.cast(a, tf.float32)
    b = tf.cast(b, tf.float32)
    if metric == "cosine":
        sim = tf.matmul(safe_l2_normalize(a), safe_l2_normalize(b), transpose_b=True)
        return tf.maximum(1.0 - sim, 0.0)
    # The expansion costs one matmul instead of an [n, m, D] difference tensor; the clip removes
    # the small negative values that cancellation can produce for (nearly) identical rows.
    sq = (tf.reduce_sum(tf.square(a), axis=1, keepdims=True)
          + tf.reduce_sum(tf.square(b), axis=1)[tf.newaxis, :]
          - 2.0 * tf.matmul(a, b, transpose_b=True))
    sq = tf.maximum(sq, 0.0)
    if metric == "sqeuclidean":
        return sq
    return safe_sqrt(sq)


__all__ = ["METRICS", "check_metric", "pairwise_distance", "safe_l2_normalize", "safe_sqrt"]
