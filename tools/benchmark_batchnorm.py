"""Keras 3 BatchNormalization vs the fused kernel tfreid uses in training (tfreid.ops.batch_norm).

Times forward + backward of training-mode batch norm (+ ReLU) on an HA-CNN-sized activation.

Usage:
    python tools/benchmark_batchnorm.py [--shape 64 40 16 128] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfreid.ops.batch_norm import fused_bn_train  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 40, 16, 128])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    x = tf.random.normal(args.shape)
    bn = keras.layers.BatchNormalization()
    bn.build(x.shape)

    def timed(apply):
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.reduce_sum(tf.nn.relu(apply(x)))
            return tape.gradient(y, [x, bn.gamma.value, bn.beta.value])

        step(x), step(x)  # trace + warm up
        start = time.perf_counter()
        for _ in range(args.steps):
            step(x)
        return (time.perf_counter() - start) / args.steps * 1000

    keras_ms = timed(lambda x: bn(x, training=True))
    fused_ms = timed(lambda x: fused_bn_train(bn, x))
    print(f"shape {args.shape}: keras BatchNormalization {keras_ms:.1f} ms, "
          f"fused {fused_ms:.1f} ms per forward+backward ({keras_ms / fused_ms:.1f}x); "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
