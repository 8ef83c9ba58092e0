"""Crash-safe training checkpoints (model + optimizer + step) for the Trainer.

A ``kill -9`` at any moment never leaves the *latest* checkpoint unreadable, because of the order
in which TensorFlow writes (TF 2.21, ``tf.train.CheckpointManager.save``):

1. ``Checkpoint._write`` writes the shards to ``<prefix>_temp/part-*`` and merges/renames them into
   ``<prefix>.index`` / ``<prefix>.data-*`` (``MergeV2Checkpoints``);
2. only then a write callback records the new prefix in the ``checkpoint`` state file with
   ``file_io.atomic_write_string_to_file`` (write ``checkpoint.tmp<uuid>``, then ``rename``);
3. old checkpoints beyond ``max_to_keep`` are deleted *after* the state file names the new one.

A kill before step 2 leaves the state file pointing at the previous, complete checkpoint; stray
``ckpt-*_temp`` directories are deleted when the next keeper starts, half-written files of the new
prefix are ignored (and overwritten by the next save of that step). This covers process kills, not power loss (TF does not fsync).
``tests/engine/test_trainer.py`` kills a training process with SIGKILL and resumes from it.

Example:
    >>> keeper = CheckpointKeeper("run/checkpoints", model, optimizer, step, keep=3)
    >>> keeper.save()
    'run/checkpoints/ckpt-0'

Multi-worker: ``MultiWorkerMirroredStrategy`` needs every worker to call ``save`` (saving may
run collective ops), but only the chief's files are kept. Non-chief workers use
``temporary=True`` (their files are deleted right after each save) and ``read_directory`` (the
chief's checkpoint folder, on a shared filesystem) to resume.
"""

from __future__ import annotations

import os
import shutil

import tensorflow as tf

from tfreid.runs import model_variables

__all__ = ["CheckpointKeeper"]


class CheckpointKeeper:
    """``tf.train.Checkpoint(model, optimizer, step)`` + a ``CheckpointManager`` numbered by step.

    Args:
        directory: where checkpoints live (created on first save).
        model: the Keras model.
        optimizer: the Keras optimizer, already built (slot variables created).
        step: the int64 global-step ``tf.Variable``; checkpoints are named ``ckpt-<step>``.
        keep: how many checkpoints to keep.
        extra: more trackables to save alongside, by name (e.g. a center loss' centres).
        temporary: delete ``directory`` after every save (non-chief multi-worker processes).
        read_directory: where :meth:`restore` looks for the latest checkpoint (default:
            ``directory``); a non-chief worker reads the chief's folder.
    """

    def __init__(self, directory, model, optimizer, step, keep: int = 3, extra=None,
                 temporary: bool = False, read_directory=None):
        self.directory = str(directory)
        self.read_directory = str(read_directory or directory)
        self.temporary = bool(temporary)
        self.step = step
        self.checkpoint = tf.train.Checkpoint(model=model_variables(model), optimizer=optimizer,
                                              step=step,
                                              **(extra or {}))
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory,
                                                  max_to_keep=int(keep))
        self._saved_step = None
        if not self.temporary:
            self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        # A kill during a save leaves <prefix>_temp/ shards that no later save of another step
        # would overwrite; the state file never names them, so they are safe to delete.
        if os.path.isdir(self.directory):
            for entry in os.scandir(self.directory):
                if entry.is_dir() and entry.name.startswith("ckpt-") and entry.name.endswith("_temp"):
                    shutil.rmtree(entry.path, ignore_errors=True)

    @property
    def latest(self) -> str | None:
        """Path prefix of the latest complete checkpoint, or None."""
        if self.temporary:
            return tf.train.latest_checkpoint(self.read_directory)
        return self.manager.latest_checkpoint

    def save(self) -> str:
        """Saves ``ckpt-<step>`` unless this keeper already saved/restored that step.

        Returns:
            The checkpoint prefix for the current step.
        """
        step = int(self.step.numpy())
        # Re-saving the step we restored from would rewrite the latest checkpoint's files in
        # place — the one window where a kill could damage the checkpoint we resume from.
        if self._saved_step == step and (self.temporary or self.latest is not None):
            return self.latest
        path = self.manager.save(checkpoint_number=step)
        self._saved_step = step
        if self.temporary:
            shutil.rmtree(self.directory, ignore_errors=True)
        return path

    def restore(self, checkpoint: str | None = None) -> int:
        """Restores from ``checkpoint`` (prefix or directory) or the latest one; returns the step.

        Raises:
            FileNotFoundError: an explicit ``checkpoint`` that names no checkpoint.
            ValueError: the checkpoint does not match the model/optimizer (architecture changed).
        """
        if checkpoint is None:
            path = tf.train.latest_checkpoint(self.read_directory)
            if path is None:
                return 0
        elif os.path.isdir(str(checkpoint)):
            path = tf.train.latest_checkpoint(str(checkpoint))
            if path is None:
                raise FileNotFoundError(f"`checkpoint` directory {checkpoint} holds no checkpoint "
                                        "(expected a `checkpoint` state file and ckpt-N files).")
        else:
            path = str(checkpoint)
            if not tf.io.gfile.exists(path + ".index"):
                raise FileNotFoundError(f"`checkpoint` {path} not found (expected the prefix of "
                                        f"{path}.index and {path}.data-* files).")
        status = self.checkpoint.restore(path)
        try:
            status.assert_existing_objects_matched()
        except AssertionError as err:
            raise ValueError(f"checkpoint {path} does not match the model/optimizer being "
                             f"restored: {err}") from err
        step = int(self.step.numpy())
        self._saved_step = step
        return step
