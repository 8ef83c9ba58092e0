"""Model- and data-agnostic distributed training loop.

The :class:`Trainer` builds a model and optimizer inside a ``tf.distribute`` strategy, runs one
traced train step per global batch (``strategy.run``), checkpoints to ``<output_dir>/checkpoints``
(resumable: the data pipeline is a pure function of the step), writes TensorBoard +
``scalars.jsonl`` to ``<output_dir>/logs``, stops cleanly on SIGINT/SIGTERM and refuses to go on
(or to checkpoint) after a non-finite loss.

Multi-worker (``MultiWorkerMirroredStrategy``): only the chief writes checkpoints, summaries and
the progress bar; the other workers save to a temporary folder that is deleted (every worker must
take part in a save) and resume from the chief's ``checkpoints/`` (shared filesystem). Mixed
precision: under the ``mixed_float16`` policy the optimizer is wrapped in
``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling); losses are computed in float32.

Example:
    >>> strategy = create_strategy(2)
    >>> trainer = Trainer(
    ...     strategy=strategy, model_fn=lambda: build_model("hacnn", 751),
    ...     optimizer_fn=lambda: keras.optimizers.Adam(5e-4),
    ...     loss_terms=[LossTerm("ce_global", "logits/global", cross_entropy)],
    ...     output_dir="runs/hacnn", global_batch_size=32, steps_per_epoch=400, epochs=150)
    >>> trainer.restore()                       # resume from the latest checkpoint, if any
    >>> result = trainer.fit(lambda step: pipeline.train_dataset(start_step=step))
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfreid.checks import check_int
from tfreid.engine.checkpoint import CheckpointKeeper
from tfreid.engine.malloc import keep_tensor_memory
from tfreid.engine.strategy import enable_sync_batchnorm, worker_info
from tfreid.engine.signals import StopSignals
from tfreid.engine.summaries import NullLogger, RunningStats, ScalarLogger
from tfreid.progress import Progress

__all__ = ["LossTerm", "TrainResult", "Trainer"]

# Steps excluded from the images/s measurement: the first call traces (and XLA-compiles) the
# step function, the second still pays one-off allocation costs.
_WARMUP_STEPS = 2
_RESERVED_NAMES = ("total", "regularization")


@dataclasses.dataclass
class LossTerm:
    """One weighted loss on one model output.

    Args:
        name: name used for logging, e.g. ``"ce_global"``.
        output_key: key in the model's output dict, e.g. ``"logits/global"``.
        fn: ``fn(labels [b], predictions) -> per-example losses [b]`` (float). Runs inside the
            replica context, so losses that mine over the global batch may all-gather there.
        weight: multiplier of this term in the total loss.
    """

    name: str
    output_key: str
    fn: Callable
    weight: float = 1.0


@dataclasses.dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes:
        steps: global step reached (counts steps of earlier, resumed runs too).
        epochs: ``steps / steps_per_epoch``.
        images_per_second: training throughput of this call, excluding the first (tracing)
            steps and time spent checkpointing/logging/evaluating; 0.0 if too few steps ran.
        losses: mean of each term (unweighted), ``"regularization"`` (if any) and ``"total"``
            over the steps run in the last (possibly partial) epoch of this call.
        stopped_early: ``None``, or why training stopped before the last step
            (``"signal SIGTERM"`` / ``"signal SIGINT"``).
        eval_metrics: the last dict returned by ``evaluate_fn`` ({} if it never ran).
    """

    steps: int
    epochs: float
    images_per_second: float
    losses: dict[str, float]
    stopped_early: str | None
    eval_metrics: dict = dataclasses.field(default_factory=dict)


def _validate_terms(loss_terms):
    if not isinstance(loss_terms, (list, tuple)) or not loss_terms:
        raise ValueError("`loss_terms` must be a non-empty list of LossTerm; "
                         f"received {loss_terms!r}.")
    names = set()
    for term in loss_terms:
        if not isinstance(term, LossTerm):
            raise ValueError(f"`loss_terms` items must be LossTerm; received {term!r}.")
        if not callable(term.fn):
            raise ValueError(f"LossTerm {term.name!r}: `fn` must be callable; "
                             f"received {term.fn!r}.")
        if term.name in names or term.name in _RESERVED_NAMES:
            raise ValueError(f"LossTerm names must be unique and not in {_RESERVED_NAMES}; "
                             f"received duplicate/reserved name {term.name!r}.")
        names.add(term.name)


