"""One training run from a resolved `Config`: strategy, model, data, train, evaluate, export.

Writes the run directory (`tfreid.runs`): `config.yaml`, `run.json`, `checkpoints/`, `logs/`,
`metrics_init.json` (the random-initialisation reference), `metrics.json`, `bad_images.txt`
(only when images were skipped) and the SavedModel export in `export/`.
"""

from __future__ import annotations

import pathlib

import keras
import tensorflow as tf

from tfreid.data.pipeline import BadImageReport, build_train_dataset
from tfreid.data.transforms import AugmentConfig
from tfreid.engine import board, evaluator
from tfreid.engine.freeze import BackboneFreezer
from tfreid.engine.malloc import keep_tensor_memory
from tfreid.engine.optim import build_optimizer
from tfreid.engine.strategy import (configure_cpu_replicas, create_strategy, describe_devices,
                                    resolve_tf_config, worker_info)
from tfreid.engine.summaries import ScalarLogger
from tfreid.engine.trainer import LossTerm, Trainer
from tfreid.losses import build_loss
from tfreid.models import build_model, embedding_model
from tfreid.runs import RunDir

METRIC_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")


def setup_runtime(cfg) -> tf.distribute.Strategy:
    """Devices, seeds, precision policy and the distribution strategy (call before any TF op).

    ``train.worker_hosts``/``train.task_index`` or ``TF_CONFIG`` with several workers give a
    ``MultiWorkerMirroredStrategy``. ``train.mixed_precision`` selects ``mixed_float16`` on GPU
    (the Trainer then adds dynamic loss scaling) and ``mixed_bfloat16`` on CPU (no scaling:
    bfloat16 has float32's exponent range).
    """
    keep_tensor_memory()  # from the first step on, not only once the training iterator exists
    tf_config = resolve_tf_config(cfg.train.worker_hosts, cfg.train.task_index)
    if tf_config is not None:
        # MultiWorkerMirroredStrategy configures collective ops, which must precede all other
        # TF work in the process, so it is created first.
        strategy = create_strategy(cfg.train.replicas, tf_config=tf_config)
        _seed_and_policy(cfg)
        return strategy
    if cfg.train.replicas and cfg.train.replicas > 1 and not tf.config.list_physical_devices("GPU"):
        configure_cpu_replicas(cfg.train.replicas)
    _seed_and_policy(cfg)
    return create_strategy(cfg.train.replicas)


def _seed_and_policy(cfg) -> None:
    keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    if cfg.train.mixed_precision:
        gpu = bool(tf.config.list_physical_devices("GPU"))
        keras.mixed_precision.set_global_policy("mixed_float16" if gpu else "mixed_bfloat16")


def build_loss_terms(cfg, num_classes: int | None = None) -> list[LossTerm]:
    """Loss terms of `cfg`; a loss that needs `num_classes` and whose kwargs leave it out gets
    the dataset's training identities, so one recipe works on every dataset."""
    return [LossTerm(name=t.name, output_key=t.output,
                     fn=build_loss(t.type, dataset_num_classes=num_classes, **t.kwargs),
                     weight=t.weight) for t in cfg.losses]


def check_loss_outputs(cfg, model) -> None:
    """Every loss term of `cfg` reads an output `model` has (ValueError naming the term)."""
    outputs = model.output if isinstance(model.output, dict) else {}
    for t in cfg.losses:
        if t.output not in outputs:
            raise ValueError(f"loss term {t.name!r}: output {t.output!r} is not an output of "
                             f"model {cfg.model.name!r}; its outputs: {', '.join(sorted(outputs))}")


def augment_config(cfg) -> AugmentConfig:
    d = cfg.data
    return AugmentConfig(flip=d.flip, pad=d.pad,
                         crop_from=tuple(d.crop_from) if d.crop_from else None,
                         random_erasing=d.random_erasing, color_jitter=d.color_jitter)


