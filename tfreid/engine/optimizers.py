"""Keras optimizers with PyTorch-style L2 weight decay and per-variable-group learning rates.

The ReID papers trained in PyTorch/Caffe, whose ``weight_decay`` adds ``wd * w`` to the gradient
before the optimizer's update (L2 regularisation); Keras' ``weight_decay`` shrinks the weights
after the update direction is computed (decoupled, AdamW-style). With Adam the two differ in
kind: ADFL's lr 3.5e-4 and wd 5e-4 decoupled shrink a weight by 1.75e-7 of itself per step,
while L2 adds a gradient term Adam normalises like any other. `SGD` and `Adam` here do either
(``decay_mode``), always on kernels only, and let chosen variables follow their own learning-rate
schedule (AANet decays the convolution layers' learning rate at epoch 40 but not the
classifiers').

Both decays happen in ``update_step``, which Keras runs per variable in cross-replica context
with the all-reduced gradient (on every device copy of a mirrored variable), so they behave the
same under any ``tf.distribute`` strategy.
"""

from __future__ import annotations

import re

import keras
from keras import ops

DECAY_MODES = ("l2", "decoupled")


def decays(variable) -> bool:
    """Whether weight decay applies: kernels (rank >= 2) yes; BN gammas/betas, biases and
    scalars (ADFL's alpha, a cosine classifier's scale) no."""
    return len(variable.shape) >= 2


class _ParamRules:
    """Mixin for a Keras optimizer: weight decay by ``decay_mode`` and learning-rate groups.

    Args (keyword, besides the optimizer's own; its ``weight_decay`` must stay None):
        decay_rate: the weight-decay coefficient ``wd`` (0: none).
        decay_mode: ``"l2"`` (``g <- g + wd * w`` before the update, PyTorch/Caffe) or
            ``"decoupled"`` (``w <- w - lr * wd * w`` before the update, Keras' built-in
            ``weight_decay`` formula, with the variable's own learning rate).
        lr_groups: ``[(pattern, learning_rate), ...]``: a variable whose ``path`` matches the
            regular expression ``pattern`` (first match wins) uses that learning rate (a float
            or a `LearningRateSchedule` of the optimizer's iterations) instead of the main one.
    """

    def __init__(self, *args, decay_rate: float = 0.0, decay_mode: str = "l2", lr_groups=(), **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("pass weight decay as `decay_rate` (with `decay_mode`), not `weight_decay`, "
                             f"received weight_decay={kwargs['weight_decay']!r}.")
        super().__init__(*args, **kwargs)
        if decay_mode not in DECAY_MODES:
            raise ValueError(f"`decay_mode` must be one of {', '.join(DECAY_MODES)}, "
                             f"received decay_mode={decay_mode!r}.")
        if isinstance(decay_rate, bool) or not isinstance(decay_rate, (int, float)) or decay_rate < 0:
            raise ValueError(f"`decay_rate` must be a number >= 0, received decay_rate={decay_rate!r}.")
        self.decay_rate, self.decay_mode = float(decay_rate), decay_mode
        self.lr_groups = []
        for item in lr_groups:
            pattern, lr = item
            try:
                re.compile(pattern)
            except (re.error, TypeError):
                raise ValueError(f"`lr_groups` patterns must be regular expressions, received {pattern!r}.") from None
            self.lr_groups.append((pattern, lr))
        self._decayed, self._group_of = set(), {}

    def _match(self, variable):
        path = getattr(variable, "path", "")
        return next((i for i, (p, _) in enumerate(self.lr_groups) if re.search(p, path)), None)

    def build(self, variables):
        if not self.built:
            for v in variables:
                key = self._var_key(v)
                if decays(v):
                    self._decayed.add(key)
                group = self._match(v)
                if group is not None:
                    self._group_of[key] = group
        super().build(variables)

    def variable_learning_rate(self, variable):
        """The learning rate ``variable`` (a model variable) is updated with at the current
        iteration: its group's, or the main one."""
        group = self._group_of.get(self._var_key(variable), self._match(variable))
        if group is None:
            return self.learning_rate
        lr = self.lr_groups[group][1]
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            return lr(self.iterations)
        return ops.convert_to_tensor(lr, "float32")

    def update_step(self, gradient, variable, learning_rate):
        key = self._var_key(variable)
        if key in self._group_of:
            learning_rate = self.variable_learning_rate(variable)
        if self.decay_rate and key in self._decayed:
            wd = ops.cast(self.decay_rate, variable.dtype)
            if self.decay_mode == "l2":
                gradient = ops.add(ops.cast(gradient, variable.dtype), ops.multiply(wd, variable))
            else:
                lr = ops.cast(learning_rate, variable.dtype)
                self.assign_sub(variable, ops.multiply(ops.multiply(variable, wd), lr))
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        groups = [[p, keras.saving.serialize_keras_object(lr)
                   if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) else lr]
                  for p, lr in self.lr_groups]
        config.update({"decay_rate": self.decay_rate, "decay_mode": self.decay_mode, "lr_groups": groups})
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["lr_groups"] = [(p, keras.saving.deserialize_keras_object(lr) if isinstance(lr, dict) else lr)
                               for p, lr in config.get("lr_groups", ())]
        return super().from_config(config, custom_objects=custom_objects)


@keras.saving.register_keras_serializable(package="tfreid")
class SGD(_ParamRules, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with `_ParamRules` (``decay_rate``, ``decay_mode``, ``lr_groups``)."""


@keras.saving.register_keras_serializable(package="tfreid")
class Adam(_ParamRules, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with `_ParamRules` (``decay_rate``, ``decay_mode``, ``lr_groups``);
    ``decay_mode="decoupled"`` is AdamW."""


__all__ = ["DECAY_MODES", "SGD", "Adam", "decays"]
