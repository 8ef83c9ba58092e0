"""Reading a finished (or interrupted) run directory back: config, network, checkpoint."""

from __future__ import annotations

import json
import pathlib

import tensorflow as tf

from tfreid import config as config_lib
from tfreid.engine.checkpoint import model_variables
from tfreid.models import build_model


def load_run(run_dir: str | pathlib.Path, checkpoint: str | None = None):
    """Rebuild a run's model and restore its weights.

    Args:
        run_dir: a directory written by `python -m tfreid.train`.
        checkpoint: a checkpoint prefix (e.g. `RUN/checkpoints/ckpt-12`); default the latest.

    Returns:
        `(config, model, checkpoint_path)`.
    """
    run_dir = pathlib.Path(run_dir)
    info_path, config_path = run_dir / "run.json", run_dir / "config.yaml"
    for path in (info_path, config_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {run_dir} a tfreid run directory "
                                    "(written by python -m tfreid.train)?")
    info = json.loads(info_path.read_text())
    cfg = config_lib.from_dict(config_lib.load_yaml(config_path), source=str(config_path))
    if checkpoint is None:
        checkpoint = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
        if checkpoint is None:
            raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}")
    elif not tf.io.gfile.exists(checkpoint + ".index"):
        raise FileNotFoundError(f"checkpoint {checkpoint} not found (expected "
                                f"{checkpoint}.index)")
    model = build_model(info["model"], info["num_classes"],
                        input_shape=(*info["input_size"], 3), **info.get("model_kwargs", {}))
    try:
        # Every model variable must come from the checkpoint (optimizer state may be ignored).
        status = tf.train.Checkpoint(model=model_variables(model)).read(checkpoint)
        status.expect_partial().assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError, IndexError, OSError) as err:
        # A truncated data file surfaces as IndexError/OSError from the reader.
        reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise ValueError(f"cannot restore checkpoint {checkpoint} into {info['model']} "
                         f"(corrupt, truncated, or written by another model/tfreid version): "
                         f"{reason}") from None
    return cfg, model, checkpoint
