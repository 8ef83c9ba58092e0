"""CCAN cross-correlated attention (CC-Attention): attention between two feature maps."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfreid.checks import math_dtype
from tfreid.layers.validation import check_bool, check_feature_map, check_positive_int

# `alpha_initializer` value giving W_alpha = [I; I] / 2, i.e. A = ReLU((A' + A'^T) / 2) at start.
SYMMETRIC = "symmetric"


def near_identity_initializer():
    """Default for ``W_w``: Glorot-uniform scaled by 1/20 (variance 1/400).

    With Glorot-sized ``W_w`` the attention term ``phi(y W_w)`` starts 2.6x (C=480, 32x16 map)
    to 6.7x (C=832) larger than the residual ``q`` (measured on ReLU(N(0, 1)) maps), burying the
    backbone features of a from-scratch network; 1/20 starts it at ~0.1-0.3x. ``W_w`` itself still
    learns at full speed (its gradient does not depend on its scale), unlike a zero ``W_w``,
    whose ReLU would pass no gradient at all. Same idea as the zero-initialised BN of non-local
    blocks (Wang et al.).
    """
    return keras.initializers.VarianceScaling(scale=1.0 / 400.0, mode="fan_avg", distribution="uniform")


def _symmetric_pairing(shape, dtype=None):
    """``[I; I] / 2`` of shape ``[2 P, P]``: mixes A' with its transpose in equal parts."""
    rows, cols = shape
    eye = np.eye(cols, dtype="float32") / 2.0
    return ops.convert_to_tensor(np.concatenate([eye, eye], axis=0), dtype=dtype)


