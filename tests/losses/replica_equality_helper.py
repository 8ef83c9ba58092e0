"""Subprocess for test_cross_replica.py: every loss with 2 replicas vs 1 on the same global batch.

Logical CPU devices must be configured before TensorFlow initialises, hence a separate process.
Prints one JSON object: per case the 1- and 2-replica losses and gradients (and centres).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from tfreid.losses import (CenterLoss, attention_cosine_distance, batch_hard_triplet,  # noqa: E402
                           improved_trihard, semi_hard_triplet)
from tfreid.losses import cross_replica  # noqa: E402

GLOBAL_BATCH, IN_DIM, EMB_DIM, NUM_CLASSES = 8, 5, 4, 4
ORDERS = {"pk": [0, 0, 1, 1, 2, 2, 3, 3],          # each replica holds two whole identities
          "interleaved": [0, 1, 2, 3, 3, 2, 1, 0]}  # every identity spans both replicas
CASES = {
    "batch_hard": lambda: lambda y, e: batch_hard_triplet(y, e, margin=2.0),
    "batch_hard_sq_soft": lambda: lambda y, e: batch_hard_triplet(
        y, e, metric="sqeuclidean", soft_margin=True),
    "batch_hard_cosine": lambda: lambda y, e: batch_hard_triplet(y, e, 0.5, metric="cosine"),
    "semi_hard": lambda: lambda y, e: semi_hard_triplet(y, e, margin=2.0, top_r=2),
    "improved_trihard": lambda: lambda y, e: improved_trihard(y, e, margin=1.0),
    "attention_cosine_distance": lambda: attention_cosine_distance,
    "center_loss": lambda: CenterLoss(NUM_CLASSES, EMB_DIM, alpha=0.5),
}

INTERLEAVED_CASES = ("batch_hard", "semi_hard", "improved_trihard", "center_loss")


def make_model(weights=None):
    model = keras.Sequential([keras.Input((IN_DIM,)), keras.layers.Dense(EMB_DIM)])
    if weights is not None:
        model.set_weights(weights)
    return model


def init_centres(fn):
    if isinstance(fn, CenterLoss):
        fn.centers.assign(np.random.default_rng(1).normal(size=(NUM_CLASSES, EMB_DIM)))


def train_step(strategy, model, loss_fns, dataset):
    """Per replica one forward and each loss' gradient; losses and gradients SUM-reduced.

    All losses share one traced step (one trace per strategy keeps the subprocess fast).
    """

    def replica_fn(x, y):
        with tf.GradientTape(persistent=True) as tape:
            embeddings = model(x)
            losses = [tf.nn.compute_average_loss(fn(y, embeddings), global_batch_size=GLOBAL_BATCH)
                      for fn in loss_fns]
        grads = [tape.gradient(loss, model.trainable_variables) for loss in losses]
        return losses, grads

    @tf.function
    def step(x, y):
        losses, grads = strategy.run(replica_fn, args=(x, y))
        reduce = lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)  # noqa
        return [reduce(v) for v in losses], [[reduce(g) for g in gs] for gs in grads]

    results = []
    for x, y in dataset:  # two steps: the second one sees the updated centres
        losses, grads = step(x, y)
        results.append(([float(v) for v in losses], [[g.numpy() for g in gs] for gs in grads]))
    return results


def run_cases(cases, labels, strategies, x, weights):
    """`{case: {strategy tag: {"loss": [per step], "grads": [per step], "centres": ...}}}`."""
    out = {name: {} for name in cases}
    for tag, strategy in strategies.items():
        with strategy.scope():
            model = make_model(weights)
            fns = [make_fn() for make_fn in cases.values()]
            for fn in fns:
                init_centres(fn)
        data = tf.data.Dataset.from_tensors((x, labels)).repeat(2)
        dataset = strategy.experimental_distribute_dataset(data.unbatch().batch(GLOBAL_BATCH))
        steps = train_step(strategy, model, fns, dataset)
        for i, (name, fn) in enumerate(zip(cases, fns)):
            res = {"loss": [s[0][i] for s in steps],
                   "grads": [[g.tolist() for g in s[1][i]] for s in steps]}
            if isinstance(fn, CenterLoss):
                res["centres"] = [v.numpy().tolist() for v in
                                  getattr(fn.centers, "values", [fn.centers])]
            out[name][tag] = res
    return out


def main():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategies = {"one": tf.distribute.OneDeviceStrategy(devices[0]),
                  "two": tf.distribute.MirroredStrategy(devices[:2])}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(GLOBAL_BATCH, IN_DIM)).astype(np.float32)
    weights = make_model().get_weights()
    report = {"num_replicas": strategies["two"].num_replicas_in_sync}
    for order, labels in ORDERS.items():
        # Identities spanning both replicas matter most for the mining itself; the metric and
        # soft-margin variants share that code, so they run on the P x K order only (saves time).
        cases = CASES if order == "pk" else {k: CASES[k] for k in INTERLEAVED_CASES}
        results = run_cases(cases, np.array(labels, np.int64), strategies, x, weights)
        report.update({f"{name}/{order}": res for name, res in results.items()})

    # Sanity check that the comparison can fail: mining only the local half (no all-gather)
    # must change the 2-replica batch-hard loss (compared with the 1-replica run above).
    real = cross_replica._replica_context
    cross_replica._replica_context = lambda: None
    try:
        local = run_cases({"batch_hard": CASES["batch_hard"]}, np.array(ORDERS["pk"]),
                          {"two": strategies["two"]}, x, weights)["batch_hard"]
        report["local_mining"] = {"one": report["batch_hard/pk"]["one"], "two": local["two"]}
    finally:
        cross_replica._replica_context = real

    # A CenterLoss built outside the strategy scope must refuse to run under 2 replicas.
    outside = CenterLoss(NUM_CLASSES, EMB_DIM)
    with strategies["two"].scope():
        model = make_model(weights)
    data = tf.data.Dataset.from_tensors((x, np.array(ORDERS["pk"]))).unbatch().batch(GLOBAL_BATCH)
    try:
        train_step(strategies["two"], model, [outside],
                   strategies["two"].experimental_distribute_dataset(data))
        report["outside_scope_error"] = None
    except ValueError as err:
        report["outside_scope_error"] = str(err)

    # Uneven per-replica batches (3 + 2 rows): offsets come from the gathered sizes.
    two = strategies["two"]
    values = two.experimental_distribute_values_from_function(
        lambda ctx: tf.fill([3 - ctx.replica_id_in_sync_group, 1],
                            tf.cast(ctx.replica_id_in_sync_group, tf.float32)))
    gathered, offsets = tf.function(lambda v: two.run(
        lambda t: (cross_replica.gather_across_replicas(t), cross_replica.local_offset(t)),
        args=(v,)))(values)
    report["uneven"] = {"gathered": [g.numpy().ravel().tolist() for g in gathered.values],
                        "offsets": [int(o) for o in offsets.values]}
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
