"""The base class of ADFL's attention modules (not a public layer).

The seven modules (1s, 1c, 1h, 1b, 2s, 2c, 2h) share their bookkeeping: constructor arguments
stored under their own names and returned by `get_config`, an input that must be a feature map
with static H, W and C (at least ``reduction`` channels where they project), an output shaped
like the input plus, with ``return_attention``, a ``[B, H, W, 1]`` map, and the learnable
residual scale ``alpha`` of the Type I modules.

Reference (every module): H. Liu, J. Cheng, S. Wang, W. Wang, "Attention: A Big Surprise for
Cross-Domain Person Re-Identification", arXiv 2019 (ADFL), Sec. IV and the supplementary material.
"""

from __future__ import annotations

import keras

from tfreid.layers.validation import check_bool, check_feature_map, check_positive_int

# The constructor arguments of the modules, each with its check.
_CHECKS = {"reduction": check_positive_int, "kernel_size": check_positive_int,
           "use_bias": check_bool, "return_attention": check_bool}


class ADFLAttention(keras.layers.Layer):
    """Bookkeeping shared by the ADFL attention layers.

    Set the class attribute ``residual = True`` for a Type I module without sublayers: the
    default `build` then adds ``alpha``.

    Args:
        arguments: the subclass' own constructor arguments by name (among ``reduction``,
            ``kernel_size``, ``use_bias``, ``return_attention``); each is checked, stored as an
            attribute of that name and returned by `get_config` (in this order).
        **kwargs: standard `keras.layers.Layer` arguments (``name``, ``dtype``, ...).
    """

    residual = False

    def __init__(self, arguments: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self._arguments = tuple(arguments or ())
        for name, value in (arguments or {}).items():
            setattr(self, name, _CHECKS[name](name, value))

    def check_shape(self, shape) -> tuple:
        """``shape`` as ``(B, H, W, C)``: a feature map with static H, W, C (ValueError if not)."""
        return check_feature_map(self, shape, reduction=getattr(self, "reduction", 1),
                                 static_spatial=True)

    def build(self, input_shape):
        # Modules without sublayers: check the input; the Type I ones (`residual`) add alpha.
        self.check_shape(input_shape)
        if self.residual:
            self.add_alpha()
        self.built = True

    def add_alpha(self) -> None:
        """The learnable residual scale ``alpha``, initialised to 0 (the layer starts as the
        identity and learns how much context to add)."""
        self.alpha = self.add_weight(shape=(), initializer="zeros", name="alpha")

    def compute_output_shape(self, input_shape):
        shape = self.check_shape(input_shape)
        return (shape, (*shape[:3], 1)) if getattr(self, "return_attention", False) else shape

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in self._arguments})
        return config
