"""Experiment configuration: dataclasses, YAML load/dump and `--set key=value` overrides.

One `Config` describes a run completely; `config.yaml` in a run directory is the resolved config,
so `python -m tfreid.train --config RUN/config.yaml` repeats a run. Resolution order:
the model's default recipe (`default_config`: `tfreid/recipes/<model>.yaml`) < YAML file <
command-line flags < `--set` overrides.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import yaml

from tfreid.checks import check_int, check_worker_hosts


@dataclasses.dataclass
class ModelConfig:
    name: str = "hacnn"
    kwargs: dict = dataclasses.field(default_factory=dict)  # passed to build_model
    backbone_weights: str | None = None  # local ImageNet weights file, or "imagenet" (cached download)


@dataclasses.dataclass
class DataConfig:
    dataset: str = "synthetic"
    root: str | None = None
    kwargs: dict = dataclasses.field(default_factory=dict)  # passed to build_dataset
    height: int = 160
    width: int = 64
    sampler: str = "pk"  # pk: P identities x K images | random: shuffled batches of p*k images
    p: int = 8  # identities per batch
    k: int = 4  # images per identity
    batch_size: int | None = None  # optional; must equal p * k when given
    flip: bool = True
    pad: int = 0
    crop_from: list[int] | None = None  # [h, w]: resize to this, then random-crop the input size
    random_erasing: float = 0.0
    random_erasing_start_epoch: int = 0  # erasing only from this epoch on (CCAN: 50)
    color_jitter: float = 0.0
    on_bad_image: str = "error"  # error | skip
    max_bad_fraction: float = 0.05  # skip: more unreadable images than this share of a split stop
    eval_batch_size: int = 128


@dataclasses.dataclass
class LossTermConfig:
    name: str
    type: str  # a key of tfreid.losses.LOSSES
    output: str  # key of the model's output dict
    weight: float = 1.0
    kwargs: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class OptimConfig:
    name: str = "adam"  # adam | adamw | sgd
    lr: float = 5e-4
    weight_decay: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "constant"  # constant | multistep | cosine
    milestones: list[float] = dataclasses.field(default_factory=list)  # epochs
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    warmup_start_lr: float = 0.0
    clipnorm: float | None = None
    # l2: wd * w added to the gradient (PyTorch/Caffe, the papers); decoupled: Keras/AdamW-style.
    # Either way kernels only (no BN parameters, biases or scalars).
    weight_decay_mode: str = "decoupled"
    # [{pattern: REGEX on variable paths, lr/schedule/milestones/gamma/warmup_*: overrides}, ...]
    lr_groups: list[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 60
    max_steps: int | None = None
    seed: int = 0
    replicas: int | None = None
    sync_bn: bool = False
    jit: bool = False
    mixed_precision: bool = False
    deterministic: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 20
    eval_every: int = 0  # epochs; 0 = only at the end
    eval_at_start: bool = True  # evaluate the random-init network for reference
    freeze_backbone_epochs: int = 0  # ResNet-50 backbone untrainable for the first N epochs
    # Multi-worker: the same "host:port" list on every worker (worker 0 is the chief) and this
    # worker's index in it; alternatively set TF_CONFIG in the environment.
    worker_hosts: list[str] | None = None
    task_index: int | None = None


@dataclasses.dataclass
class EvalConfig:
    metric: str = "euclidean"  # euclidean | sqeuclidean | cosine
    rerank: bool = False
    flip: bool = False
    max_rank: int = 50
    protocol: str = "market"  # market | cuhk03


@dataclasses.dataclass
class ExportConfig:
    # The SavedModel goes into the run directory (RUN/export/); publishing to a serving root
    # is a separate, explicit step (python -m tfreid.export --run RUN --to ROOT).
    enabled: bool = True


@dataclasses.dataclass
class Config:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    losses: list[LossTermConfig] = dataclasses.field(default_factory=list)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    output_dir: str | None = None

    @property
    def batch_size(self) -> int:
        return self.data.p * self.data.k

    def validate(self) -> "Config":
        """Raise ValueError naming the offending key when the config cannot run."""
        d, t = self.data, self.train
        for key in ("p", "k", "height", "width", "eval_batch_size"):
            check_int(f"data.{key}", getattr(d, key))
        for key, minimum in (("seed", 0), ("checkpoint_every", 0), ("keep_checkpoints", 1),
                             ("log_every", 1), ("eval_every", 0)):
            check_int(f"train.{key}", getattr(t, key), minimum)
        if not 0 <= d.max_bad_fraction <= 1:
            raise ValueError(f"data.max_bad_fraction must lie in [0, 1], got {d.max_bad_fraction!r}")
        if d.batch_size is not None and d.batch_size != d.p * d.k:
            raise ValueError(
                f"data.batch_size={d.batch_size} is not P*K = {d.p}*{d.k} = {d.p * d.k}; "
                "set data.p and data.k so that their product is the batch size"
            )
        _check_choice("data.on_bad_image", d.on_bad_image, ("error", "skip"))
        _check_choice("data.sampler", d.sampler, ("pk", "random"))
        check_int("data.random_erasing_start_epoch", d.random_erasing_start_epoch, 0)
        _check_choice("optim.name", self.optim.name, ("adam", "adamw", "sgd"))
        _check_choice("optim.schedule", self.optim.schedule, ("constant", "multistep", "cosine"))
        _check_choice("optim.weight_decay_mode", self.optim.weight_decay_mode, ("l2", "decoupled"))
        _check_choice("eval.metric", self.eval.metric, ("euclidean", "sqeuclidean", "cosine"))
        _check_choice("eval.protocol", self.eval.protocol, ("market", "cuhk03"))
        if not self.optim.lr > 0:  # NaN too
            raise ValueError(f"optim.lr must be > 0, got {self.optim.lr!r}")
        check_int("train.epochs", t.epochs)
        check_int("train.freeze_backbone_epochs", t.freeze_backbone_epochs, 0)
        check_int("train.max_steps", t.max_steps, allow_none=True)
        check_int("train.replicas", t.replicas, allow_none=True)
        if t.replicas and self.batch_size % t.replicas:
            raise ValueError(
                f"the global batch P*K = {self.batch_size} must divide evenly over "
                f"train.replicas={t.replicas}"
            )
        check_worker_hosts(t.worker_hosts, t.task_index, "train.worker_hosts", "train.task_index")
        if not self.losses:
            raise ValueError("the config has no loss terms (losses: [...])")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def dump(self, path: str | pathlib.Path) -> None:
        pathlib.Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def from_dict(data: dict, source: str = "config") -> Config:
    """Build a Config from nested dicts, rejecting unknown keys (typos) with their path."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    return _build(Config, data, source, "")


