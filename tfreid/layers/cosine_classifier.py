"""Cosine classifier: scaled cosine similarity between normalised features and class weights."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from tfreid.layers.validation import check_bool, check_positive_int

_EPSILON = 1e-12  # squared-norm floor: a zero vector normalises to 0 instead of NaN


def _normalize(x, axis):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), _EPSILON))


@keras.saving.register_keras_serializable(package="tfreid")
class CosineClassifier(keras.layers.Layer):
    """Logits ``s * cos(x, w_j)``: a fully connected classifier on L2-normalised features and
    L2-normalised class weights, without bias (NormFace).

    Normalising both makes the logits depend on the angle only, which is what a cosine-distance
    retrieval compares at test time; the scale ``s`` lets the softmax still approach one-hot
    (with ``N`` classes the largest reachable probability grows with ``s``; ``s = 16`` allows
    > 0.99 for thousands of classes). ``s`` is fixed by default; ``learn_scale=True`` makes it a
    trainable scalar (NormFace's choice) starting at ``scale``. Works for any model: it takes
    ``[B, D]`` features like `keras.layers.Dense`.

    Args:
        units: number of classes.
        scale: the scale ``s`` (> 0), or its initial value with ``learn_scale``. Default 16.0.
        learn_scale: train ``s`` (weight ``"scale"``). Default False.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: features ``[B, D]``.

    Returns:
        Logits ``[B, units]`` in ``[-s, s]``.

    Example:

    >>> logits = CosineClassifier(751)(keras.random.normal((4, 256)))
    >>> logits.shape
    (4, 751)

    Reference:
        F. Wang, X. Xiang, J. Cheng, A. L. Yuille, "NormFace: L2 Hypersphere Embedding for Face
        Verification", ACM MM 2017; CAN Sec. 4.6 ("we also normalize the features and weights
        in FC layer").
    """

    def __init__(self, units: int, scale: float = 16.0, learn_scale: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not scale > 0:
            raise ValueError(f"`scale` must be a number > 0, received scale={scale!r}.")
        self.scale = float(scale)
        self.learn_scale = check_bool("learn_scale", learn_scale)
        self.kernel = None
        self.scale_weight = None

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(f"CosineClassifier expects features [B, D] with known D, received shape {input_shape}.")
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer="glorot_uniform")
        if self.learn_scale:
            self.scale_weight = self.add_weight(name="scale", shape=(),
                                                initializer=keras.initializers.Constant(self.scale))
        self.built = True

    def call(self, inputs):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        cosine = ops.matmul(_normalize(inputs, -1), _normalize(kernel, 0))
        scale = self.scale if self.scale_weight is None else ops.cast(self.scale_weight, self.compute_dtype)
        return cosine * scale

    def compute_output_shape(self, input_shape):
        if len(tuple(input_shape)) != 2:
            raise ValueError(f"CosineClassifier expects features [B, D], received shape {tuple(input_shape)}.")
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "scale": self.scale, "learn_scale": self.learn_scale})
        return config