def evaluate_model(model, dataset, cfg, progress: bool = False, pictures: bool = False) -> dict:
    """Retrieval metrics of `model` (`progress`: a progress bar per split); with `pictures`, also
    ``"images"``: the TensorBoard pictures of this evaluation (`tfreid.engine.board.eval_images`)."""
    metrics = evaluator.evaluate(
        embedding_model(model), dataset, (cfg.data.height, cfg.data.width),
        metric=cfg.eval.metric, rerank=cfg.eval.rerank, flip=cfg.eval.flip,
        max_rank=cfg.eval.max_rank, protocol=cfg.eval.protocol,
        batch_size=cfg.data.eval_batch_size, on_bad_image=cfg.data.on_bad_image,
        progress=progress, ranked_lists=board.NUM_QUERIES if pictures else 0, topk=board.TOPK)
    if pictures:
        try:
            metrics["images"] = board.eval_images(model, metrics)
        except (ValueError, OSError) as err:  # e.g. an image deleted since: the metrics stand
            print(f"warning: no TensorBoard pictures for this evaluation: {err}")
            metrics.pop("ranked_lists", None)
            metrics["images"] = {}
    return metrics


class BadImageWatch:
    """Scalars hook of the Trainer: ``num_bad_images``, a warning line when the count grows,
    and ValueError once more than ``data.max_bad_fraction`` of the training files are bad."""

    def __init__(self, report: BadImageReport, num_files: int, max_fraction: float):
        self.report, self.num_files, self.max_fraction = report, num_files, max_fraction
        self._reported = report.count

    def __call__(self) -> dict:
        count = self.report.count
        if count > self._reported:
            print(f"\nwarning: {self.report.summary(3)}")
            self._reported = count
        if count > self.max_fraction * self.num_files:
            raise ValueError(f"{count} of {self.num_files} training images are unreadable, more "
                             f"than data.max_bad_fraction={self.max_fraction}: "
                             f"{', '.join(self.report.paths[:3])}; check the dataset with "
                             "python -m tfreid.data.check")
        return {"num_bad_images": count}


