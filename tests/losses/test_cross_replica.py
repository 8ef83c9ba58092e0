"""Global-batch mining: 2 replicas give the 1-replica losses, gradients and centres ."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfreid.losses.cross_replica import gather_across_replicas, global_batch, local_offset

HELPER = pathlib.Path(__file__).with_name("replica_equality_helper.py")
REPO = pathlib.Path(__file__).resolve().parents[2]
CASES = ["batch_hard", "batch_hard_sq_soft", "batch_hard_cosine", "semi_hard",
         "improved_trihard", "attention_cosine_distance", "center_loss"]
INTERLEAVED = ["batch_hard", "semi_hard", "improved_trihard", "center_loss"]


@pytest.fixture(scope="module")
def report():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(HELPER)], capture_output=True, text=True,
                          env=env, timeout=600, cwd=str(REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _max_grad_diff(a, b):
    return max(np.abs(np.asarray(ga) - np.asarray(gb)).max()
               for step_a, step_b in zip(a["grads"], b["grads"])
               for ga, gb in zip(step_a, step_b))


@pytest.mark.slow
@pytest.mark.parametrize("case,order", [(c, "pk") for c in CASES]
                         + [(c, "interleaved") for c in INTERLEAVED])
def test_two_replicas_equal_one(report, case, order):
    assert report["num_replicas"] == 2
    res = report[f"{case}/{order}"]
    one, two = res["one"], res["two"]
    assert min(one["loss"]) > 1e-3  # a non-trivial loss, so equality means something
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5, atol=1e-5)
    assert max(np.abs(np.asarray(g)).max() for g in one["grads"][0]) > 1e-2
    assert _max_grad_diff(one, two) < 1e-5
    if case == "center_loss":
        # both mirrored copies hold the 1-replica centres after two updates ...
        assert len(two["centres"]) == 2
        for copy in two["centres"]:
            np.testing.assert_allclose(copy, one["centres"][0], rtol=1e-5, atol=1e-6)
        # ... and the second step's loss used the updated centres
        assert abs(one["loss"][1] - one["loss"][0]) > 1e-2


@pytest.mark.slow
def test_local_mining_would_differ(report):
    # Without the all-gather each replica mines only its half: the comparison above detects it.
    res = report["local_mining"]
    assert abs(res["two"]["loss"][0] - res["one"]["loss"][0]) > 1e-2
    assert _max_grad_diff(res["one"], res["two"]) > 1e-2


@pytest.mark.slow
def test_center_loss_outside_strategy_scope_is_refused(report):
    msg = report["outside_scope_error"]
    assert msg is not None and "created outside the scope" in msg and "strategy.scope()" in msg


@pytest.mark.slow
def test_uneven_replica_batches(report):
    assert report["uneven"]["offsets"] == [0, 3]
    assert report["uneven"]["gathered"] == [[0.0, 0.0, 0.0, 1.0, 1.0]] * 2


def test_identity_without_replicas():
    x = tf.constant([[1.0], [2.0], [3.0]])
    assert gather_across_replicas(x) is x
    assert int(local_offset(x)) == 0
    labels_g, emb_g, index = global_batch(tf.constant([[4], [5], [4]]), x)
    np.testing.assert_array_equal(labels_g.numpy(), [4, 5, 4])
    assert labels_g.dtype == tf.int64 and emb_g.dtype == tf.float32
    np.testing.assert_array_equal(index.numpy(), [0, 1, 2])


def test_identity_under_one_replica_strategy():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    x = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    out = strategy.run(tf.function(lambda v: (gather_across_replicas(v), local_offset(v))),
                       args=(x,))
    np.testing.assert_array_equal(out[0].numpy(), x.numpy())
    assert int(out[1]) == 0
