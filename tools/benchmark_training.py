"""Is the training loop as fast as its own train step? (a) bare step, (b) pipeline, (c) Trainer.

In one process, one after the other, for one model and batch:

(a) the bare train step: a plain ``tf.function`` around ``model(x, training=True)``, the model's
    default losses and ``optimizer.apply_gradients``, on random tensors already in memory;
(b) the input pipeline alone (``build_train_dataset``: read, decode, resize, augment, batch);
(c) the real ``Trainer`` loop (strategy, distributed iterator, progress bar, logging) on the
    same data as (b), timed by wall clock over whole loop iterations.

Each line gives images/s, the process's system-time share (of user + system CPU) and minor page
faults per step over the timed steps; the last line gives (c)/(a). Run it on a quiet machine
and compare within one run (the load average is printed).

Usage:
    python tools/benchmark_training.py --model hacnn [--data-root DIR] [--p 32 --k 1]
        [--steps 30] [--warmup 5] [--set data.height=384 ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class Meter:
    """Wall time, CPU split and page faults between ``start()`` and ``stop(steps)``."""

    def start(self):
        self.t0, self.r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)

    def stop(self, name, steps, batch):
        wall = time.perf_counter() - self.t0
        r = resource.getrusage(resource.RUSAGE_SELF)
        user, system = r.ru_utime - self.r0.ru_utime, r.ru_stime - self.r0.ru_stime
        faults = r.ru_minflt - self.r0.ru_minflt
        ips = steps * batch / wall
        print(f"{name:<34} {ips:8.1f} img/s  {wall / steps:7.3f} s/step  system "
              f"{100 * system / max(user + system, 1e-9):4.1f}%  {faults / steps:9,.0f} faults/step",
              flush=True)
        return ips


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="hacnn", help="registered model (default: hacnn)")
    parser.add_argument("--data-root", help="Market-1501-style folder (default: synthetic set)")
    parser.add_argument("--dataset", default="market1501", help="dataset parser for --data-root")
    parser.add_argument("--p", type=int, default=32, help="identities per batch (default 32)")
    parser.add_argument("--k", type=int, default=1, help="images per identity (default 1)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per phase (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override, as in tfreid.train")
    args = parser.parse_args(argv)
    for name in ("p", "k", "steps", "warmup"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")

    import keras
    import tensorflow as tf

    from tfreid import config as config_lib
    from tfreid.data import build_dataset
    from tfreid.data.pipeline import build_train_dataset
    from tfreid.engine import session
    from tfreid.engine.optim import build_optimizer
    from tfreid.engine.trainer import Trainer
    from tfreid.models import build_model

    dataset_name = args.dataset if args.data_root else "synthetic"
    overrides = [f"data.p={args.p}", f"data.k={args.k}", *args.overrides]
    cfg = config_lib.resolve(args.model, None, {"data": {"dataset": dataset_name,
                                                          "root": args.data_root}}, overrides)
    strategy = session.setup_runtime(cfg)
    data = build_dataset(cfg.data.dataset, cfg.data.root, **cfg.data.kwargs)
    size, batch, classes = (cfg.data.height, cfg.data.width), cfg.batch_size, data.num_train_pids
    total = args.warmup + args.steps

    def model_fn():
        return build_model(cfg.model.name, classes, input_shape=(*size, 3), **cfg.model.kwargs)

    def optimizer_fn():
        return build_optimizer(cfg.optim, steps_per_epoch=10 * total, total_steps=10 * total)

    def dataset_fn(start=0):
        return build_train_dataset(data.train, size, p=cfg.data.p, k=cfg.data.k,
                                   seed=cfg.train.seed, augment=session.augment_config(cfg),
                                   start_step=start)

    print(f"{cfg.model.name}, batch {batch} (P={cfg.data.p} K={cfg.data.k}), {size[0]}x{size[1]}, "
          f"{cfg.data.dataset} ({len(data.train)} training images); {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}; TF {tf.__version__}, Keras {keras.__version__}")
    meter = Meter()

    # (a) bare step
    terms = session.build_loss_terms(cfg, classes)
    model, optimizer = model_fn(), optimizer_fn()
    x = tf.random.normal((batch, *size, 3))
    y = tf.random.uniform((batch,), 0, classes, tf.int32)

    @tf.function
    def bare_step(images, labels):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            loss = tf.add_n([t.weight * tf.reduce_mean(t.fn(labels, outputs[t.output_key]))
                             for t in terms])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(args.warmup):
        bare_step(x, y).numpy()
    meter.start()
    for _ in range(args.steps):
        bare_step(x, y).numpy()
    bare = meter.stop("(a) bare train step", args.steps, batch)

    # (b) input pipeline alone
    iterator = iter(dataset_fn())
    for _ in range(args.warmup):
        next(iterator)
    meter.start()
    for _ in range(args.steps):
        next(iterator)
    meter.stop("(b) input pipeline", args.steps, batch)
    del iterator

    # (c) the Trainer loop. The step function is wrapped only to read the clock: from the first
    # step after warm-up to the start of one extra step, so every timed step's bookkeeping
    # (progress, logging) counts and the final checkpoint does not.
    trainer = Trainer(strategy=strategy, model_fn=model_fn, optimizer_fn=optimizer_fn,
                      loss_terms=session.build_loss_terms(cfg, classes),
                      output_dir=tempfile.mkdtemp(prefix="tfreid-bench-"), global_batch_size=batch,
                      steps_per_epoch=total + 2, epochs=1, max_steps=total + 1, checkpoint_every=0,
                      log_every=cfg.train.log_every, progress=True)
    step_fn, calls, loop = trainer._train_step, [0], []  # noqa: SLF001

    def timed_step(it):
        calls[0] += 1
        if calls[0] == args.warmup + 1:
            meter.start()
        elif calls[0] == total + 1:
            print()  # end the progress bar's line
            loop.append(meter.stop("(c) Trainer loop", args.steps, batch))
        return step_fn(it)

    trainer._train_step = timed_step  # noqa: SLF001
    trainer.fit(dataset_fn)
    loop = loop[0]
    print(f"(c)/(a) = {loop / bare:.3f}; load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