def run(cfg, dataset, run_dir: pathlib.Path, resume: bool = False, quiet: bool = False,
        skipped=()) -> dict:
    """Trains/evaluates/exports one run. In multi-worker training only the chief writes files
    and evaluates; the other workers return ``{"steps", "epoch", ..., "is_chief": False}``.
    `quiet` hides the progress bars and status lines (results are still printed); `skipped`:
    training files already left out by `tfreid.data.screen` (reported as bad)."""
    strategy = setup_runtime(cfg)
    chief = worker_info(strategy).is_chief
    if not quiet:
        print(describe_devices(strategy), flush=True)
    files = RunDir.create(run_dir, cfg, dataset.num_train_pids) if chief else RunDir(run_dir)
    image_size = (cfg.data.height, cfg.data.width)
    steps_per_epoch = len(dataset.train) // cfg.batch_size
    total_steps = cfg.train.epochs * steps_per_epoch
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)

    def model_fn():
        overrides = dict(cfg.model.kwargs)
        if cfg.model.backbone_weights:
            overrides["backbone_weights"] = cfg.model.backbone_weights
        model = build_model(cfg.model.name, dataset.num_train_pids,
                            input_shape=(*image_size, 3), **overrides)
        check_loss_outputs(cfg, model)  # before any evaluation or training step
        return model

    def evaluate_during_training(model):
        metrics = evaluate_model(model, dataset, cfg, progress=not quiet, pictures=True)
        step = int(trainer.step.numpy())
        if step < total_steps:  # the final evaluation is printed with the summary below
            print(f"evaluation at step {step} (epoch {step / steps_per_epoch:g}):")
            print(evaluator.format_table({"current": metrics}), flush=True)
        return metrics

    with strategy.scope():  # stateful losses (center loss) create mirrored variables
        loss_terms = build_loss_terms(cfg, dataset.num_train_pids)
    bad_images = BadImageReport()
    bad_images.add_all(skipped)
    trainer = Trainer(
        strategy=strategy, model_fn=model_fn,
        optimizer_fn=lambda: build_optimizer(cfg.optim, steps_per_epoch, total_steps),
        loss_terms=loss_terms, output_dir=str(run_dir),
        global_batch_size=cfg.batch_size, steps_per_epoch=steps_per_epoch,
        epochs=cfg.train.epochs, max_steps=cfg.train.max_steps,
        checkpoint_every=cfg.train.checkpoint_every, keep_checkpoints=cfg.train.keep_checkpoints,
        log_every=cfg.train.log_every, eval_every=cfg.train.eval_every,
        evaluate_fn=evaluate_during_training, progress=not quiet,
        jit_compile=cfg.train.jit, sync_bn=cfg.train.sync_bn,
        epoch_hook=BackboneFreezer(cfg.train.freeze_backbone_epochs),
        scalars_fn=BadImageWatch(bad_images, len(dataset.train) + len(skipped),
                                 cfg.data.max_bad_fraction))
    start_step = trainer.restore() if resume else 0

    if chief and start_step == 0 and not files.has_metrics(init=True):
        init, images = None, None
        if cfg.train.eval_at_start:
            if not quiet:
                print("Evaluating the randomly initialised network for reference ...")
            init = evaluate_model(trainer.model, dataset, cfg, progress=not quiet, pictures=True)
            images = init.pop("images")
            files.write_metrics(init, init=True)
        logger = ScalarLogger(files.logs)
        board.log_start(logger, cfg, init, images)
        logger.close()

    def dataset_fn(start):
        return build_train_dataset(
            dataset.train, image_size=image_size, p=cfg.data.p, k=cfg.data.k,
            seed=cfg.train.seed, augment=augment_config(cfg), start_step=start,
            on_bad_image=cfg.data.on_bad_image, deterministic=cfg.train.deterministic,
            report=bad_images, random_erasing_start_epoch=cfg.data.random_erasing_start_epoch,
            sampler=cfg.data.sampler)

    try:
        result = trainer.fit(dataset_fn)
    finally:  # also when bad images stop the run
        if chief:
            files.write_bad_images(bad_images.paths)
    summary = {"steps": result.steps, "epoch": round(result.epochs, 3),
               "images_per_second": round(result.images_per_second, 1),
               "stopped_early": result.stopped_early, "num_bad_images": bad_images.count}
    if result.stopped_early:
        return summary
    if not chief:
        return {**summary, "is_chief": False}

    # The trainer evaluates at the end of fit (and logs it to TensorBoard); reuse that result.
    final = result.eval_metrics or evaluate_model(trainer.model, dataset, cfg, progress=not quiet)
    metrics = {**{k: final[k] for k in METRIC_KEYS}, **summary,
               "num_query": final["num_query"], "num_gallery": final["num_gallery"],
               "losses": result.losses}
    rows = {"trained": final}
    if files.has_metrics(init=True):
        init = files.read_metrics(init=True)
        metrics["init"] = {k: init[k] for k in METRIC_KEYS}
        rows = {"random init": init, "trained": final}
    files.write_metrics(metrics)
    print(f"\n{cfg.model.name} on {cfg.data.dataset}: {len(dataset.query)} queries, "
          f"{len(dataset.gallery)} gallery images, {result.steps} steps")
    print(evaluator.format_table(rows))

    if cfg.export.enabled:
        from tfreid.export.run_export import export_metadata
        from tfreid.export.savedmodel import export_savedmodel

        # Into the run directory: publishing to a serving root is explicit (tfreid.export --to).
        path = export_savedmodel(
            embedding_model(trainer.model), files.export_root, cfg.model.name, image_size,
            metadata=export_metadata(cfg, files, files.latest_checkpoint(), metrics))
        metrics["export"] = str(path)
        files.write_metrics(metrics)
        print(f"exported SavedModel: {path}")
    return metrics
