"""Conv2D -> BatchNormalization -> ReLU, the basic unit of every HA-CNN convolution."""

from __future__ import annotations

import keras
from keras import ops

from tfreid.layers.validation import PADDINGS, check_choice, check_feature_map, check_positive_int
from tfreid.ops.batch_norm import fused_bn_applies, fused_bn_train

# PyTorch's default for Conv2d and Linear weights (kaiming_uniform with a=sqrt(5)):
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)). A config, not an instance: each layer draws its own values.
PYTORCH_INIT = {"class_name": "VarianceScaling",
                "config": {"scale": 1.0 / 3.0, "mode": "fan_in", "distribution": "uniform"}}


@keras.saving.register_keras_serializable(package="tfreid")
class ConvBNReLU(keras.layers.Layer):
    """A square ``k x k`` convolution followed by batch normalisation and ReLU.

    HA-CNN (and torchreid's ``ConvBlock``) applies BN and ReLU after every convolution, including
    the tiny ones inside the attention modules. The convolution has no bias by default: a bias
    right before BN is cancelled by the mean subtraction, so it only adds parameters
    (``use_bias=True`` reproduces torchreid's parameter count exactly). BN defaults (``momentum=0.9``
    in Keras terms, ``epsilon=1e-5``) and the kernel initialiser mirror PyTorch, so that ported
    recipes behave alike: followed by BN, the kernel's scale sets how far an Adam step moves it
    relative to its size, and Keras' ``he_normal`` starts 2.4x larger than PyTorch's default.
    Sublayers are named ``"conv"`` and ``"bn"``.

    Args:
        filters: number of output channels (positive integer).
        kernel_size: square kernel size (positive integer). Default 1.
        strides: stride (positive integer). Default 1.
        use_bias: whether the convolution has a bias. Default False.
        bn_momentum: BatchNormalization moving-average momentum. Default 0.9.
        bn_epsilon: BatchNormalization epsilon. Default 1e-5.
        kernel_initializer: initializer of the convolution kernel. Default `PYTORCH_INIT`
            (PyTorch's ``Conv2d`` default, uniform in ``+-1/sqrt(fan_in)``).
        padding: ``"same"`` (TF: a strided conv on an even size pads only the bottom/right) or
            ``"symmetric"`` (PyTorch's ``padding=k // 2``: ``k // 2`` zeros on every side, so
            output pixel ``i`` is centred on input pixel ``s * i``). Equal at stride 1.
            Default ``"same"``.
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: ``[B, H, W, C_in]`` tensor.
        training: Python bool; BN uses batch statistics when True.

    Returns:
        ``[B, ceil(H / s), ceil(W / s), filters]`` (odd ``k``, either padding), non-negative.

    Example:

    >>> y = ConvBNReLU(32, kernel_size=3, strides=2)(keras.random.normal((2, 160, 64, 3)))
    >>> y.shape
    (2, 80, 32, 32)

    Reference:
        W. Li, X. Zhu, S. Gong, "Harmonious Attention Network for Person Re-Identification",
        CVPR 2018, Fig. 3 ("ReLU and BN applied to each conv layer").
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 1,
        strides: int = 1,
        use_bias: bool = False,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        kernel_initializer=PYTORCH_INIT,
        padding: str = "same",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_positive_int("filters", filters)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        self.strides = check_positive_int("strides", strides)
        if not isinstance(use_bias, bool):
            raise ValueError(f"`use_bias` must be a bool, received use_bias={use_bias!r}.")
        self.use_bias = use_bias
        if not 0.0 <= float(bn_momentum) < 1.0:
            raise ValueError(f"`bn_momentum` must be in [0, 1), received bn_momentum={bn_momentum!r}.")
        if not float(bn_epsilon) > 0.0:
            raise ValueError(f"`bn_epsilon` must be > 0, received bn_epsilon={bn_epsilon!r}.")
        self.bn_momentum = float(bn_momentum)
        self.bn_epsilon = float(bn_epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.padding = check_choice("padding", padding, PADDINGS)
        # Only a strided conv differs from "same"; it gets explicit zeros and a "valid" conv.
        self._pad = self.kernel_size // 2 if padding == "symmetric" and self.strides > 1 else 0
        self.conv = keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding="valid" if self._pad else "same",
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            name="conv",
            dtype=self.dtype_policy,
        )
        self.bn = keras.layers.BatchNormalization(
            momentum=self.bn_momentum, epsilon=self.bn_epsilon, name="bn", dtype=self.dtype_policy
        )

    def _padded_shape(self, input_shape):
        b, h, w, c = check_feature_map(self, input_shape)
        p = 2 * self._pad
        return (b, h if h is None else h + p, w if w is None else w + p, c)

    def build(self, input_shape):
        input_shape = self._padded_shape(input_shape)
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None):
        if self._pad:
            p = self._pad
            inputs = ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]])
        if training:
            y = self.conv(inputs)
            if fused_bn_applies(self.bn):
                return ops.relu(fused_bn_train(self.bn, y))
            return ops.relu(self.bn(y, training=training))
        # Inference: fold BN into the convolution, relu(conv(x, k * s) + b). This is the same
        # affine map, but the graph becomes conv + add + relu, which TF's grappler fuses into one
        # oneDNN kernel instead of three extra passes over the activations (~1.5x faster model).
        bn = self.bn
        scale = bn.gamma * ops.rsqrt(bn.moving_variance + bn.epsilon)
        shift = bn.beta - bn.moving_mean * scale
        if self.use_bias:
            shift = shift + self.conv.bias * scale
        kernel = ops.cast(self.conv.kernel * scale, self.compute_dtype)
        y = ops.conv(inputs, kernel, strides=self.strides, padding=self.conv.padding)
        return ops.relu(y + ops.cast(shift, self.compute_dtype))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(self._padded_shape(input_shape))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "use_bias": self.use_bias,
                "bn_momentum": self.bn_momentum,
                "bn_epsilon": self.bn_epsilon,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "padding": self.padding,
            }
        )
        return config
