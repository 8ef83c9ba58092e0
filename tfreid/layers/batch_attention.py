"""ADFL Type I batch attention (1b): self-attention among the samples of a mini-batch."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.checks import math_dtype
from tfreid.layers.adfl_attention import ADFLAttention


@keras.saving.register_keras_serializable(package="tfreid")
class BatchAttention(ADFLAttention):
    """Long-range attention across the batch: each sample adds a weighted sum of the others.

    Supplementary Eq. (10)-(11) of ADFL: with the batch reshaped to ``B x CHW``,
    ``A[j, i] = softmax_i(F_i . F_j)`` (``B x B``) and ``O_j = alpha * sum_i A[j, i] F_i + F_j``
    with a learnable scalar ``alpha`` initialised to 0. The attention runs in float32 under mixed
    precision.

    **The output of a sample depends on the other samples in the batch**, at training and at
    test time alike: the same image gives a different feature in a different batch (the paper
    reports its 1b results as mean +- std over test batch sizes 10..100). With a batch of one,
    ``A = [[1]]`` and ``O = (1 + alpha) F``; so a deployed model that embeds images one at a time
    (TF Serving, TFLite) differs from the batched evaluation unless ``alpha`` is 0. Prefer the
    other modules unless this dependence is what you want to study.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: tensor ``[B, H, W, C]`` (static H, W, C; B may be dynamic).

    Returns:
        ``O = alpha * A F + F``, reshaped like ``inputs``.

    Example:

    >>> BatchAttention()(keras.random.normal((4, 12, 4, 32))).shape
    (4, 12, 4, 32)

    Reference:
        ADFL (Liu et al., arXiv 2019), Sec. IV-A, Fig. 4(d), supplementary Eq. (10)-(11).
    """

    residual = True

    def call(self, inputs):
        dt = math_dtype(self.compute_dtype)
        _, h, w, c = self.check_shape(inputs.shape)
        f = ops.reshape(ops.cast(inputs, dt), (-1, h * w * c))
        attention = ops.softmax(ops.matmul(f, ops.transpose(f)), axis=-1)  # [j, i]
        out = ops.cast(self.alpha, dt) * ops.matmul(attention, f) + f
        return ops.cast(ops.reshape(out, (-1, h, w, c)), self.compute_dtype)
