"""Where does HA-CNN's train step go? Times the full step and its parts on random tensors.

    python tools/benchmark_step_breakdown.py [--steps 10] [--batch 32]

Prints, for HA-CNN with and without its hard-attention local branch (``learn_region=False``):
the full train step (forward + CE on the logits + backward + Adam), the forward pass in training
mode, forward + backward, Adam's ``apply_gradients`` alone, and the inference forward pass.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _time(name, fn, args, steps, batch):
    for _ in range(3):  # trace and warm up
        fn(*args)
    start = time.perf_counter()
    for _ in range(steps):
        result = fn(*args)
    result.numpy()
    seconds = (time.perf_counter() - start) / steps
    print(f"  {name:32s} {seconds * 1000:8.1f} ms  {batch / seconds:7.1f} img/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default 10)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--classes", type=int, default=251, help="identities (default 251)")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from tfreid.engine.malloc import keep_tensor_memory
    from tfreid.losses import build_loss
    from tfreid.models import build_model

    keep_tensor_memory()
    ce = build_loss("cross_entropy")
    x = tf.random.normal((args.batch, 160, 64, 3))
    y = tf.random.uniform((args.batch,), 0, args.classes, tf.int32)
    for label, kwargs in (("hacnn", {}), ("hacnn, learn_region=False", {"learn_region": False})):
        model = build_model("hacnn", args.classes, **kwargs)
        optimizer = keras.optimizers.Adam(5e-4)
        keys = ["logits/global"] + ([] if kwargs else ["logits/local"])
        variables = model.trainable_variables

        def loss_of(images, labels):
            outputs = model(images, training=True)
            return tf.add_n([tf.reduce_mean(ce(labels, outputs[k])) for k in keys])

        @tf.function
        def full(images, labels):
            with tf.GradientTape() as tape:
                loss = loss_of(images, labels)
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        @tf.function
        def forward_backward(images, labels):
            with tf.GradientTape() as tape:
                loss = loss_of(images, labels)
            return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, variables)])

        grads = [tf.fill(v.shape, 1e-3) for v in variables]

        @tf.function
        def apply_only():
            optimizer.apply_gradients(zip(grads, variables))
            return tf.constant(0)

        print(f"{label}: {len(variables)} trainable variables, batch {args.batch}")
        _time("full train step", full, (x, y), args.steps, args.batch)
        _time("forward (training mode)", tf.function(loss_of), (x, y), args.steps, args.batch)
        _time("forward + backward", forward_backward, (x, y), args.steps, args.batch)
        _time("apply_gradients (Adam) alone", apply_only, (), args.steps, args.batch)
        _time("inference forward", tf.function(lambda i: model(i, training=False)["embedding"]),
              (x,), args.steps, args.batch)


if __name__ == "__main__":
    main()
