"""Benchmark a tfreid model: inference throughput, training step time, parameters and MACs.

* Inference: the embedding model (images -> ``"embedding"``) in eval mode inside a
  ``tf.function``, random normalised images, reported as images/s.
* Training: one optimisation step inside a ``tf.function`` -- forward in training mode,
  cross-entropy on every ``logits/*`` output (summed), ``tf.GradientTape`` gradients, Adam
  (lr 5e-4, the HA-CNN recipe) -- reported as seconds per step.
* Both are run with ``jit_compile=False`` and ``jit_compile=True`` (XLA) unless ``--jit`` says
  otherwise; the first (tracing/compiling) calls are excluded as warm-up.
* Size: learned parameters without classifiers (`count_params`, BN statistics excluded, as
  PyTorch counts) and multiply-accumulates per image (`count_flops`; papers' "FLOPs" = MACs,
  some count 2 FLOPs per MAC).

Reference (PyTorch torchreid HACNN on the same 2-core CPU box): 93.7 images/s inference and
1.15 s per training step at batch 32. The machine may be shared: note the load average printed
with the results.

Usage:
    python tools/benchmark_model.py --model hacnn --batch 32 --steps 10
    python tools/benchmark_model.py --jit off --steps 5 --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfreid.models import build_model, embedding_model  # noqa: E402
from tfreid.models.complexity import count_flops, count_params  # noqa: E402


def _timed(fn, args, steps, warmup):
    for _ in range(warmup):
        _sync(fn(*args))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        _sync(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times))


def _sync(result):
    # Materialise the outputs so asynchronous execution is inside the timed region.
    for t in tf.nest.flatten(result):
        np.asarray(t)


def bench_inference(model, images, steps, warmup, jit):
    embed = embedding_model(model)
    fn = tf.function(lambda x: embed(x, training=False), jit_compile=jit, autograph=False)
    median, best = _timed(fn, (images,), steps, warmup)
    return {"images_per_s": images.shape[0] / median, "best_images_per_s": images.shape[0] / best}


def bench_training(model, images, labels, steps, warmup, jit):
    optimizer = keras.optimizers.Adam(learning_rate=5e-4, beta_1=0.9, beta_2=0.999)
    variables = model.trainable_variables
    optimizer.build(variables)  # slot variables must exist before tracing
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(x, y):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.add_n([ce(y, v) for k, v in out.items() if k.startswith("logits/")])
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        return loss

    fn = tf.function(step, jit_compile=jit, autograph=False)
    median, best = _timed(fn, (images, labels), steps, warmup)
    return {"seconds_per_step": median, "best_seconds_per_step": best}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hacnn")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (tracing / XLA compile)")
    parser.add_argument("--num-classes", type=int, default=751, help="classifier width (Market-1501: 751)")
    parser.add_argument("--input-shape", type=int, nargs=3, default=None, metavar=("H", "W", "C"))
    parser.add_argument("--jit", choices=("both", "on", "off"), default="both")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    for name in ("batch", "steps", "num_classes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, received {getattr(args, name)}")

    keras.utils.set_random_seed(0)
    overrides = {"input_shape": tuple(args.input_shape)} if args.input_shape else {}
    model = build_model(args.model, args.num_classes, **overrides)
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(args.batch, *shape)).astype("float32"))
    labels = tf.constant(rng.integers(0, args.num_classes, args.batch))

    macs = count_flops(model, shape)
    results = {
        "model": args.model,
        "batch": args.batch,
        "input_shape": list(shape),
        "params_without_classifiers": count_params(model),
        "macs_per_image": macs,
        "gmacs_per_image": macs / 1e9,
        "tf_version": tf.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
    }
    jits = {"both": (False, True), "on": (True,), "off": (False,)}[args.jit]
    for jit in jits:
        tag = "xla" if jit else "graph"
        results[f"inference_{tag}"] = bench_inference(model, images, args.steps, args.warmup, jit)
        print(f"inference [{tag}]: {results[f'inference_{tag}']['images_per_s']:.1f} images/s", flush=True)
        if not args.skip_training:
            results[f"training_{tag}"] = bench_training(model, images, labels, args.steps, args.warmup, jit)
            print(f"training  [{tag}]: {results[f'training_{tag}']['seconds_per_step']:.3f} s/step", flush=True)
    results["load_average_after"] = os.getloadavg()

    print(f"model {args.model}: {results['params_without_classifiers']:,} parameters without classifiers, "
          f"{macs / 1e9:.3f} GMACs per {shape[0]}x{shape[1]} image")
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