def _build(cls, data: dict, source: str, prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"{source}: unknown key '{prefix}{unknown[0]}'; valid keys under "
            f"{prefix or 'the top level'}: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        nested = _NESTED.get((cls, name))
        if nested is LossTermConfig:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ValueError(f"{source}: {prefix}{name} must be a list of loss terms "
                                 f"(mappings with name, type, output), got {value!r:.80}")
            value = [_build(LossTermConfig, v, source, f"{prefix}{name}[{i}].")
                     for i, v in enumerate(value)]
        elif nested is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{source}: {prefix}{name} must be a mapping, got {value!r:.80}")
            value = _build(nested, value, source, f"{prefix}{name}.")
        else:
            value = _typed(f"{source}: {prefix}{name}", value, fields[name].type)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ValueError(f"{source}: {prefix.rstrip('.') or 'config'}: {err}") from None


def _typed(key: str, value: Any, annotation: str) -> Any:
    """`value` checked against a field's annotation (e.g. ``"list[int] | None"``).

    Numeric strings are accepted for float fields: PyYAML reads ``5e-4`` (no dot) as a string.
    """
    for kind in annotation.replace(" ", "").split("|"):
        if kind == "None" and value is None:
            return None
        if kind == "float" and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                continue
        if kind.startswith("list[") and isinstance(value, list):
            return [_typed(f"{key}[{i}]", v, kind[5:-1]) for i, v in enumerate(value)]
        if _is_a(value, kind):
            return float(value) if kind == "float" else value
    raise ValueError(f"{key} must be {annotation.replace('|', 'or')}, got {value!r:.80} "
                     f"({type(value).__name__})")


def _is_a(value: Any, kind: str) -> bool:
    if isinstance(value, bool):  # bool is an int subclass; accepted only where bool is declared
        return kind == "bool"
    types = {"int": int, "float": (int, float), "str": str, "bool": bool, "dict": dict, "Any": object}
    return kind in types and isinstance(value, types[kind])


_NESTED = {
    (Config, "model"): ModelConfig,
    (Config, "data"): DataConfig,
    (Config, "losses"): LossTermConfig,
    (Config, "optim"): OptimConfig,
    (Config, "train"): TrainConfig,
    (Config, "eval"): EvalConfig,
    (Config, "export"): ExportConfig,
}


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; lists and scalars in `update` replace those in `base`."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif isinstance(value, dict) and out.get(key) is not None:
            # Replacing it would silently turn e.g. `data: 5` into the defaults.
            raise ValueError(f"config: {key} must be a mapping, got {out[key]!r:.80}")
        else:
            out[key] = value
    return out


def load_yaml(path: str | pathlib.Path) -> dict:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


def parse_overrides(items: list[str]) -> dict:
    """Turn `["optim.lr=1e-3", "data.p=16"]` into a nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value (e.g. optim.lr=3e-4), got {item!r}")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


# The default recipe of each built-in model: `tfreid/recipes/<model>.yaml` (packaged).
RECIPES_DIR = pathlib.Path(__file__).parent / "recipes"
_RECIPES: dict[str, pathlib.Path] = {}


def register_recipe(model: str, path: str | pathlib.Path) -> None:
    """Use the YAML file `path` as the default recipe of `model` (a model registered outside
    tfreid; `tfreid.models.register_model(..., recipe=path)` calls this)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe of model {model!r} not found: {path}")
    _RECIPES[model] = path


def recipe_path(model: str) -> pathlib.Path | None:
    """The default recipe file of `model`, or None if it has none."""
    path = _RECIPES.get(model, RECIPES_DIR / f"{model}.yaml")
    return path if path.is_file() else None


def default_config(model: str) -> dict:
    """The default recipe for `model` as a nested dict (empty model section if it has none)."""
    base = Config().to_dict()
    base["model"]["name"] = model
    path = recipe_path(model)
    return merge(base, load_yaml(path) if path else {"model": {"name": model}})


def resolve(model: str | None, config_path: str | None, flags: dict, overrides: list[str]) -> Config:
    """Resolve defaults < YAML < flags < --set into a validated Config."""
    data: dict = {}
    file_data = load_yaml(config_path) if config_path else {}
    section = file_data.get("model")
    name = model or (section.get("name") if isinstance(section, dict) else None) or "hacnn"
    data = default_config(name)
    data = merge(data, file_data)
    data = merge(data, flags)
    data = merge(data, parse_overrides(overrides))
    if model and isinstance(data["model"], dict):  # else from_dict names the bad section
        data["model"]["name"] = model
    return from_dict(data, source=config_path or "config").validate()
