"""Logging for training runs: TensorBoard event files plus a JSON-lines mirror of the scalars.

:class:`ScalarLogger` writes every scalar to ``<logdir>/events.out.tfevents.*`` (``tf.summary``)
and appends it to ``<logdir>/scalars.jsonl`` as
``{"step": int, "tag": str, "value": float, "wall_time": float}`` (``tfreid.runs.scalar_line``),
so plotting tools read curves without the TensorBoard reader (``tfreid.runs.read_scalars``).
Images (ranked lists, attention), text (the resolved config) and hparams go to TensorBoard only
(`ScalarLogger.images`, `.text`, `.hparams`; open with ``tensorboard --logdir runs/``).
:class:`RunningStats` keeps the per-step losses/timings the trainer logs as window means.

Example:
    >>> logger = ScalarLogger("runs/hacnn/logs")
    >>> logger.log(20, {"loss/total": 6.1, "learning_rate": 5e-4})
    >>> logger.close()
    >>> tfreid.runs.read_scalars("runs/hacnn/logs/scalars.jsonl")["loss/total"]
    [(20, 6.1)]
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import tensorflow as tf

from tfreid.runs import SCALARS_FILE, scalar_line

__all__ = ["ScalarLogger", "NullLogger", "RunningStats"]

# `tf.summary.scalar` needs the `tensorboard` pip package (not a dependency of tensorflow-cpu
# 2.21). This metadata is exactly what tensorboard's scalar v2 op attaches (plugin "scalars",
# empty ScalarPluginData v0, DATA_CLASS_SCALAR = 1), so TensorBoard reads the files unchanged.
_SCALAR_METADATA = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars", content=b""),
    data_class=1)


class ScalarLogger:
    """Writes named scalars to TensorBoard and to ``scalars.jsonl`` in the same directory.

    Args:
        logdir: directory for the event file and ``scalars.jsonl`` (created if missing). An
            existing ``scalars.jsonl`` is appended to, so a resumed run continues the same curve.
        resume_step: the step a resumed run restarts from: rows logged after it (by the
            interrupted run, whose later steps were rolled back) are dropped from
            ``scalars.jsonl`` so the re-run steps are not in the curve twice.
    """

    def __init__(self, logdir: str, resume_step: int | None = None):
        if not isinstance(logdir, (str, os.PathLike)) or not str(logdir):
            raise ValueError(f"`logdir` must be a directory path; received {logdir!r}.")
        self.logdir = str(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        path = os.path.join(self.logdir, SCALARS_FILE)
        if resume_step is not None and os.path.isfile(path):
            _drop_rows_after(path, resume_step)
        self._writer = tf.summary.create_file_writer(self.logdir)
        self._jsonl = open(path, "a", encoding="utf-8")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Writes ``scalars`` (tag -> number) at ``step``; flushes both files.

        Args:
            step: global training step the values belong to.
            scalars: tag -> value. Values must be real numbers (NaN/Inf are written as-is to
                TensorBoard and as ``null`` in the JSON file, which has no NaN literal).
        """
        if self._jsonl is None:
            raise RuntimeError("ScalarLogger.log() called after close().")
        wall_time = time.time()
        lines = []
        with self._writer.as_default(step=int(step)):
            for tag, value in scalars.items():
                value = float(value)
                tf.summary.write(tag, tf.constant(value, tf.float32),
                                 metadata=_SCALAR_METADATA)
                lines.append(scalar_line(step, tag, value, wall_time))
        self._writer.flush()
        if lines:
            self._jsonl.write("\n".join(lines) + "\n")
            self._jsonl.flush()

    def images(self, step: int, images: dict[str, np.ndarray]) -> None:
        """Writes each uint8 ``[H, W, 3]`` picture of `images` (tag -> array) at `step`."""
        with self._writer.as_default(step=int(step)):
            for tag, image in images.items():
                tf.summary.image(tag, np.asarray(image, np.uint8)[None], max_outputs=1)
        self._writer.flush()

    def text(self, step: int, tag: str, text: str) -> None:
        """Writes `text` (Markdown; TensorBoard's Text tab) under `tag` at `step`."""
        with self._writer.as_default(step=int(step)):
            tf.summary.text(tag, tf.constant(text))
        self._writer.flush()

    def hparams(self, hparams: dict) -> None:
        """Records the run's hyperparameters (TensorBoard's HParams tab); values are numbers,
        booleans or strings."""
        from tensorboard.plugins.hparams import api as hp

        with self._writer.as_default(step=0):
            hp.hparams(hparams)
        self._writer.flush()

    def close(self) -> None:
        """Flushes and closes both files (idempotent)."""
        if self._jsonl is not None:
            self._writer.flush()
            self._writer.close()
            self._jsonl.close()
            self._jsonl = None


def _drop_rows_after(path: str, step: int) -> None:
    """Rewrites ``scalars.jsonl`` without the rows of steps > `step` (and torn lines), atomically."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a killed process
    if len(kept) != len(lines):
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, path)


class NullLogger:
    """A :class:`ScalarLogger` stand-in that writes nothing (non-chief multi-worker processes)."""

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Discards ``scalars``."""

    def images(self, step: int, images: dict) -> None:
        """Discards ``images``."""

    def close(self) -> None:
        """Nothing to close."""


class RunningStats:
    """Per-fit bookkeeping: loss sums per log window / epoch, and timed post-warm-up steps.

    Args:
        n: number of loss values recorded per step.
        warmup_steps: leading steps left out of the images/s figures (tracing, XLA compile).
    """

    def __init__(self, n: int, warmup_steps: int = 2):
        self.n, self.steps, self.warmup_steps = n, 0, int(warmup_steps)
        self.window, self.window_steps = np.zeros(n), 0
        self.epoch, self.epoch_steps = np.zeros(n), 0
        self.timed_images, self.timed_seconds = 0, 0.0
        self.win_images, self.win_seconds = 0, 0.0

    def new_epoch(self):
        """Starts a new epoch's loss means (the window and timing carry on)."""
        self.epoch[:], self.epoch_steps = 0.0, 0

    def record(self, losses, seconds, images):
        """Adds one step: its loss vector, wall seconds of the step call, images processed."""
        self.steps += 1
        self.window += losses
        self.epoch += losses
        self.window_steps += 1
        self.epoch_steps += 1
        if self.steps > self.warmup_steps:
            self.timed_images += images
            self.timed_seconds += seconds
            self.win_images += images
            self.win_seconds += seconds

    def pop_window(self):
        """Mean losses over the steps since the last call; resets the window."""
        means = (self.window / max(self.window_steps, 1)).tolist()
        self.window[:], self.window_steps = 0.0, 0
        return means

    def window_images_per_second(self):
        """Images/s over the timed steps since the last call (None if none was timed)."""
        ips = self.win_images / self.win_seconds if self.win_seconds > 0 else None
        self.win_images, self.win_seconds = 0, 0.0
        return ips

    def images_per_second(self):
        """Images/s over all timed (post-warm-up) steps; 0.0 if none."""
        return self.timed_images / self.timed_seconds if self.timed_seconds > 0 else 0.0

    def epoch_means(self, names):
        """``{name: mean}`` over the current epoch's steps ({} if none ran)."""
        if not self.epoch_steps:
            return {}
        return dict(zip(names, (self.epoch / self.epoch_steps).tolist()))
