"""Measure the training input pipeline's throughput (images/s) on real Market-1501 images.

Builds ``tfreid.data.pipeline.build_train_dataset`` (default augmentation: flip + pad 10 + crop;
``--random-erasing P`` adds erasing), P=8, K=4, runs a warm-up, then times ``--batches`` batches
and prints images/s, CPU per image and the machine load (the box may be shared). ``--threads N``
limits tf.data to N threads (default: all cores), to see how the pipeline scales.

Usage:
    python tools/benchmark_pipeline.py [--root DIR] [--height 160 --width 64] [--batches N]
        [--random-erasing 0.5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "realreid" / "market1501"
_NAME = re.compile(r"([-\d]+)_c(\d)")


def market_train_samples(root: pathlib.Path):
    """Train samples of a Market-1501 folder (junk pid -1 dropped, pids relabelled 0..N-1)."""
    from tfreid.data.datasets.base import Sample, relabel

    folder = root / "bounding_box_train"
    if not folder.is_dir():
        raise FileNotFoundError(f"--root {root}: expected a Market-1501 folder with bounding_box_train/")
    samples = []
    for path in sorted(folder.glob("*.jpg")):
        match = _NAME.match(path.name)
        if match and int(match.group(1)) >= 0:
            samples.append(Sample(str(path), int(match.group(1)), int(match.group(2)) - 1))
    if not samples:
        raise FileNotFoundError(f"no Market-1501 style *.jpg images in {folder}")
    return relabel(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=pathlib.Path, default=DEFAULT_ROOT, help="Market-1501 root")
    parser.add_argument("--height", type=int, default=160)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batches", type=int, default=200, help="timed batches (after warm-up)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed warm-up batches")
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument("--random-erasing", type=float, default=0.0, help="erasing probability")
    parser.add_argument("--threads", type=int, default=0, help="tf.data threads (0: all cores)")
    args = parser.parse_args(argv)
    for name in ("height", "width", "batches", "p", "k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")

    sys.path.insert(0, str(REPO))
    from tfreid.data.pipeline import build_train_dataset
    from tfreid.data.transforms import AugmentConfig

    samples = market_train_samples(args.root)
    import tensorflow as tf

    augment = AugmentConfig(random_erasing=args.random_erasing)
    ds = build_train_dataset(samples, (args.height, args.width), p=args.p, k=args.k, seed=0,
                             augment=augment, deterministic=args.deterministic)
    if args.threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = args.threads
        ds = ds.with_options(options)
    iterator = iter(ds)
    for _ in range(args.warmup):
        next(iterator)
    load_before = os.getloadavg()[0]
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.batches):
        images, _labels = next(iterator)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    count = args.batches * args.p * args.k
    print(f"samples: {len(samples)} images, {len({s.pid for s in samples})} ids from {args.root}")
    print(f"config: {args.height}x{args.width}, P={args.p} K={args.k}, {augment}, "
          f"deterministic={args.deterministic}, threads={args.threads or 'all'}, "
          f"batch shape {tuple(images.shape)}")
    print(f"load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs; process CPU {cpu:.1f} s over {elapsed:.1f} s wall "
          f"({1e3 * cpu / (args.batches * args.p * args.k):.2f} ms CPU per image)")
    print(f"throughput: {count / elapsed:,.0f} images/s ({args.batches} batches of "
          f"{args.p * args.k} after {args.warmup} warm-up batches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
