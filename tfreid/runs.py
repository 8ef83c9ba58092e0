"""The run directory: what `python -m tfreid.train` writes and what evaluation, export and the
pictures read back.

Layout::

    RUN/config.yaml          the resolved `tfreid.config.Config`
    RUN/run.json             what rebuilds the network: model, num_classes, input_size,
                             model_kwargs
    RUN/checkpoints/         ckpt-<step>: every model variable under its Keras path
                             (`model_variables`), plus optimizer and step while training
    RUN/logs/                TensorBoard events and scalars.jsonl (one JSON object per scalar)
    RUN/metrics_init.json    evaluation of the randomly initialised network
    RUN/metrics.json         final evaluation and training summary
    RUN/bad_images.txt       image files skipped while training (`on_bad_image: skip`), if any
    RUN/export/<model>/1/    the SavedModel written at the end of training (TF Serving layout;
                             `python -m tfreid.export --run RUN` adds versions and formats here,
                             `--to ROOT` publishes into a serving root instead)

TensorFlow and the model registry are imported only by the methods that need them, so reading
metrics and scalars stays light.

Example:
    >>> run = RunDir("runs/hacnn-synthetic-20250101-120000")
    >>> cfg, model, checkpoint = run.load()
    >>> run.read_scalars()["loss/total"][-1]
    (172, 1.93)
"""

from __future__ import annotations

import json
import math
import os
import pathlib

from tfreid import config as config_lib

__all__ = ["BAD_IMAGES_FILE", "CHECKPOINTS_DIR", "CONFIG_FILE", "EXPORT_DIR", "INFO_FILE", "LOGS_DIR",
           "METRICS_FILE", "METRICS_INIT_FILE", "SCALARS_FILE", "RunDir", "load_run",
           "model_variables", "read_json", "read_scalars", "scalar_line", "write_json"]

CONFIG_FILE = "config.yaml"
INFO_FILE = "run.json"
CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"
SCALARS_FILE = "scalars.jsonl"
METRICS_FILE = "metrics.json"
METRICS_INIT_FILE = "metrics_init.json"
BAD_IMAGES_FILE = "bad_images.txt"
EXPORT_DIR = "export"


def model_variables(model) -> dict:
    """Every variable of `model` keyed by its Keras path (e.g. ``stem.bn.moving_mean``).

    Checkpoints hold this dict rather than the model object: `tf.train.Checkpoint(model=model)`
    follows TF object tracking, which does not reach the sublayers of custom Keras 3 layers, so
    most weights (and every nested BN moving statistic) would silently be left out. Keys are the
    stable layer names, so a rebuilt model restores by name whatever the build order.
    """
    variables = {v.path.replace("/", "."): v for v in model.weights}
    if len(variables) != len(model.weights):
        paths = [v.path for v in model.weights]
        dupes = sorted({p for p in paths if paths.count(p) > 1})
        raise ValueError(f"model {model.name!r} has variables with the same path {dupes[:3]}; "
                         "give its layers unique names")
    return variables


def scalar_line(step: int, tag: str, value: float, wall_time: float) -> str:
    """One ``scalars.jsonl`` record (NaN/Inf become ``null``: JSON has no NaN literal)."""
    value = float(value)
    return json.dumps({"step": int(step), "tag": str(tag),
                       "value": value if math.isfinite(value) else None, "wall_time": wall_time})