class Trainer:
    """Distributed training loop with checkpoints, resume, signals, NaN guard and summaries.

    Args:
        strategy: a ``tf.distribute.Strategy`` (see ``tfreid.engine.strategy.create_strategy``).
        model_fn: builds the Keras model (dict outputs); called inside ``strategy.scope()``.
        optimizer_fn: builds the Keras 3 optimizer; called inside ``strategy.scope()``. Note:
            Keras applies ``clipnorm``/``clipvalue``/``global_clipnorm`` per replica, before its
            cross-replica gradient sum, so clipping is not replica-count invariant.
        loss_terms: the :class:`LossTerm` list; the total is ``sum(weight * term) +
            scale_regularization_loss(sum(model.losses))``.
        output_dir: run directory; ``checkpoints/`` and ``logs/`` are created in it.
        global_batch_size: images per step over all replicas (per-replica losses are scaled
            by it, ``tf.nn.compute_average_loss``). Must be divisible by the replica count.
        steps_per_epoch: steps per epoch.
        epochs: number of epochs.
        max_steps: optional cap on the global step.
        checkpoint_every: save every N steps (0 = only at epoch ends, on signals and at the end).
        keep_checkpoints: how many checkpoints to keep.
        log_every: write scalars every N steps (values are means over the window).
        eval_every: run ``evaluate_fn`` every N epochs (0 = only at the end).
        evaluate_fn: ``evaluate_fn(model) -> dict`` of metrics; scalars logged as ``eval/<key>``,
            an ``"images"`` entry (``{tag: uint8 [H, W, 3]}``) as TensorBoard images.
        jit_compile: XLA-compile the per-replica step.
        sync_bn: switch every BatchNormalization layer to synchronized statistics.
        progress: show a `tfreid.progress.Progress` bar per epoch (chief only).
        loss_scaling: ``"auto"`` wraps the optimizer in ``keras.optimizers.LossScaleOptimizer``
            when the global dtype policy is ``mixed_float16`` (float16 gradients underflow
            without it; bfloat16 has float32's exponent range and needs none); True/False force
            it on/off. An optimizer that already is a LossScaleOptimizer is kept as it is.
        epoch_hook: ``hook(model, epoch) -> bool`` called before each epoch (and the epoch a
            resumed run continues in); True means it changed the trainable variables and the
            step is retraced (e.g. `tfreid.engine.freeze.BackboneFreezer`).
        scalars_fn: ``fn() -> {tag: value}`` logged with every log window (e.g. the bad-image
            count); an exception it raises stops training.

    Attributes:
        model, optimizer (the LossScaleOptimizer wrapper when scaling), strategy, step
        (``tf.Variable`` int64, the global step), trace_count (how often the step function was
        traced), worker (a ``tfreid.engine.strategy.WorkerInfo``), is_chief.
    """

    def __init__(self, *, strategy: tf.distribute.Strategy, model_fn: Callable[[], keras.Model],
                 optimizer_fn: Callable[[], keras.optimizers.Optimizer],
                 loss_terms: list[LossTerm], output_dir: str, global_batch_size: int,
                 steps_per_epoch: int, epochs: int, max_steps: int | None = None,
                 checkpoint_every: int = 500, keep_checkpoints: int = 3, log_every: int = 20,
                 eval_every: int = 0,
                 evaluate_fn: Callable[[keras.Model], dict] | None = None,
                 jit_compile: bool = False, sync_bn: bool = False, progress: bool = True,
                 loss_scaling: bool | str = "auto", epoch_hook: Callable | None = None,
                 scalars_fn: Callable[[], dict] | None = None):
        if not isinstance(strategy, tf.distribute.Strategy):
            raise ValueError(f"`strategy` must be a tf.distribute.Strategy; received {strategy!r}.")
        _validate_terms(loss_terms)
        for name, value, minimum in (("global_batch_size", global_batch_size, 1),
                                     ("steps_per_epoch", steps_per_epoch, 1),
                                     ("epochs", epochs, 1),
                                     ("checkpoint_every", checkpoint_every, 0),
                                     ("keep_checkpoints", keep_checkpoints, 1),
                                     ("log_every", log_every, 1), ("eval_every", eval_every, 0)):
            check_int(name, value, minimum)
        check_int("max_steps", max_steps, allow_none=True)
        replicas = strategy.num_replicas_in_sync
        if global_batch_size % replicas:
            raise ValueError(f"`global_batch_size`={global_batch_size} is not divisible by the "
                             f"{replicas} replicas of the strategy.")
        for key, fn in (("evaluate_fn", evaluate_fn), ("epoch_hook", epoch_hook),
                        ("scalars_fn", scalars_fn)):
            if fn is not None and not callable(fn):
                raise ValueError(f"`{key}` must be callable or None; received {fn!r}.")
        if not output_dir:
            raise ValueError(f"`output_dir` must be a directory path; received {output_dir!r}.")
        if loss_scaling not in ("auto", True, False):
            raise ValueError("`loss_scaling` must be 'auto', True or False; received "
                             f"{loss_scaling!r}.")
        if loss_scaling == "auto":
            loss_scaling = keras.mixed_precision.global_policy().name == "mixed_float16"
        self.worker = worker_info(strategy)
        self.is_chief = self.worker.is_chief

        self.strategy = strategy
        self.loss_terms = list(loss_terms)
        self.output_dir = str(output_dir)
        self.global_batch_size = int(global_batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        total = self.epochs * self.steps_per_epoch
        self.total_steps = total if max_steps is None else min(total, int(max_steps))
        self.checkpoint_every, self.log_every = int(checkpoint_every), int(log_every)
        self.eval_every, self.evaluate_fn = int(eval_every), evaluate_fn
        self.progress = bool(progress) and self.is_chief
        self.jit_compile = bool(jit_compile)
        self.trace_count = 0
        self.epoch_hook, self.scalars_fn = epoch_hook, scalars_fn

        with strategy.scope():
            self.model = model_fn()
            if not isinstance(self.model, keras.Model):
                raise ValueError(f"`model_fn` must return a keras.Model; received {self.model!r}.")
            if sync_bn:
                enable_sync_batchnorm(self.model)
            self.optimizer = optimizer_fn()
            if not isinstance(self.optimizer, keras.optimizers.Optimizer):
                raise ValueError("`optimizer_fn` must return a keras.optimizers.Optimizer; "
                                 f"received {self.optimizer!r}.")
            if loss_scaling and not isinstance(self.optimizer,
                                               keras.optimizers.LossScaleOptimizer):
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            # Slot variables must exist before restore(), or their saved values would be
            # silently dropped (deferred restoration does not apply to Keras 3 optimizers).
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        # Stateful losses (center loss centres) resume with the model.
        stateful = {f"loss_{t.name}": t.fn for t in self.loss_terms if isinstance(t.fn, tf.Module)}
        chief_dir = os.path.join(self.output_dir, "checkpoints")
        self._tmp_ckpt_dir = None
        if self.is_chief:
            self._ckpt = CheckpointKeeper(chief_dir, self.model, self.optimizer, self.step,
                                          keep_checkpoints, extra=stateful)
        else:
            self._tmp_ckpt_dir = tempfile.mkdtemp(
                prefix=f"tfreid-{self.worker.task_type}{self.worker.task_id}-ckpt-")
            self._ckpt = CheckpointKeeper(self._tmp_ckpt_dir, self.model, self.optimizer,
                                          self.step, 1, extra=stateful, temporary=True,
                                          read_directory=chief_dir)
        self._names = [t.name for t in self.loss_terms]
        if self.model.losses:
            self._names.append("regularization")
        self._names.append("total")
        self._train_step = self._make_train_step()

    # ------------------------------------------------------------------ train step
    def _replica_step(self, images, labels):
        """Forward/backward on one replica's share of the global batch; returns stacked losses."""
        with tf.GradientTape() as tape:
            outputs = self.model(images, training=True)
            if not isinstance(outputs, dict):
                raise ValueError("the model must return a dict of outputs; received "
                                 f"{type(outputs).__name__}.")
            values, total = [], 0.0
            for term in self.loss_terms:
                if term.output_key not in outputs:
                    raise ValueError(f"LossTerm {term.name!r}: output_key {term.output_key!r} is "
                                     f"not a model output; available: {sorted(outputs)}.")
                prediction = outputs[term.output_key]
                # Softmax/log/norms of float16/bfloat16 outputs lose precision (and float16
                # exp overflows); losses always run in float32.
                if prediction.dtype.is_floating and prediction.dtype != tf.float32:
                    prediction = tf.cast(prediction, tf.float32)
                per_example = tf.cast(term.fn(labels, prediction), tf.float32)
                if per_example.shape.rank != 1:
                    raise ValueError(f"LossTerm {term.name!r}: fn must return per-example losses "
                                     f"of shape [batch]; received shape {per_example.shape}.")
                value = tf.nn.compute_average_loss(
                    per_example, global_batch_size=self.global_batch_size)
                values.append(value)
                total += float(term.weight) * value
            if self.model.losses:
                reg = tf.nn.scale_regularization_loss(
                    tf.add_n([tf.cast(x, tf.float32) for x in self.model.losses]))
                values.append(reg)
                total += reg
            values.append(total)
            scaled = self.optimizer.scale_loss(total)  # identity unless loss scaling is on
        variables = self.model.trainable_variables
        grads = tape.gradient(scaled, variables)
        if (isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
                and self.strategy.num_replicas_in_sync > 1):
            grads = self._poison_if_any_replica_overflowed(grads)
        # Keras 3 all-reduces (SUMs) the gradients across replicas inside apply_gradients, so
        # the per-replica gradients of the globally scaled loss are passed as they are.
        self.optimizer.apply_gradients(zip(grads, variables))
        return tf.stack(values)

    @staticmethod
    def _poison_if_any_replica_overflowed(grads):
        """Makes every replica see non-finite gradients if any replica has them.

        LossScaleOptimizer decides "skip this step and halve the scale" from the gradients it
        is given, which are still per-replica (Keras all-reduces later, inside the inner
        optimizer). If replicas disagreed, some would enter the all-reduce and others not —
        a deadlock across workers. One scalar all-reduce makes the decision global.
        """
        present = [g for g in grads if g is not None]
        bad = tf.add_n([tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(g)), tf.float32))
                        for g in present])
        bad = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, bad)
        poison = tf.where(bad > 0, tf.constant(float("nan")), tf.constant(0.0))
        return [None if g is None else g + tf.cast(poison, g.dtype) for g in grads]

    def _make_train_step(self):
        replica_fn = self._replica_step
        if self.jit_compile:
            replica_fn = tf.function(replica_fn, jit_compile=True)

        @tf.function
        def train_step(iterator):
            self.trace_count += 1  # Python side effect: runs only while tracing
            images, labels = next(iterator)
            per_replica = self.strategy.run(replica_fn, args=(images, labels))
            self.step.assign_add(1)
            # Each replica holds its share of the global mean: SUM gives the global mean.
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return train_step

    # ------------------------------------------------------------------ checkpoints
    def restore(self, checkpoint: str | None = None) -> int:
        """Restores model, optimizer state and step.

        Args:
            checkpoint: a checkpoint prefix (``.../ckpt-1200``), a directory holding checkpoints
                (its latest one is used), or ``None`` for the latest in
                ``<output_dir>/checkpoints``.

        Returns:
            The restored step; 0 if ``checkpoint`` is None and no checkpoint exists yet.

        Raises:
            FileNotFoundError: an explicit ``checkpoint`` path that does not exist.
        """
        return self._ckpt.restore(checkpoint)

    def save(self) -> str:
        """Saves a checkpoint at the current step (no-op if one exists for it); returns its path."""
        return self._ckpt.save()

    # ------------------------------------------------------------------ loop
    def fit(self, dataset_fn: Callable[[int], tf.data.Dataset]) -> TrainResult:
        """Trains from the current step to ``min(epochs * steps_per_epoch, max_steps)``.

        Args:
            dataset_fn: ``dataset_fn(start_step)`` -> (infinite) ``tf.data.Dataset`` of
                ``(images, labels)`` GLOBAL batches starting at batch ``start_step``.

        Returns:
            A :class:`TrainResult`.

        Raises:
            FloatingPointError: a loss became NaN/Inf (no checkpoint of those weights is saved).
            ValueError: the dataset does not yield ``(images, labels)`` global batches, or ends.
        """
        start = int(self.step.numpy())
        iterator = self._make_iterator(dataset_fn, start) if start < self.total_steps else None
        logger = (ScalarLogger(os.path.join(self.output_dir, "logs"), resume_step=start)
                  if self.is_chief else NullLogger())
        stop = StopSignals()
        run = RunningStats(len(self._names), warmup_steps=_WARMUP_STEPS)
        eval_metrics, evaluated_at = {}, None
        # Evaluation runs no collectives, so the other workers need not wait for it.
        evaluating = self.evaluate_fn is not None and self.is_chief
        step = start
        try:
            stop.install()
            progbar, current_epoch = None, None
            while step < self.total_steps and stop.name is None:
                epoch, pos = divmod(step, self.steps_per_epoch)
                if epoch != current_epoch:
                    current_epoch = epoch
                    if self.epoch_hook is not None and self.epoch_hook(self.model, epoch):
                        self._train_step = self._make_train_step()
                    run.new_epoch()
                    progbar = self._progbar(epoch, pos)
                t0 = time.perf_counter()
                try:
                    losses = self._train_step(iterator).numpy()
                except tf.errors.OutOfRangeError as err:
                    raise ValueError(f"dataset_fn({start}) ran out of batches at step {step + 1}; "
                                     "it must return an infinite (repeated) dataset.") from err
                step += 1
                run.record(losses, time.perf_counter() - t0, self.global_batch_size)
                self._check_finite(step, losses)
                if progbar is not None:
                    progbar.update(step - epoch * self.steps_per_epoch,
                                   **dict(zip(self._display_names(), losses.tolist())))
                if step % self.log_every == 0:
                    logger.log(step, self._window_scalars(run))
                epoch_end = step % self.steps_per_epoch == 0
                if epoch_end or (self.checkpoint_every and step % self.checkpoint_every == 0):
                    self._ckpt.save()
                if (epoch_end and self.eval_every and evaluating
                        and (step // self.steps_per_epoch) % self.eval_every == 0):
                    eval_metrics, evaluated_at = self._evaluate(logger, step), step
            if progbar is not None:
                progbar.close()  # the bar of an interrupted epoch does not end its line itself
            if run.window_steps:  # the last, partial log window
                logger.log(step, self._window_scalars(run))
            self._ckpt.save()
            if stop.name is None and evaluating and evaluated_at != step:
                eval_metrics = self._evaluate(logger, step)
        finally:
            stop.uninstall()
            logger.close()
            if self._tmp_ckpt_dir is not None:
                shutil.rmtree(self._tmp_ckpt_dir, ignore_errors=True)
        return TrainResult(steps=step, epochs=step / self.steps_per_epoch,
                           images_per_second=run.images_per_second(),
                           losses=run.epoch_means(self._names),
                           stopped_early=None if stop.name is None else f"signal {stop.name}",
                           eval_metrics=eval_metrics)

    def _make_iterator(self, dataset_fn, start):
        dataset = dataset_fn(start)
        if not isinstance(dataset, tf.data.Dataset):
            raise ValueError(f"dataset_fn({start}) must return a tf.data.Dataset; received "
                             f"{type(dataset).__name__}.")
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ValueError(f"dataset_fn({start}) must yield (images, labels) pairs; element_spec "
                             f"is {spec}.")
        batch = spec[0].shape[0] if spec[0].shape.rank else None
        if batch is not None and batch != self.global_batch_size:
            raise ValueError(f"dataset_fn({start}) yields batches of {batch} images but "
                             f"global_batch_size={self.global_batch_size}.")
        if self.worker.num_workers > 1:
            # Every worker builds the same global-batch sequence; DATA sharding (applied after
            # tf.distribute splits each global batch into per-replica slices) gives worker i the
            # i-th slice of every global batch, so the workers together see exactly the global
            # batch of a single-host run (identical weights). FILE sharding (AUTO's first
            # choice) would give each worker different files, i.e. a different sampler order.
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA)
            dataset = dataset.with_options(options)
        iterator = iter(self.strategy.experimental_distribute_dataset(dataset))
        # Building it pins glibc's mmap threshold at 128 KiB (TF's Python 3.11 patch): undo.
        keep_tensor_memory()
        return iterator

    def _check_finite(self, step, losses):
        bad = [name for name, v in zip(self._names, losses) if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(
                f"non-finite loss at step {step}: {', '.join(bad)} = "
                f"{[float(losses[self._names.index(b)]) for b in bad]}; training stopped, the "
                f"latest checkpoint ({self._ckpt.latest}) holds the last good weights.")

    def _display_names(self):
        return ["loss" if n == "total" else n for n in self._names]

    def _progbar(self, epoch, pos):
        if not self.progress:
            return None
        bar = Progress(self.steps_per_epoch, unit="step",
                       label=f"Epoch {epoch + 1}/{math.ceil(self.total_steps / self.steps_per_epoch)}")
        if pos:
            bar.update(pos)
        return bar

    def _window_scalars(self, run):
        scalars = {f"loss/{n}": v for n, v in zip(self._names, run.pop_window())}
        scalars["learning_rate"] = float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
        ips = run.window_images_per_second()
        if ips is not None:
            scalars["images_per_second"] = ips
        return {**scalars, **(self.scalars_fn() if self.scalars_fn else {})}

    def _evaluate(self, logger, step):
        metrics = self.evaluate_fn(self.model)
        if not isinstance(metrics, dict):
            raise ValueError(f"evaluate_fn must return a dict of metrics; received "
                             f"{type(metrics).__name__}.")
        metrics = dict(metrics)
        images = metrics.pop("images", None) or {}
        scalars = {}
        for key, value in metrics.items():
            if np.ndim(value) == 0 and isinstance(np.asarray(value).item(), (int, float)):
                scalars[f"eval/{key}"] = float(value)
        logger.log(step, scalars)
        logger.images(step, images)
        return metrics
