"""Tiny models/datasets for the trainer tests, and a subprocess entry point.

Run as a script (logical CPU devices must be configured before TF initialises, hence a fresh
process):

    python tests/engine/trainer_helpers.py equality OUT_DIR  # 1 vs 2 replicas -> OUT/result.npz
    python tests/engine/trainer_helpers.py train OUT_DIR CHECKPOINT_EVERY
        # trains "forever" (until a signal or kill); prints a JSON line with the TrainResult
"""

from __future__ import annotations

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_CLASSES = 5
IMAGE_SHAPE = (8, 4, 3)


def tiny_model(seed: int = 0, l2: float = 0.0) -> keras.Model:
    """Conv2D + BN + ReLU + GAP + two Dense heads, dict outputs (like tfreid models)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(IMAGE_SHAPE, name="images")
    # No conv bias: BN cancels it, its gradient is pure round-off, and Adam would amplify that
    # noise to +-lr updates that differ between replica counts.
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    reg = keras.regularizers.L2(l2) if l2 else None
    return keras.Model(inputs, {
        "logits/global": keras.layers.Dense(NUM_CLASSES, name="fc_global",
                                            kernel_regularizer=reg)(x),
        "logits/local": keras.layers.Dense(NUM_CLASSES, name="fc_local")(x),
    })


def make_data(num_batches: int, batch: int = 8, seed: int = 0):
    """Distinct deterministic batches: images [num_batches*batch, 8, 4, 3], labels int32."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(num_batches * batch, *IMAGE_SHAPE)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, num_batches * batch).astype("int32")
    return images, labels


def dataset_fn_for(images, labels, batch: int = 8):
    """dataset_fn(start_step): infinite global batches, batch k = examples [k*b, (k+1)*b) mod n."""
    def dataset_fn(start_step):
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        return ds.batch(batch, drop_remainder=True).repeat().skip(start_step)
    return dataset_fn


def ce(labels, logits):
    """Per-example softmax cross-entropy (the LossTerm.fn contract)."""
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def loss_terms():
    from tfreid.engine.trainer import LossTerm
    return [LossTerm("ce_global", "logits/global", ce),
            LossTerm("ce_local", "logits/local", ce, weight=0.5)]


def _equality(out_dir):
    from tfreid.engine.strategy import configure_cpu_replicas, create_strategy
    from tfreid.runs import read_scalars
    from tfreid.engine.trainer import Trainer

    configure_cpu_replicas(2)
    images, labels = make_data(2)
    optimizers = {"sgd": lambda: keras.optimizers.SGD(0.5),
                  "adam": lambda: keras.optimizers.Adam(0.05)}
    results = {}
    runs = [(o, n, True) for o in optimizers for n in (1, 2)] + [("sgd", 2, False)]
    for opt, n, sync in runs:
        tag = f"{opt}_{n}_{'sync' if sync else 'nosync'}"
        strategy = create_strategy(n)
        trainer = Trainer(strategy=strategy, model_fn=lambda: tiny_model(l2=1e-2),
                          optimizer_fn=optimizers[opt], loss_terms=loss_terms(),
                          output_dir=os.path.join(out_dir, tag), global_batch_size=8,
                          steps_per_epoch=2, epochs=1, checkpoint_every=0, log_every=1,
                          sync_bn=sync, progress=False)
        trainer.fit(dataset_fn_for(images, labels))
        scalars = read_scalars(os.path.join(out_dir, tag, "logs"))
        for key in ("loss/ce_global", "loss/ce_local", "loss/regularization", "loss/total"):
            results[f"{tag}/{key}"] = np.array([v for _, v in scalars[key]])
        for w in trainer.model.weights:  # includes BN moving mean/variance
            results[f"{tag}/w/{w.path}"] = keras.ops.convert_to_numpy(w)
        for i, v in enumerate(trainer.optimizer.variables):  # iterations, Adam m/v slots
            results[f"{tag}/opt/{i}"] = keras.ops.convert_to_numpy(v)
        results[f"{tag}/replicas"] = np.array(strategy.num_replicas_in_sync)
        results[f"{tag}/traces"] = np.array(trainer.trace_count)
    np.savez(os.path.join(out_dir, "result.npz"), **results)


def long_run_trainer(out_dir, checkpoint_every, max_steps=None):
    """The trainer the signal/kill tests run in a subprocess (and resume in the test process)."""
    from tfreid.engine.strategy import create_strategy
    from tfreid.engine.trainer import Trainer

    return Trainer(strategy=create_strategy(1), model_fn=tiny_model,
                   optimizer_fn=lambda: keras.optimizers.Adam(1e-3), loss_terms=loss_terms(),
                   output_dir=out_dir, global_batch_size=8, steps_per_epoch=50, epochs=10_000,
                   max_steps=max_steps, checkpoint_every=checkpoint_every, keep_checkpoints=3,
                   log_every=10, progress=False)


def long_run_dataset_fn():
    return dataset_fn_for(*make_data(4))


def _train(out_dir, checkpoint_every):
    before = signal.getsignal(signal.SIGTERM)
    trainer = long_run_trainer(out_dir, checkpoint_every)
    trainer.restore()
    result = trainer.fit(long_run_dataset_fn())
    print(json.dumps({"steps": result.steps, "stopped_early": result.stopped_early,
                      "latest": trainer._ckpt.latest,
                      "handler_restored": signal.getsignal(signal.SIGTERM) is before,
                      "weights_sum": float(sum(np.sum(w) for w in trainer.model.get_weights()))}),
          flush=True)


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    if mode == "equality":
        _equality(out)
    elif mode == "train":
        _train(out, int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode!r}; expected 'equality' or 'train'")
