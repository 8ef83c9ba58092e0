"""Identity classification loss (softmax cross-entropy, optional label smoothing)."""

from __future__ import annotations

import tensorflow as tf


def cross_entropy(labels, logits, label_smoothing: float = 0.0):
    """Per-example softmax cross-entropy with optional label smoothing.

    Args:
        labels: int tensor `[B]` of class ids in `[0, C)`.
        logits: float tensor `[B, C]`; computed in float32 whatever its dtype (mixed precision).
        label_smoothing: epsilon of Szegedy et al. 2016: the target is
            `(1 - eps) * onehot + eps / C`.

    Returns:
        float32 tensor `[B]`; the trainer averages it over the *global* batch.

    Reference: CCAN (Zhou et al.) trains with label smoothing 0.1; HA-CNN uses plain CE.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    logits = tf.cast(logits, tf.float32)
    num_classes = tf.shape(logits)[-1]
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    onehot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    if label_smoothing:
        onehot = onehot * (1.0 - label_smoothing) + label_smoothing / tf.cast(num_classes, tf.float32)
    return -tf.reduce_sum(onehot * log_probs, axis=-1)