@keras.saving.register_keras_serializable(package="tfreid")
class CrossCorrelatedAttention(keras.layers.Layer):
    """Cross-Correlated Attention between a query map ``Q`` and a key map ``Q'`` (CCAN Eq. 1-3).

    With ``q, q'`` the ``[MN, C]`` positional matrices of the two ``[M, N, C]`` maps and
    ``phi = ReLU``, ``K = C // reduction`` (``C / 8`` in the paper):

    - ``g(q) = phi(q W_g)``, ``f(q') = phi(q' W_f)``, ``h(q) = phi(q W_h)`` (``[MN, K]`` each);
    - ``A' = g(q) f(q')^T`` (``[MN, MN]``, row ``i`` = position ``i`` of ``q``);
    - ``A = phi([A', A'^T] W_alpha)`` with ``W_alpha`` of shape ``[2 MN, MN]`` (Eq. 1);
    - ``y = (1 / MN) A h(q)`` (Eq. 2: ``y_i = 1/MN sum_j A_ij phi(h(q_j))``);
    - ``z = phi(y W_w) + q`` with ``W_w`` of shape ``[K, C]`` (Eq. 3), reshaped to ``[M, N, C]``.

    Decisions the paper leaves open: no biases anywhere (the equations have none);
    ``W_f`` maps the key's own channel count ``C'`` to ``K`` (``C' = C`` in CCAN);
    ``W_alpha`` starts as ``[I; I] / 2`` (``alpha_initializer="symmetric"``) so that at
    initialisation ``A = (A' + A'^T) / 2`` is exactly the symmetric cross-correlation of Remark 1
    and ``A_ij`` relates positions ``i`` and ``j`` from the first step (a random ``W_alpha``
    would mix unrelated positions); under a float16 / bfloat16 policy ``A'`` to ``y`` are
    computed in float32 (``A'`` sums ``K`` products and overflows float16 easily).
    ``W_w`` starts small (``output_initializer``, see `near_identity_initializer`) so that
    ``z ~ q`` at first. ``W_alpha`` ties the layer to the ``M x N`` it was built for: calling it
    on another size raises ``ValueError``.
    Weights: ``g_kernel``, ``f_kernel``, ``h_kernel`` ``[C, K]``, ``alpha_kernel``
    ``[2 MN, MN]``, ``w_kernel`` ``[K, C]``.

    Args:
        reduction: ``C / K``, positive integer with ``C // reduction >= 1``. Default 8.
        return_attention: also return the attention map (see Returns). Default False.
        kernel_initializer: initializer of ``W_f, W_g, W_h``. Default ``"glorot_uniform"``.
        alpha_initializer: ``"symmetric"`` (default) or any Keras initializer for ``W_alpha``.
        output_initializer: initializer of ``W_w``; ``None`` (default) = Glorot-uniform / 20.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        query: ``Q``, ``[B, M, N, C]`` with static ``M, N, C``; the residual and ``h`` use it.
        key: ``Q'``, ``[B, M, N, C']`` (same ``M x N``).

    Returns:
        ``z`` of shape ``[B, M, N, C]``; with ``return_attention`` a list ``[z, attended]``
        where ``attended[b, m, n, 0] = mean_i A[i, j]`` (``j`` = position ``(m, n)``, row-major)
        is how much position ``j`` is drawn on (non-negative; float32 under mixed precision).

    Example:

    >>> cc = CrossCorrelatedAttention(reduction=8)
    >>> z = cc(keras.random.normal((2, 16, 8, 64)), keras.random.normal((2, 16, 8, 64)))
    >>> z.shape
    (2, 16, 8, 64)

    Reference:
        "Cross-Correlated Attention Networks for Person Re-Identification" (CCAN), Sec. 3.1,
        Eq. 1-3, Fig. 1.
    """

    def __init__(
        self,
        reduction: int = 8,
        return_attention: bool = False,
        kernel_initializer="glorot_uniform",
        alpha_initializer=SYMMETRIC,
        output_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.reduction = check_positive_int("reduction", reduction)
        self.return_attention = check_bool("return_attention", return_attention)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if isinstance(alpha_initializer, str) and alpha_initializer == SYMMETRIC:
            self.alpha_initializer = SYMMETRIC
        else:
            self.alpha_initializer = keras.initializers.get(alpha_initializer)
        if output_initializer is None:
            output_initializer = near_identity_initializer()
        self.output_initializer = keras.initializers.get(output_initializer)
        self._spatial = None

    # ------------------------------------------------------------------------------ shapes
    def _check_shapes(self, query_shape, key_shape):
        query_shape = check_feature_map(self, query_shape, reduction=self.reduction, static_spatial=True,
                                        name="query")
        key_shape = check_feature_map(self, key_shape, static_spatial=True, name="key")
        if query_shape[1:3] != key_shape[1:3]:
            raise ValueError(
                f"{type(self).__name__}: query and key must have the same spatial size M x N "
                f"([A', A'^T] needs a square A'), received query {query_shape} and key {key_shape}."
            )
        if self._spatial is not None and tuple(query_shape[1:3]) != self._spatial:
            raise ValueError(
                f"{type(self).__name__} {self.name!r} was built for M x N = {self._spatial} "
                f"(W_alpha is [2MN, MN] = {self.alpha_kernel.shape}); received a map of spatial "
                f"size {tuple(query_shape[1:3])}. Build a new layer for that input size."
            )
        return query_shape, key_shape

    def build(self, query_shape, key_shape=None):
        query_shape, key_shape = self._check_shapes(query_shape, query_shape if key_shape is None else key_shape)
        _, m, n, c = query_shape
        positions, k = m * n, c // self.reduction
        alpha_init = _symmetric_pairing if self.alpha_initializer == SYMMETRIC else self.alpha_initializer
        add = lambda name, shape, init: self.add_weight(name=name, shape=shape, initializer=init)
        self.g_kernel = add("g_kernel", (c, k), self.kernel_initializer)
        self.f_kernel = add("f_kernel", (key_shape[-1], k), self.kernel_initializer)
        self.h_kernel = add("h_kernel", (c, k), self.kernel_initializer)
        self.alpha_kernel = add("alpha_kernel", (2 * positions, positions), alpha_init)
        self.w_kernel = add("w_kernel", (k, c), self.output_initializer)
        self._spatial = (int(m), int(n))
        self.built = True

    def compute_output_shape(self, query_shape, key_shape=None):
        query_shape, _ = self._check_shapes(query_shape, query_shape if key_shape is None else key_shape)
        if self.return_attention:
            return query_shape, (*query_shape[:3], 1)
        return query_shape

    # ------------------------------------------------------------------------------ maths
    def _project(self, x, kernel):
        return ops.relu(ops.matmul(x, ops.cast(kernel, self.compute_dtype)))

    def _attend(self, query, key):
        _, m, n, c = self._check_shapes(query.shape, key.shape)[0]
        positions = m * n
        q = ops.reshape(query, (-1, positions, c))
        k = ops.reshape(key, (-1, positions, key.shape[-1]))
        acc = math_dtype(self.compute_dtype)
        g = ops.cast(self._project(q, self.g_kernel), acc)
        f = ops.cast(self._project(k, self.f_kernel), acc)
        h = ops.cast(self._project(q, self.h_kernel), acc)
        a_prime = ops.matmul(g, ops.transpose(f, (0, 2, 1)))  # [B, MN, MN], row i = position of q
        stacked = ops.concatenate([a_prime, ops.transpose(a_prime, (0, 2, 1))], axis=-1)
        attention = ops.relu(ops.matmul(stacked, ops.cast(self.alpha_kernel, acc)))
        y = ops.matmul(attention, h) / float(positions)  # Eq. 2
        z = self._project(ops.cast(y, self.compute_dtype), self.w_kernel) + q  # Eq. 3
        z = ops.reshape(z, (-1, m, n, c))
        if not self.return_attention:
            return z
        attended = ops.reshape(ops.mean(attention, axis=1), (-1, m, n, 1))
        return [z, attended]

    def call(self, query, key):
        return self._attend(query, key)

    def get_config(self):
        config = super().get_config()
        alpha = self.alpha_initializer
        config.update(
            {
                "reduction": self.reduction,
                "return_attention": self.return_attention,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "alpha_initializer": alpha if alpha == SYMMETRIC else keras.initializers.serialize(alpha),
                "output_initializer": keras.initializers.serialize(self.output_initializer),
            }
        )
        return config
