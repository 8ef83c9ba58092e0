"""Non-local self-attention block (Wang et al.), the baseline CCAN's attention is compared with."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.checks import math_dtype
from tfreid.layers.cross_correlated_attention import near_identity_initializer
from tfreid.layers.validation import check_bool, check_feature_map, check_positive_int

_PAIRWISE = ("dot", "embedded_gaussian")
_ACTIVATIONS = ("relu", "linear")


@keras.saving.register_keras_serializable(package="tfreid")
class NonLocalAttention(keras.layers.Layer):
    """Non-local block: every position attends to all positions of the same map.

    With ``q`` the ``[MN, C]`` positional matrix, ``K = C // reduction`` and ``phi`` the chosen
    activation:

    - ``g(q) = phi(q W_g)``, ``f(q) = phi(q W_f)``, ``h(q) = phi(q W_h)`` (``[MN, K]``);
    - ``A' = g(q) f(q)^T``;
    - ``pairwise="dot"``: ``y = (1 / MN) A' h(q)`` -- exactly CCAN's SS-Attention with the
      "Concat" and "alpha" blocks removed (CCAN Remark 2, Fig. 2), and Wang et al.'s dot-product
      non-local block with ``C(x) = N``;
      ``pairwise="embedded_gaussian"``: ``y = softmax_j(A') h(q)`` (Wang et al.'s default);
    - ``z = phi(y W_w) + q``.

    ``activation="relu"`` (default) uses CCAN's non-linear projections, so that it differs from
    `SymmetricSelfAttention` only by the missing ``[A', A'^T] W_alpha`` step; ``"linear"``
    gives Wang et al.'s linear embeddings ``theta, phi, g`` and ``W_z`` (their optional BN after
    ``W_z`` is left out). No ``W_alpha``, so any spatial size works, also one that changes between
    calls. No biases. Under mixed precision the attention (``A'`` to ``y``) is computed in float32.
    Weights: ``g_kernel``, ``f_kernel``, ``h_kernel`` ``[C, K]``, ``w_kernel`` ``[K, C]``.

    Args:
        reduction: ``C / K``, positive integer with ``C // reduction >= 1``. Default 8.
        pairwise: ``"dot"`` (default) or ``"embedded_gaussian"``.
        activation: ``"relu"`` (default) or ``"linear"``.
        return_attention: also return the attention map. Default False.
        kernel_initializer: initializer of ``W_f, W_g, W_h``. Default ``"glorot_uniform"``.
        output_initializer: initializer of ``W_w``; ``None`` (default) = Glorot-uniform / 20, so
            that the block starts close to the identity (the role of Wang et al.'s zero-initialised
            BN; see `CrossCorrelatedAttention`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: ``[B, M, N, C]`` with known ``C``.

    Returns:
        ``z`` ``[B, M, N, C]``; with ``return_attention`` ``[z, attended]`` where ``attended``
        ``[B, M, N, 1]`` is the mean over ``i`` of the weight of position ``j``:
        ``A'_ij`` for ``"dot"``, ``softmax_j(A')_ij`` for ``"embedded_gaussian"``.

    Example:

    >>> NonLocalAttention()(keras.random.normal((2, 16, 8, 64))).shape
    (2, 16, 8, 64)

    Reference:
        X. Wang, R. Girshick, A. Gupta, K. He, "Non-local Neural Networks", CVPR 2018, Sec. 3;
        CCAN (Cross-Correlated Attention Networks), Remark 2, Fig. 2.
    """

    def __init__(
        self,
        reduction: int = 8,
        pairwise: str = "dot",
        activation: str = "relu",
        return_attention: bool = False,
        kernel_initializer="glorot_uniform",
        output_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)
        if pairwise not in _PAIRWISE:
            raise ValueError(f"`pairwise` must be one of {_PAIRWISE}, received pairwise={pairwise!r}.")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"`activation` must be one of {_ACTIVATIONS}, received activation={activation!r}.")
        self.pairwise = pairwise
        self.activation = activation
        self.return_attention = check_bool("return_attention", return_attention)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if output_initializer is None:
            output_initializer = near_identity_initializer()
        self.output_initializer = keras.initializers.get(output_initializer)

    def build(self, input_shape):
        c = check_feature_map(self, input_shape, reduction=self.reduction, name="inputs")[-1]
        k = c // self.reduction
        add = lambda name, shape, init: self.add_weight(name=name, shape=shape, initializer=init)
        self.g_kernel = add("g_kernel", (c, k), self.kernel_initializer)
        self.f_kernel = add("f_kernel", (c, k), self.kernel_initializer)
        self.h_kernel = add("h_kernel", (c, k), self.kernel_initializer)
        self.w_kernel = add("w_kernel", (k, c), self.output_initializer)
        self.built = True

    def compute_output_shape(self, input_shape):
        input_shape = check_feature_map(self, input_shape, reduction=self.reduction, name="inputs")
        if self.return_attention:
            return input_shape, (*input_shape[:3], 1)
        return input_shape

    def _project(self, x, kernel):
        y = ops.matmul(x, ops.cast(kernel, self.compute_dtype))
        return ops.relu(y) if self.activation == "relu" else y

    def call(self, inputs):
        c = check_feature_map(self, inputs.shape, reduction=self.reduction, name="inputs")[-1]
        shape = ops.shape(inputs)
        q = ops.reshape(inputs, (shape[0], -1, c))
        acc = math_dtype(self.compute_dtype)
        g = ops.cast(self._project(q, self.g_kernel), acc)
        f = ops.cast(self._project(q, self.f_kernel), acc)
        h = ops.cast(self._project(q, self.h_kernel), acc)
        pairwise = ops.matmul(g, ops.transpose(f, (0, 2, 1)))
        if self.pairwise == "dot":
            y = ops.matmul(pairwise, h) / ops.cast(ops.shape(pairwise)[-1], acc)
        else:
            pairwise = ops.softmax(pairwise, axis=-1)
            y = ops.matmul(pairwise, h)
        z = ops.reshape(self._project(ops.cast(y, self.compute_dtype), self.w_kernel) + q, shape)
        if not self.return_attention:
            return z
        attended = ops.reshape(ops.mean(pairwise, axis=1), (shape[0], shape[1], shape[2], 1))
        return [z, attended]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "reduction": self.reduction,
                "pairwise": self.pairwise,
                "activation": self.activation,
                "return_attention": self.return_attention,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "output_initializer": keras.initializers.serialize(self.output_initializer),
            }
        )
        return config
