"""CCAN symmetric self-attention (SS-Attention): cross-correlated attention of a map with itself."""

from __future__ import annotations

import keras

from tfreid.layers.cross_correlated_attention import CrossCorrelatedAttention


@keras.saving.register_keras_serializable(package="tfreid")
class SymmetricSelfAttention(CrossCorrelatedAttention):
    """`CrossCorrelatedAttention` with ``Q = Q'`` (CCAN Remark 2), used after global level 1.

    ``g(q) = phi(q W_g)`` and ``f(q) = phi(q W_f)`` keep independent weights, so
    ``A' = g(q) f(q)^T`` is not symmetric by itself; the ``[A', A'^T] W_alpha`` step makes the
    attention account for both directions of every pair of positions ("symmetric
    inter-dependencies"). Everything else (``K = C // reduction``, ``W_alpha`` of shape
    ``[2 MN, MN]`` tying the layer to its build size, initialisers, float32 attention) is as in
    `CrossCorrelatedAttention`.

    Args:
        reduction: ``C / K``. Default 8.
        return_attention: also return the attention map. Default False.
        kernel_initializer: initializer of ``W_f, W_g, W_h``. Default ``"glorot_uniform"``.
        alpha_initializer: ``"symmetric"`` (default, ``[I; I] / 2``) or a Keras initializer.
        output_initializer: initializer of ``W_w``; ``None`` (default) = Glorot-uniform / 20.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: ``[B, M, N, C]`` with static ``M, N, C``.

    Returns:
        ``z`` ``[B, M, N, C]``; with ``return_attention`` ``[z, attended]``, ``attended``
        ``[B, M, N, 1]`` = column means of ``A`` (how much each position is attended).

    Example:

    >>> ss = SymmetricSelfAttention()
    >>> ss(keras.random.normal((2, 32, 16, 480))).shape
    (2, 32, 16, 480)

    Reference:
        "Cross-Correlated Attention Networks for Person Re-Identification" (CCAN), Sec. 3.1,
        Remark 2 (SS^G_1), Eq. 1-3.
    """

    def build(self, input_shape):
        super().build(input_shape, input_shape)

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(input_shape, input_shape)

    def call(self, inputs):
        return self._attend(inputs, inputs)
