"""Optimizers and learning-rate schedules from a config (Keras built-ins + one warmup class)."""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from tfreid.engine import optimizers


@keras.saving.register_keras_serializable(package="tfreid")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from `start_lr` to the wrapped schedule's value at `warmup_steps`.

    Args:
        schedule: a `LearningRateSchedule` (or a float) used after the warmup.
        warmup_steps: number of steps of the linear ramp.
        start_lr: learning rate at step 0.

    Reference: Luo et al., "Bag of tricks and a strong baseline for deep person re-identification"
    (the ADFL baseline warms up from 3e-6 to 3.5e-4 over 20 epochs).
    """

    def __init__(self, schedule, warmup_steps: int, start_lr: float = 0.0):
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps!r}")
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.start_lr = float(start_lr)

    def _after(self, step):
        return self.schedule(step) if callable(self.schedule) else ops.convert_to_tensor(
            self.schedule, "float32")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        target = ops.cast(self._after(float(self.warmup_steps)), "float32")
        frac = step / float(self.warmup_steps)
        warm = self.start_lr + (target - self.start_lr) * frac
        return ops.where(step < self.warmup_steps, warm, ops.cast(self._after(step), "float32"))

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps, "start_lr": self.start_lr}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


def build_schedule(cfg, steps_per_epoch: int, total_steps: int):
    """Learning rate (float or schedule) for an `OptimConfig`; milestones are in epochs."""
    if cfg.schedule == "constant":
        schedule = cfg.lr
    elif cfg.schedule == "multistep":
        # PiecewiseConstantDecay switches *after* a boundary; milestone epoch m decays from
        # its first step, m * steps_per_epoch, on.
        boundaries = [int(round(m * steps_per_epoch)) - 1 for m in cfg.milestones]
        if boundaries != sorted(boundaries) or len(set(boundaries)) != len(boundaries):
            raise ValueError(f"optim.milestones must be increasing epochs, got {cfg.milestones!r}")
        values = [cfg.lr * cfg.gamma**i for i in range(len(boundaries) + 1)]
        schedule = (keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
                    if boundaries else cfg.lr)
    else:  # cosine over the whole run (after warmup the curve continues from its own value)
        schedule = keras.optimizers.schedules.CosineDecay(cfg.lr, max(total_steps, 1), alpha=0.01)
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    if warmup_steps > 0:
        schedule = LinearWarmup(schedule, warmup_steps, cfg.warmup_start_lr)
    return schedule


# Keys of an `optim.lr_groups` entry besides `pattern`: the schedule settings it overrides, and
# `lr_mult`, which scales the group's lr and warmup_start_lr.
LR_GROUP_KEYS = ("lr", "lr_mult", "schedule", "milestones", "gamma", "warmup_epochs", "warmup_start_lr")


def _group_schedules(cfg, steps_per_epoch: int, total_steps: int):
    """``[(pattern, schedule)]`` from ``cfg.lr_groups``: each entry's `pattern` (a regular
    expression on variable paths) with the main schedule settings overridden by its other keys."""
    groups = []
    for i, entry in enumerate(cfg.lr_groups or ()):
        where = f"optim.lr_groups[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("pattern"), str):
            raise ValueError(f"{where} must be a mapping with a `pattern` (regular expression on "
                             f"variable paths, e.g. '^classifier'), got {entry!r}")
        unknown = sorted(set(entry) - {"pattern", *LR_GROUP_KEYS})
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}; valid keys: pattern, {', '.join(LR_GROUP_KEYS)}")
        overrides = {k: v for k, v in entry.items() if k not in ("pattern", "lr_mult")}
        group_cfg = dataclasses.replace(cfg, lr_groups=[], **overrides)
        mult = entry.get("lr_mult", 1.0)
        if isinstance(mult, bool) or not isinstance(mult, (int, float)) or mult <= 0:
            raise ValueError(f"{where}.lr_mult must be a number > 0, got {mult!r}")
        group_cfg = dataclasses.replace(group_cfg, lr=group_cfg.lr * mult,
                                        warmup_start_lr=group_cfg.warmup_start_lr * mult)
        groups.append((entry["pattern"], build_schedule(group_cfg, steps_per_epoch, total_steps)))
    return groups


def build_optimizer(cfg, steps_per_epoch: int, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam, AdamW or SGD (+momentum) with the configured schedule, weight decay and lr groups.

    ``cfg.weight_decay`` applies to kernels only (not to BN parameters, biases or scalars), as
    ``cfg.weight_decay_mode``: ``"l2"`` adds ``wd * w`` to the gradient (PyTorch/Caffe, what the
    papers used), ``"decoupled"`` shrinks ``w`` by ``lr * wd * w`` (Keras' built-in formula;
    ``adamw`` is Adam with it). ``cfg.lr_groups`` gives matching variables their own schedule
    (`tfreid.engine.optimizers`).
    """
    lr = build_schedule(cfg, steps_per_epoch, total_steps)
    mode = cfg.weight_decay_mode
    if cfg.name == "adamw":
        if mode != "decoupled":
            raise ValueError(f"optim.name=adamw is Adam with decoupled weight decay; got "
                             f"optim.weight_decay_mode={mode!r} (use name: adam for l2)")
    common = {"learning_rate": lr, "clipnorm": cfg.clipnorm, "decay_rate": cfg.weight_decay or 0.0,
              "decay_mode": mode, "lr_groups": _group_schedules(cfg, steps_per_epoch, total_steps)}
    if cfg.name in ("adam", "adamw"):
        return optimizers.Adam(beta_1=cfg.beta_1, beta_2=cfg.beta_2, **common)
    if cfg.name == "sgd":
        return optimizers.SGD(momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    raise ValueError(f"optim.name must be adam, adamw or sgd; got {cfg.name!r}")