def read_scalars(path) -> dict[str, list[tuple[int, float]]]:
    """Reads a ``scalars.jsonl`` file into ``{tag: [(step, value), ...]}`` in file order.

    Args:
        path: the ``scalars.jsonl`` file, or the log directory holding it.

    Returns:
        Mapping tag -> list of (step, value); ``null`` values come back as NaN.

    Raises:
        FileNotFoundError: no such file.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / SCALARS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"scalars file not found: {path} (expected a {SCALARS_FILE} "
                                "written by ScalarLogger, or its directory).")
    out: dict[str, list[tuple[int, float]]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a killed process; the rest of the file is intact
            value = float("nan") if rec["value"] is None else float(rec["value"])
            out.setdefault(rec["tag"], []).append((int(rec["step"]), value))
    return out


def _write_atomic(path, text: str) -> None:
    # temp + rename: a kill mid-write leaves the old file (or none), never a truncated one
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path, data) -> None:
    """Writes `data` as JSON to `path` atomically (temporary file, then rename)."""
    _write_atomic(path, json.dumps(data, indent=2))


def read_json(path):
    """The JSON in `path`; ValueError naming the file when it is empty or not valid JSON."""
    path = pathlib.Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError as err:
        what = "is empty" if not text.strip() else f"is not valid JSON ({err})"
        raise ValueError(f"{path} {what}; restore it or delete it (a run re-creates its JSON "
                         "files)") from None


class RunDir:
    """One run directory (see the module docstring for its files).

    Args:
        path: the directory (it need not exist until `create`).
    """

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def checkpoints(self) -> pathlib.Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def logs(self) -> pathlib.Path:
        return self.path / LOGS_DIR

    @property
    def export_root(self) -> pathlib.Path:
        """Export root inside the run (``export/``): what training and `tfreid.export` write
        unless told to publish elsewhere."""
        return self.path / EXPORT_DIR

    def relative(self, path) -> str:
        """`path` relative to the run directory when it lies inside it, else its file name: what
        export metadata records instead of the build machine's absolute paths."""
        path = pathlib.Path(path)
        try:
            return path.resolve().relative_to(self.path.resolve()).as_posix()
        except ValueError:
            return path.name

    # ------------------------------------------------------------------ writing
    @classmethod
    def create(cls, path, cfg, num_classes: int) -> "RunDir":
        """Writes ``config.yaml`` and ``run.json`` (what rebuilds the network) into `path`.

        Args:
            path: the run directory (created with its parents).
            cfg: the resolved `Config`; ``run.json`` takes the model name, input size and
                ``model.kwargs`` from it.
            num_classes: training identities (the classifiers' width).
        """
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        cfg.dump(run.path / CONFIG_FILE)
        write_json(run.path / INFO_FILE, {
            "model": cfg.model.name, "num_classes": int(num_classes),
            "input_size": [cfg.data.height, cfg.data.width], "model_kwargs": cfg.model.kwargs})
        return run

    def save_weights(self, model) -> str:
        """Saves `model`'s variables as a checkpoint in ``checkpoints/`` (the layout the trainer
        writes, without optimizer state); returns its prefix."""
        import tensorflow as tf

        return tf.train.Checkpoint(model=model_variables(model)).save(str(self.checkpoints / "ckpt"))

    def write_metrics(self, metrics: dict, init: bool = False) -> None:
        """Writes ``metrics.json`` (or ``metrics_init.json`` with `init`)."""
        write_json(self._metrics_path(init), metrics)

    def write_bad_images(self, paths) -> None:
        """Writes the skipped image files, one per line (nothing when there are none)."""
        if paths:
            _write_atomic(self.path / BAD_IMAGES_FILE, "".join(f"{p}\n" for p in paths))

    # ------------------------------------------------------------------ reading
    def _require(self, *names) -> None:
        for name in names:
            if not (self.path / name).is_file():
                raise FileNotFoundError(f"{self.path / name} not found: is {self.path} a tfreid "
                                        "run directory (written by python -m tfreid.train)?")

    def config(self):
        """The run's resolved `Config`."""
        self._require(CONFIG_FILE)
        path = self.path / CONFIG_FILE
        return config_lib.from_dict(config_lib.load_yaml(path), source=str(path))

    def info(self) -> dict:
        """``run.json``: ``model``, ``num_classes``, ``input_size``, ``model_kwargs``."""
        self._require(INFO_FILE)
        info = read_json(self.path / INFO_FILE)
        if not isinstance(info, dict) or not {"model", "num_classes", "input_size"} <= set(info):
            raise ValueError(f"{self.path / INFO_FILE}: expected a JSON object with model, "
                             f"num_classes and input_size, got {str(info)[:80]}")
        return info

    def _metrics_path(self, init: bool) -> pathlib.Path:
        return self.path / (METRICS_INIT_FILE if init else METRICS_FILE)

    def has_metrics(self, init: bool = False) -> bool:
        return self._metrics_path(init).is_file()

    def read_metrics(self, init: bool = False) -> dict:
        """``metrics.json`` (or ``metrics_init.json`` with `init`); {} when it does not exist."""
        path = self._metrics_path(init)
        return read_json(path) if path.is_file() else {}

    def read_scalars(self) -> dict[str, list[tuple[int, float]]]:
        """The run's ``logs/scalars.jsonl`` (see `read_scalars`)."""
        return read_scalars(self.logs / SCALARS_FILE)

    def read_bad_images(self) -> list[str]:
        """The image files skipped while training ([] when none were)."""
        path = self.path / BAD_IMAGES_FILE
        return path.read_text().splitlines() if path.is_file() else []

    def latest_checkpoint(self) -> str | None:
        """Prefix of the latest checkpoint in ``checkpoints/``, or None."""
        import tensorflow as tf

        return tf.train.latest_checkpoint(str(self.checkpoints))

    def checkpoint(self, checkpoint: str | None = None) -> str:
        """`checkpoint` checked to exist, or the latest one.

        Raises:
            FileNotFoundError: no such checkpoint (or none at all).
        """
        import tensorflow as tf

        if checkpoint is None:
            checkpoint = self.latest_checkpoint()
            if checkpoint is None:
                raise FileNotFoundError(f"no checkpoint in {self.checkpoints}")
        elif not tf.io.gfile.exists(checkpoint + ".index"):
            raise FileNotFoundError(f"checkpoint {checkpoint} not found (expected "
                                    f"{checkpoint}.index)")
        return checkpoint

    def build_model(self):
        """The run's network, freshly initialised (as ``run.json`` describes it)."""
        from tfreid.models import build_model

        info = self.info()
        return build_model(info["model"], info["num_classes"],
                           input_shape=(*info["input_size"], 3), **info.get("model_kwargs", {}))

    def load(self, checkpoint: str | None = None):
        """Rebuilds the run's model and restores its weights.

        Args:
            checkpoint: a checkpoint prefix (e.g. ``RUN/checkpoints/ckpt-12``); default the
                latest.

        Returns:
            ``(config, model, checkpoint_path)``.

        Raises:
            FileNotFoundError: not a run directory, or no such checkpoint.
            ValueError: the checkpoint cannot be restored into the model.
        """
        import tensorflow as tf

        self._require(INFO_FILE, CONFIG_FILE)
        cfg = self.config()
        checkpoint = self.checkpoint(checkpoint)
        model = self.build_model()
        try:
            # Every model variable must come from the checkpoint (optimizer state may be ignored).
            status = tf.train.Checkpoint(model=model_variables(model)).read(checkpoint)
            status.expect_partial().assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError, IndexError, OSError) as err:
            # A truncated data file surfaces as IndexError/OSError from the reader.
            reason = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
            raise ValueError(f"cannot restore checkpoint {checkpoint} into {self.info()['model']} "
                             f"(corrupt, truncated, or written by another model/tfreid version): "
                             f"{reason}") from None
        return cfg, model, checkpoint


def load_run(run_dir, checkpoint: str | None = None):
    """`RunDir(run_dir).load(checkpoint)`: ``(config, model, checkpoint_path)``."""
    return RunDir(run_dir).load(checkpoint)
