"""Fused batch normalisation for training (raw TF: `keras.ops` has no fused batch norm).

Raw `tf.*` lives in this small module so the layers stay on `keras.ops`; they call it only on
the TF backend.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def fused_bn_applies(bn):
    """Whether `fused_bn_train` reproduces ``bn(y, training=True)`` (else use the Keras path)."""
    return (
        keras.backend.backend() == "tensorflow"
        and bn.trainable  # frozen BN normalises with the moving statistics
        and not bn.synchronized  # sync-BN needs the cross-replica moments of keras.ops.moments
        and not bn.renorm
        and bn.center
        and bn.scale
        and bn.axis in (-1, 3)
    )


def fused_bn_train(bn, y):
    """Training-mode BN of Keras layer `bn` on NHWC `y` with TF's fused kernel.

    Same maths and moving-average update as `keras.layers.BatchNormalization` (biased batch
    variance in both the output and the moving variance), but one FusedBatchNormV3 op forward and
    one backward instead of ~10 element-wise ops; on CPU this halves HA-CNN's training step.
    Keras (3.15) has no fused batch norm in `keras.ops`, hence raw TF here (TensorFlow backend
    only, see `fused_bn_applies`).
    """
    # The TF wrapper raises epsilon to >= 1.001e-5 (cuDNN's floor); the change is ~1e-8 relative.
    out, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        y,
        tf.cast(bn.gamma, "float32"),
        tf.cast(bn.beta, "float32"),
        epsilon=bn.epsilon,
        data_format="NHWC",
        is_training=True,
    )
    # The op reports the Bessel-corrected variance; Keras tracks the biased one.
    count = tf.cast(tf.size(y) // tf.shape(y)[-1], "float32")
    variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
    m = bn.momentum
    bn.moving_mean.assign(bn.moving_mean * m + mean * (1.0 - m))
    bn.moving_variance.assign(bn.moving_variance * m + variance * (1.0 - m))
    return out
