"""BatchNormalization that trains with TF's fused kernel (same variables, same maths)."""

from __future__ import annotations

import keras

from tfreid.ops.batch_norm import fused_bn_applies, fused_bn_train


@keras.saving.register_keras_serializable(package="tfreid")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose training pass is one fused kernel.

    A drop-in replacement: the same arguments, the same four variables in the same order
    (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``), the same output and moving-average
    update. Keras 3 normalises with ~10 element-wise ops; on CPU the fused kernel makes a
    ResNet-50 training step markedly faster (``tools/benchmark_batchnorm.py``). The Keras path is
    used whenever the fused kernel would differ: synchronized BN, frozen (``trainable=False``)
    layers, renorm, ``center``/``scale`` off, a channel axis other than the last, another backend.
    Because variables and names are the stock ones, weights saved from Keras models (e.g.
    ``keras.applications.ResNet50``) load by name.

    Args:
        **kwargs: exactly those of `keras.layers.BatchNormalization`.

    Call arguments:
        inputs: tensor with the channels last.
        training: Python bool; batch statistics (and moving-average update) when True.

    Returns:
        The normalised tensor, same shape as ``inputs``.

    Example:

    >>> bn = FusedBatchNormalization(momentum=0.9, epsilon=1.001e-5)
    >>> bn(keras.random.normal((2, 8, 4, 16)), training=True).shape
    (2, 8, 4, 16)

    Reference:
        S. Ioffe, C. Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
        Internal Covariate Shift", ICML 2015.
    """

    def call(self, inputs, training=None, mask=None):
        if training and mask is None and len(inputs.shape) == 4 and fused_bn_applies(self):
            return fused_bn_train(self, inputs)
        return super().call(inputs, training=training, mask=mask)
