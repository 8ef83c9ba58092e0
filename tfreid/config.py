"""Experiment configuration: dataclasses, YAML load/dump and `--set key=value` overrides.

One `Config` describes a run completely; `config.yaml` in a run directory is the resolved config,
so `python -m tfreid.train --config RUN/config.yaml` repeats a run. Resolution order:
model defaults (`default_config`) < YAML file < command-line flags < `--set` overrides.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import yaml


@dataclasses.dataclass
class ModelConfig:
    name: str = "hacnn"
    kwargs: dict = dataclasses.field(default_factory=dict)  # passed to build_model
    backbone_weights: str | None = None  # local ImageNet weights file; never downloaded


@dataclasses.dataclass
class DataConfig:
    dataset: str = "synthetic"
    root: str | None = None
    kwargs: dict = dataclasses.field(default_factory=dict)  # passed to build_dataset
    height: int = 160
    width: int = 64
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
    enabled: bool = True
    root: str = "saved_models"


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
        d = self.data
        for key in ("p", "k", "height", "width", "eval_batch_size"):
            if not isinstance(getattr(d, key), int) or getattr(d, key) < 1:
                raise ValueError(f"data.{key} must be a positive integer, got {getattr(d, key)!r}")
        if d.batch_size is not None and d.batch_size != d.p * d.k:
            raise ValueError(
                f"data.batch_size={d.batch_size} is not P*K = {d.p}*{d.k} = {d.p * d.k}; "
                "set data.p and data.k so that their product is the batch size"
            )
        _check_choice("data.on_bad_image", d.on_bad_image, ("error", "skip"))
        re_start = d.random_erasing_start_epoch
        if isinstance(re_start, bool) or not isinstance(re_start, int) or re_start < 0:
            raise ValueError(f"data.random_erasing_start_epoch must be an integer >= 0, got {re_start!r}")
        _check_choice("optim.name", self.optim.name, ("adam", "adamw", "sgd"))
        _check_choice("optim.schedule", self.optim.schedule, ("constant", "multistep", "cosine"))
        _check_choice("optim.weight_decay_mode", self.optim.weight_decay_mode, ("l2", "decoupled"))
        _check_choice("eval.metric", self.eval.metric, ("euclidean", "sqeuclidean", "cosine"))
        _check_choice("eval.protocol", self.eval.protocol, ("market", "cuhk03"))
        if self.optim.lr <= 0:
            raise ValueError(f"optim.lr must be > 0, got {self.optim.lr!r}")
        if self.train.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.train.epochs!r}")
        fb = self.train.freeze_backbone_epochs
        if isinstance(fb, bool) or not isinstance(fb, int) or fb < 0:
            raise ValueError(f"train.freeze_backbone_epochs must be an integer >= 0, got {fb!r}")
        if self.train.max_steps is not None and self.train.max_steps < 1:
            raise ValueError(f"train.max_steps must be >= 1, got {self.train.max_steps!r}")
        if self.train.replicas is not None and self.train.replicas < 1:
            raise ValueError(f"train.replicas must be >= 1, got {self.train.replicas!r}")
        if self.train.replicas and self.batch_size % self.train.replicas:
            raise ValueError(
                f"the global batch P*K = {self.batch_size} must divide evenly over "
                f"train.replicas={self.train.replicas}"
            )
        t = self.train
        if (t.worker_hosts is None) != (t.task_index is None):
            raise ValueError("train.worker_hosts and train.task_index must be given together, "
                             f"got worker_hosts={t.worker_hosts!r}, task_index={t.task_index!r}")
        if t.worker_hosts is not None:
            hosts = t.worker_hosts
            if (not isinstance(hosts, list) or not hosts
                    or not all(isinstance(h, str) and ":" in h for h in hosts)):
                raise ValueError("train.worker_hosts must be a non-empty list of 'host:port', "
                                 f"got {hosts!r}")
            if (isinstance(t.task_index, bool) or not isinstance(t.task_index, int)
                    or not 0 <= t.task_index < len(hosts)):
                raise ValueError(f"train.task_index must be an integer in [0, {len(hosts) - 1}] "
                                 f"(a position in train.worker_hosts), got {t.task_index!r}")
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
            if not isinstance(value, list):
                raise ValueError(f"{source}: {prefix}{name} must be a list of loss terms")
            value = [_build(LossTermConfig, dict(v), source, f"{prefix}{name}[{i}].")
                     for i, v in enumerate(value)]
        elif nested is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{source}: {prefix}{name} must be a mapping, got {value!r}")
            value = _build(nested, value, source, f"{prefix}{name}.")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ValueError(f"{source}: {prefix.rstrip('.') or 'config'}: {err}") from None


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


def _ce(name: str, output: str, smoothing: float = 0.0) -> dict:
    return {"name": name, "type": "cross_entropy", "output": output, "weight": 1.0,
            "kwargs": {"label_smoothing": smoothing}}


# Per-model defaults: the short recipe used on the built-in synthetic dataset. Paper recipes for
# the real benchmarks live in configs/*.yaml.
MODEL_DEFAULTS: dict[str, dict] = {
    # AANet on the synthetic set: the paper's model (6 OFA beside the last 6 blocks, 6 parts, AAM
    # with T_h = T_w = 0.3) and loss (6 part CE + improved TriHard + ACD summed over identities
    # (Eq. 7), alpha = beta = 1, plus CE on the holistic classifier whose CAMs AAM aligns),
    # P=10 K=3, flip, cosine retrieval. 96x48
    # input (6x3 last maps: one row per part) and a short warmed-up Adam schedule so the
    # from-scratch ResNet-50 (zero-init residuals) learns within the CPU budget. TriHard uses the
    # cosine distance here: from scratch, Eq. 9's pull term on Euclidean distances shrinks the
    # features to 0 (measured: |f| 1.2 -> 0.04, CE stuck at ln 200). Paper recipe:
    # configs/aanet_market1501.yaml.
    "aanet": {
        "model": {"name": "aanet"},
        "data": {"height": 96, "width": 48, "p": 10, "k": 3, "flip": True},
        "losses": [_ce(f"ce_part{z}", f"logits/part{z}") for z in range(1, 7)]
                  + [_ce("ce_global", "logits/global"),
                     {"name": "trihard", "type": "improved_trihard", "output": "features/global",
                      "weight": 1.0, "kwargs": {"margin": 0.3, "metric": "cosine"}},
                     {"name": "acd", "type": "attention_cosine_distance", "output": "alignment",
                      "weight": 1.0, "kwargs": {"sum_over_identities": True}}],
        "optim": {"name": "adam", "lr": 1e-3, "schedule": "cosine", "warmup_epochs": 0.5,
                  "warmup_start_lr": 1e-4},
        "train": {"epochs": 3},
        "eval": {"metric": "cosine"},
    },
    # ADFL (AF3-cat-1024-attn3-1sum) on the synthetic set: the paper's model, losses (CE +
    # batch-hard triplet, margin 0.3, on the backbone and on the fused head), P=8 K=4, flip +
    # pad + crop, flip test-time augmentation, linear warmup then x0.1 (Eq. 4's shape: epoch 1,
    # then after epoch 3 of 4). 64x32 input (the synthetic crops' 2:1 aspect; stage-3 maps are
    # 4x2), residual branches zero-initialised and Adam at 3e-3 so the from-scratch ResNet-50
    # learns within the CPU budget (at 1e-3 without zero-init, CE was still at ln(#ids) after
    # an epoch); no backbone freezing (it only protects ImageNet weights). Paper recipe:
    # configs/adfl_market1501.yaml.
    "adfl": {
        "model": {"name": "adfl"},
        "data": {"height": 64, "width": 32, "p": 8, "k": 4, "flip": True, "pad": 3},
        "losses": [_ce(f"ce_{h}", f"logits/{h}") for h in ("global", "fused")]
                  + [{"name": f"triplet_{h}", "type": "batch_hard_triplet", "output": f"features/{h}",
                      "weight": 1.0, "kwargs": {"margin": 0.3}} for h in ("global", "fused")],
        "optim": {"name": "adam", "lr": 3e-3, "weight_decay": 5e-4, "schedule": "multistep",
                  "milestones": [3], "warmup_epochs": 1, "warmup_start_lr": 3e-4},
        "train": {"epochs": 4, "freeze_backbone_epochs": 0},
        "eval": {"metric": "cosine", "flip": True},
    },
    # The ADFL strong baseline on the synthetic set: ADFL's recipe with the backbone head only.
    "baseline": {
        "model": {"name": "baseline"},
        "data": {"height": 64, "width": 32, "p": 8, "k": 4, "flip": True, "pad": 3},
        "losses": [_ce("ce_global", "logits/global"),
                   {"name": "triplet_global", "type": "batch_hard_triplet",
                    "output": "features/global", "weight": 1.0, "kwargs": {"margin": 0.3}}],
        "optim": {"name": "adam", "lr": 3e-3, "weight_decay": 5e-4, "schedule": "multistep",
                  "milestones": [3], "warmup_epochs": 1, "warmup_start_lr": 3e-4},
        "train": {"epochs": 4, "freeze_backbone_epochs": 0},
        "eval": {"metric": "cosine", "flip": True},
    },
    # CAN on the synthetic set: the paper's model and losses (CE on each of the 16 features,
    # batch-hard triplet and 5e-4 x center loss on the global and on the local features, summed),
    # P=8 K=4, cosine retrieval. 112x32 input (112 = the smallest height giving part-7 its 7
    # stripes: 7x2 stage-4 maps) and 2 epochs of warmed-up cosine Adam at 3e-3 so the from-scratch
    # ResNet-50 (4 copies of stage 4; residual branches zero-initialised) learns within the CPU
    # budget. Paper recipe: configs/can_market1501.yaml.
    "can": {
        "model": {"name": "can"},
        "data": {"height": 112, "width": 32, "p": 8, "k": 4, "flip": True},
        "losses": (
            [_ce(f"ce_{f}", f"logits/{f}") for f in
             ["global"] + [f"part{n}_{k}" for n in (3, 5, 7) for k in ["global", *range(1, n)]]]
            + [{"name": f"tri_{g}", "type": "batch_hard_triplet", "output": f"features/{g}_concat",
                "weight": 1.0, "kwargs": {"margin": 0.3, "metric": "sqeuclidean"}}
               for g in ("global", "local")]
            + [{"name": f"center_{g}", "type": "center_loss", "output": f"features/{g}_concat",
                "weight": 5e-4, "kwargs": {"feature_dim": dim, "alpha": 0.5}}
               for g, dim in (("global", 4 * 256), ("local", 12 * 256))]),
        "optim": {"name": "adam", "lr": 3e-3, "schedule": "cosine", "warmup_epochs": 0.5,
                  "warmup_start_lr": 3e-4},
        "train": {"epochs": 2},
        "eval": {"metric": "cosine"},
    },
    # CCAN on the synthetic set: the paper's losses (CE with label smoothing 0.1 + semi-hard
    # triplet r=10, margin 1.0, both branches) and Adam betas (0.9, 0.99); 128x64 input (resize
    # 144x72 + random crop, the paper's 288x144 -> 256x128 ratio) and a short warmed-up cosine
    # schedule so a from-scratch BN-Inception learns in minutes on a CPU. Paper recipes:
    # configs/ccan_*.yaml.
    "ccan": {
        "model": {"name": "ccan"},
        "data": {"height": 128, "width": 64, "p": 16, "k": 4, "flip": True, "crop_from": [144, 72]},
        "losses": [_ce("ce_global", "logits/global", 0.1),
                   {"name": "tri_global", "type": "semi_hard_triplet", "output": "features/global",
                    "weight": 1.0, "kwargs": {"margin": 1.0, "top_r": 10}},
                   _ce("ce_local", "logits/local", 0.1),
                   {"name": "tri_local", "type": "semi_hard_triplet", "output": "features/local",
                    "weight": 1.0, "kwargs": {"margin": 1.0, "top_r": 10}}],
        "optim": {"name": "adam", "lr": 1e-3, "beta_1": 0.9, "beta_2": 0.99, "schedule": "cosine",
                  "warmup_epochs": 1, "warmup_start_lr": 1e-4},
        "train": {"epochs": 4},
    },
    "hacnn": {
        "model": {"name": "hacnn"},
        "data": {"height": 160, "width": 64, "p": 16, "k": 4, "flip": True},
        "losses": [_ce("ce_global", "logits/global"), _ce("ce_local", "logits/local")],
        "optim": {"name": "adam", "lr": 3e-3, "schedule": "cosine", "warmup_epochs": 1,
                  "warmup_start_lr": 3e-4},
        "train": {"epochs": 4},
    },
}


def default_config(model: str) -> dict:
    """The default recipe for `model` as a nested dict (empty model section if unknown)."""
    base = Config().to_dict()
    base["model"]["name"] = model
    return merge(base, MODEL_DEFAULTS.get(model, {"model": {"name": model}}))


def resolve(model: str | None, config_path: str | None, flags: dict, overrides: list[str]) -> Config:
    """Resolve defaults < YAML < flags < --set into a validated Config."""
    data: dict = {}
    file_data = load_yaml(config_path) if config_path else {}
    name = model or file_data.get("model", {}).get("name") or "hacnn"
    data = default_config(name)
    data = merge(data, file_data)
    data = merge(data, flags)
    data = merge(data, parse_overrides(overrides))
    if model:
        data["model"]["name"] = model
    return from_dict(data, source=config_path or "config").validate()
