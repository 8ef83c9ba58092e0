"""`python -m tfreid.train --model hacnn`: train, evaluate and export a ReID model.

With no dataset it trains on the built-in synthetic ReID set (generated once, cached), so the
command works on a fresh machine. See `--help` and README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys

from tfreid import config as config_lib
from tfreid.cli import HelpFormatter, add_quiet, quiet_tensorflow, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tfreid.train", description="Train a ReID model end to end.",
        formatter_class=HelpFormatter,
        epilog="Flags without a stated default take the recipe's value: the model's default "
               "recipe (tfreid/recipes/<model>.yaml) < --config < flags < --set.")
    parser.add_argument("--model", help="model name: hacnn, ccan, can, adfl, aanet, baseline "
                                        "(default: the --config file's)")
    parser.add_argument("--config", help="YAML recipe, e.g. configs/hacnn_market1501.yaml "
                                         "(default: the model's default recipe)")
    parser.add_argument("--dataset", help="dataset name (default: synthetic)")
    parser.add_argument("--data-root", help="dataset folder (default: the synthetic set's cache)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override any config key, e.g. optim.lr=1e-3; "
                                                  "repeatable (default: none)")
    parser.add_argument("--output", help="run directory (default: runs/<model>-<dataset>-<time>)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    parser.add_argument("--max-steps", type=int,
                        help="stop after this many steps (default: the recipe's, usually none)")
    parser.add_argument("--replicas", type=int,
                        help="replicas; on a CPU-only machine N splits the CPU into N devices "
                             "(default: all GPUs, or 1 CPU device)")
    parser.add_argument("--seed", type=int, help="random seed (default: the recipe's)")
    parser.add_argument("--eval-every", type=int,
                        help="evaluate every N epochs and print the table; 0: at the end only "
                             "(default: the recipe's)")
    parser.add_argument("--sync-bn", action="store_true", help="synchronized BatchNorm")
    parser.add_argument("--jit", action="store_true", help="XLA-compile the train step")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="mixed_float16 + loss scaling on GPU, mixed_bfloat16 on CPU")
    parser.add_argument("--worker-hosts", metavar="HOST:PORT,HOST:PORT",
                        help="multi-worker training: all workers' addresses, same order on "
                             "every worker (worker 0 is the chief); or set TF_CONFIG instead "
                             "(default: one machine)")
    parser.add_argument("--task-index", type=int, help="this worker's position in --worker-hosts (default: TF_CONFIG's)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output (or the latest matching run)")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    parser.add_argument("--backbone-weights",
                        help="backbone ImageNet weights: a local .h5 file, or 'imagenet' "
                             "(ResNet-50: Keras's file, downloaded once and cached; default: "
                             "the recipe's)")
    add_quiet(parser)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _flags(args) -> dict:
    flags: dict = {"model": {}, "data": {}, "train": {}, "export": {}}
    if args.dataset:
        flags["data"]["dataset"] = args.dataset
    if args.data_root:
        flags["data"]["root"] = args.data_root
    for key in ("epochs", "max_steps", "replicas", "seed", "eval_every"):
        if getattr(args, key) is not None:
            flags["train"][key] = getattr(args, key)
    for key in ("sync_bn", "jit", "mixed_precision"):
        if getattr(args, key):
            flags["train"][key] = True
    if args.worker_hosts is not None:
        flags["train"]["worker_hosts"] = [h.strip() for h in args.worker_hosts.split(",")]
    if args.task_index is not None:
        flags["train"]["task_index"] = args.task_index
    if args.no_export:
        flags["export"]["enabled"] = False
    if args.backbone_weights:
        flags["model"]["backbone_weights"] = args.backbone_weights
    return flags


def _run_dir(args, cfg) -> pathlib.Path:
    if args.output:
        return pathlib.Path(args.output)
    prefix = f"{cfg.model.name}-{cfg.data.dataset}-"
    if args.resume:
        runs = sorted(pathlib.Path("runs").glob(prefix + "*"))
        if not runs:
            raise FileNotFoundError(f"--resume: no run matching runs/{prefix}* to resume; "
                                    "pass --output RUN_DIR")
        return runs[-1]
    return pathlib.Path("runs") / (prefix + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))


def prepare(args):
    """Everything that can fail on bad input, before any training work: config, data, paths."""
    from tfreid.data import build_dataset
    from tfreid.data.screen import screen_dataset
    from tfreid.losses import check_loss
    from tfreid.models import available_models
    from tfreid.models.registry import check_overrides
    from tfreid.runs import RunDir

    if args.model and args.model not in available_models():
        raise ValueError(f"unknown model {args.model!r}; available models: "
                         f"{', '.join(available_models())}")
    config_path = args.config
    if args.resume and args.output and not config_path:
        saved = pathlib.Path(args.output) / "config.yaml"
        config_path = str(saved) if saved.is_file() else None
    cfg = config_lib.resolve(args.model, config_path, _flags(args), args.overrides)
    if cfg.model.name not in available_models():
        raise ValueError(f"unknown model {cfg.model.name!r}; available models: "
                         f"{', '.join(available_models())}")
    from tfreid.engine.strategy import resolve_tf_config, worker_info

    tf_config = resolve_tf_config(cfg.train.worker_hosts, cfg.train.task_index)
    if tf_config is not None and not args.output:
        # A timestamped default name would differ between the workers.
        raise ValueError("multi-worker training needs --output RUN_DIR (the same path on every "
                         "worker; the chief writes into it)")
    chief = worker_info(tf_config=tf_config).is_chief
    run_dir = _run_dir(args, cfg)
    if args.resume and not (run_dir / "checkpoints").is_dir():
        raise FileNotFoundError(f"--resume: {run_dir}/checkpoints/ does not exist")
    if chief and not args.resume and (run_dir / "checkpoints").is_dir():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it "
                              "or choose another --output")
    if args.resume:  # damaged run files stop the run now, not at its end
        RunDir(run_dir).read_metrics(init=True)
    cfg.output_dir = str(run_dir)
    check_overrides(cfg.model.name, cfg.model.kwargs)
    for i, term in enumerate(cfg.losses):
        try:
            check_loss(term.type, term.kwargs)
        except ValueError as err:
            raise ValueError(f"losses[{i}] ({term.name}): {err}") from None
    from tfreid.models.backbones.weights import MODEL_BACKBONES, model_backbone, resolve_backbone_weights

    try:
        backbone = model_backbone(cfg.model.name, cfg.model.kwargs)  # checks CCAN's `backbone` too
    except ValueError as err:
        raise ValueError(f"model.kwargs: {err}") from None
    if cfg.model.backbone_weights:  # fetch (or fail offline) before the data and the model
        if backbone is None and cfg.model.backbone_weights == "imagenet":
            raise ValueError(f"model.backbone_weights: model {cfg.model.name!r} has no ImageNet "
                             f"backbone (models with one: {', '.join(sorted(MODEL_BACKBONES))})")
        resolve_backbone_weights(cfg.model.backbone_weights, backbone or "resnet50")
    dataset = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.kwargs)
    dataset, skipped = screen_dataset(dataset, cfg.data.on_bad_image, cfg.data.max_bad_fraction)
    if len(dataset.train) < cfg.batch_size:
        raise ValueError(f"{cfg.data.dataset}: {len(dataset.train)} training images is fewer "
                         f"than one batch of P*K = {cfg.batch_size}")
    if dataset.num_train_pids < cfg.data.p:
        raise ValueError(f"{cfg.data.dataset}: {dataset.num_train_pids} training identities is "
                         f"fewer than data.p = {cfg.data.p}")
    return cfg, dataset, run_dir, skipped.get("train", [])


def train(cfg, dataset, run_dir: pathlib.Path, resume: bool = False, quiet: bool = False,
          skipped=()) -> dict:
    """Train, evaluate and export as `cfg` says; returns the final metrics dict. `skipped`:
    training files the up-front screening left out (reported with the run's bad images)."""
    from tfreid.engine import session

    return session.run(cfg, dataset, run_dir, resume=resume, quiet=quiet, skipped=skipped)


def main(argv=None) -> int:
    return run_cli(_main, parse_args(argv))


def _main(args) -> int:
    quiet_tensorflow()
    cfg, dataset, run_dir, skipped = prepare(args)
    if not args.quiet:
        print(f"run directory: {run_dir}", flush=True)
    metrics = train(cfg, dataset, run_dir, resume=args.resume, quiet=args.quiet, skipped=skipped)
    print(f"run directory: {run_dir}")
    if metrics.get("stopped_early"):
        print(f"stopped early ({metrics['stopped_early']}) at step {metrics['steps']}; "
              f"continue with: python -m tfreid.train --resume --output {run_dir}")
        return 130
    if metrics.get("is_chief") is False:
        print(json.dumps({k: metrics[k] for k in ("steps", "epoch", "images_per_second")}))
        return 0
    print(json.dumps({k: metrics[k] for k in ("mAP", "rank1", "rank5", "rank10", "mINP")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
