"""Tests for tfreid.engine.trainer (+ checkpoint, summaries): numbers against independent
references, replica-count invariance, resume, signals, NaN guard, SIGKILL safety."""

import glob
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.engine.strategy import create_strategy
from tfreid.runs import read_scalars
from tfreid.engine.trainer import LossTerm, Trainer, TrainResult

import trainer_helpers as H

HELPER = pathlib.Path(H.__file__).resolve()
REPO = HELPER.parents[2]


def make_trainer(out_dir, **kw):
    args = dict(strategy=create_strategy(1), model_fn=H.tiny_model,
                optimizer_fn=lambda: keras.optimizers.Adam(0.01), loss_terms=H.loss_terms(),
                output_dir=str(out_dir), global_batch_size=8, steps_per_epoch=3, epochs=2,
                checkpoint_every=0, log_every=1, progress=False)
    args.update(kw)
    return Trainer(**args)


def weights(model):
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


def np_cross_entropy(logits, labels):
    logits = logits.astype(np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(labels)), labels]


def tensorboard_scalars(logdir):
    """tag -> [(step, value)] parsed from the event files, plus the plugin name per tag."""
    out, plugins = {}, {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
                plugins.setdefault(v.tag, v.metadata.plugin_data.plugin_name)
    return out, plugins


def test_single_step_matches_independent_reference(tmp_path):
    images, labels = H.make_data(1)
    l2, lr = 1e-2, 0.1
    trainer = make_trainer(tmp_path, model_fn=lambda: H.tiny_model(l2=l2),
                           optimizer_fn=lambda: keras.optimizers.SGD(lr), steps_per_epoch=1,
                           epochs=1)
    ref = H.tiny_model(l2=l2)  # same seed -> same initial weights
    w0 = weights(ref)
    assert all(np.array_equal(w0[k], v) for k, v in weights(trainer.model).items())
    result = trainer.fit(H.dataset_fn_for(images, labels))

    # Reference: plain GradientTape, no strategy, no loss scaling helpers.
    with tf.GradientTape() as tape:
        out = ref(images, training=True)
        loss = (tf.reduce_mean(H.ce(labels, out["logits/global"]))
                + 0.5 * tf.reduce_mean(H.ce(labels, out["logits/local"])) + tf.add_n(ref.losses))
    grads = tape.gradient(loss, ref.trainable_variables)
    expected = {v.path: w0[v.path] - lr * g.numpy() for v, g in zip(ref.trainable_variables, grads)}
    # BN moving stats from NumPy: momentum 0.9, batch moments of the (bias-free) conv output.
    conv = keras.ops.convert_to_numpy(keras.ops.conv(images, w0["conv/kernel"], padding="same"))
    expected["bn/moving_mean"] = 0.1 * conv.mean(axis=(0, 1, 2))
    expected["bn/moving_variance"] = 0.9 + 0.1 * conv.var(axis=(0, 1, 2))
    got = weights(trainer.model)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-6, err_msg=key)

    # Loss values: NumPy cross-entropy on the reference logits, Keras L2 = l2 * sum(w^2).
    ce_g = np_cross_entropy(out["logits/global"].numpy(), labels).mean()
    ce_l = np_cross_entropy(out["logits/local"].numpy(), labels).mean()
    reg = l2 * np.sum(w0["fc_global/kernel"].astype(np.float64) ** 2)
    want = {"ce_global": ce_g, "ce_local": ce_l, "regularization": reg,
            "total": ce_g + 0.5 * ce_l + reg}
    assert result.losses.keys() == want.keys()
    for k, v in want.items():
        assert result.losses[k] == pytest.approx(v, rel=1e-5), k
    # The same numbers in scalars.jsonl and in the TensorBoard event file.
    jsonl = read_scalars(tmp_path / "logs")
    tb, plugins = tensorboard_scalars(str(tmp_path / "logs"))
    for k, v in want.items():
        assert jsonl[f"loss/{k}"] == [(1, pytest.approx(v, rel=1e-5))]
        assert tb[f"loss/{k}"] == [(1, pytest.approx(v, rel=1e-5))]
        assert plugins[f"loss/{k}"] == "scalars"
    assert jsonl["learning_rate"] == [(1, pytest.approx(lr))]
    line = json.loads((tmp_path / "logs" / "scalars.jsonl").read_text().splitlines()[0])
    assert set(line) == {"step", "tag", "value", "wall_time"}
    assert result.steps == 1 and result.epochs == 1.0 and result.stopped_early is None


def test_resume_equals_straight_run_and_no_retracing(tmp_path):
    images, labels = H.make_data(5)  # 5 distinct batches: resume must continue at the right one
    ds = H.dataset_fn_for(images, labels)
    straight = make_trainer(tmp_path / "a")
    res = straight.fit(ds)
    assert res.steps == 6 and straight.trace_count == 1  # one trace for 6 steps

    first = make_trainer(tmp_path / "b", max_steps=3)
    assert first.fit(ds).steps == 3
    second = make_trainer(tmp_path / "b")  # NEW trainer: fresh weights + optimizer until restore
    assert second.restore() == 3
    assert int(second.optimizer.iterations.numpy()) == 3
    assert second.fit(ds).steps == 6
    a, b = weights(straight.model), weights(second.model)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)
    for va, vb in zip(straight.optimizer.variables, second.optimizer.variables):  # Adam m, v
        np.testing.assert_allclose(vb.numpy(), va.numpy(), rtol=0, atol=1e-6, err_msg=va.path)
    # Without restore the second half would start from scratch -> different weights.
    fresh = make_trainer(tmp_path / "c", max_steps=3)
    fresh.step.assign(3)
    fresh.fit(ds)
    assert not np.allclose(weights(fresh.model)["conv/kernel"], a["conv/kernel"], atol=1e-4)


def test_checkpoint_schedule_eval_and_logged_scalars(tmp_path):
    images, labels = H.make_data(3)
    calls = []

    def evaluate_fn(model):
        calls.append(int(trainer.step.numpy()))
        return {"mAP": 0.01 * calls[-1], "cmc": np.arange(3)}  # non-scalars are not logged

    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([5], [0.1, 0.01])
    trainer = make_trainer(tmp_path, optimizer_fn=lambda: keras.optimizers.SGD(schedule),
                           steps_per_epoch=4, epochs=3, checkpoint_every=5, keep_checkpoints=10,
                           log_every=2, eval_every=2, evaluate_fn=evaluate_fn)
    result = trainer.fit(H.dataset_fn_for(images, labels))
    ckpts = [int(p.rsplit("-", 1)[1]) for p in trainer._ckpt.manager.checkpoints]
    assert ckpts == [4, 5, 8, 10, 12]  # epoch ends + every 5 + end (12 is both)
    assert calls == [8, 12]  # epoch 2, then the end of training
    s = read_scalars(tmp_path / "logs")
    assert s["eval/mAP"] == [(8, pytest.approx(0.08)), (12, pytest.approx(0.12))]
    assert "eval/cmc" not in s and result.eval_metrics["mAP"] == pytest.approx(0.12)
    # optimizer.iterations == step, PiecewiseConstant: 0.1 while step <= 5.
    assert s["learning_rate"] == [(k, pytest.approx(0.1 if k <= 5 else 0.01))
                                  for k in (2, 4, 6, 8, 10, 12)]
    # images/s skips the 2 warm-up steps: window (1, 2] has no timed step.
    assert [k for k, _ in s["images_per_second"]] == [4, 6, 8, 10, 12]
    assert result.images_per_second > 0
    # Window means of steps 9-10 and 11-12 average to the last epoch's mean.
    window = dict(s["loss/total"])
    assert result.losses["total"] == pytest.approx((window[10] + window[12]) / 2, rel=1e-6)
    assert result.epochs == 3.0 and isinstance(result, TrainResult)


def test_nan_loss_raises_and_keeps_last_good_checkpoint(tmp_path):
    images, labels = H.make_data(4)
    labels[2 * 8 + 5] = -1  # one example of batch 3 (step 3) is poisoned

    def poisoned_ce(y, logits):
        loss = H.ce(tf.maximum(y, 0), logits)
        return loss * tf.where(y < 0, np.float32(np.nan), np.float32(1.0))  # NaN grads too

    terms = [LossTerm("ce_global", "logits/global", lambda y, p: H.ce(tf.maximum(y, 0), p)),
             LossTerm("bad_local", "logits/local", poisoned_ce)]
    trainer = make_trainer(tmp_path, loss_terms=terms, checkpoint_every=1, steps_per_epoch=10)
    with pytest.raises(FloatingPointError, match=r"step 3: bad_local, total") as info:
        trainer.fit(H.dataset_fn_for(images, labels))
    assert "ce_global" not in str(info.value)
    assert trainer._ckpt.latest.endswith("ckpt-2")
    assert not glob.glob(str(tmp_path / "checkpoints" / "ckpt-3*"))
    assert not all(np.isfinite(w).all() for w in trainer.model.get_weights())  # bad weights...
    again = make_trainer(tmp_path, loss_terms=terms)
    assert again.restore() == 2  # ...were never saved
    assert all(np.isfinite(w).all() for w in again.model.get_weights())


def test_sigint_in_process_finishes_step_saves_and_restores_handler(tmp_path):
    images, labels = H.make_data(2)
    previous = signal.getsignal(signal.SIGINT)
    trainer = make_trainer(tmp_path, steps_per_epoch=2, epochs=50, eval_every=1, log_every=3,
                           evaluate_fn=lambda m: os.kill(os.getpid(), signal.SIGINT) or {})
    result = trainer.fit(H.dataset_fn_for(images, labels))
    assert result.stopped_early == "signal SIGINT" and result.steps == 2
    assert trainer._ckpt.latest.endswith("ckpt-2")
    assert signal.getsignal(signal.SIGINT) is previous
    # The partial log window (steps 1-2 of log_every=3) is flushed when training stops.
    logged = read_scalars(tmp_path / "logs")["loss/total"]
    assert logged == [(2, pytest.approx(result.losses["total"], rel=1e-6))]


@pytest.mark.slow  # XLA compilation: ~4 s alone, > 10 s on a loaded 2-core box
def test_jit_compile_matches_graph_step(tmp_path):
    images, labels = H.make_data(2)
    runs = []
    for jit in (False, True):
        t = make_trainer(tmp_path / str(jit), steps_per_epoch=2, epochs=1, jit_compile=jit)
        runs.append((t.fit(H.dataset_fn_for(images, labels)), weights(t.model)))
    (r0, w0), (r1, w1) = runs
    assert r1.losses["total"] == pytest.approx(r0.losses["total"], rel=1e-5)
    for k in w0:
        np.testing.assert_allclose(w1[k], w0[k], atol=1e-5, err_msg=k)


def test_bad_arguments_give_clear_errors(tmp_path):
    images, labels = H.make_data(2)
    ds = H.dataset_fn_for(images, labels)
    with pytest.raises(ValueError, match="loss_terms"):
        make_trainer(tmp_path, loss_terms=[])
    with pytest.raises(ValueError, match="global_batch_size.*received global_batch_size=0"):
        make_trainer(tmp_path, global_batch_size=0)
    with pytest.raises(ValueError, match="unique"):
        make_trainer(tmp_path, loss_terms=[LossTerm("total", "logits/global", H.ce)])
    t = make_trainer(tmp_path / "a", loss_terms=[LossTerm("x", "logits/nope", H.ce)])
    with pytest.raises(ValueError, match=r"'logits/nope'.*available.*logits/global"):
        t.fit(ds)
    mean_loss = LossTerm("m", "logits/global", lambda y, p: tf.reduce_mean(H.ce(y, p)))
    with pytest.raises(ValueError, match=r"per-example.*shape \(\)"):
        make_trainer(tmp_path / "b", loss_terms=[mean_loss]).fit(ds)
    with pytest.raises(ValueError, match="batches of 4 images but global_batch_size=8"):
        make_trainer(tmp_path / "c").fit(lambda s: H.dataset_fn_for(images, labels, batch=4)(s))
    finite = lambda s: tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)  # noqa: E731
    with pytest.raises(ValueError, match="ran out of batches at step 3"):
        make_trainer(tmp_path / "d").fit(finite)
    t = make_trainer(tmp_path / "e")
    assert t.restore() == 0
    with pytest.raises(FileNotFoundError, match="ckpt-7"):
        t.restore(str(tmp_path / "e" / "ckpt-7"))
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        t.restore(str(tmp_path))


def _spawn_training(out_dir, checkpoint_every, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    stdout = open(tmp_path / "child.out", "w")
    stderr = open(tmp_path / "child.err", "w")
    proc = subprocess.Popen([sys.executable, str(HELPER), "train", str(out_dir),
                             str(checkpoint_every)], env=env, stdout=stdout, stderr=stderr)
    state = pathlib.Path(out_dir) / "checkpoints" / "checkpoint"
    deadline = time.time() + 240
    while not state.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"training child never checkpointed:\n"
                                 f"{(tmp_path / 'child.err').read_text()[-3000:]}")
        time.sleep(0.05)
    return proc


@pytest.mark.slow
def test_sigterm_subprocess_checkpoints_final_step(tmp_path):
    out = tmp_path / "run"
    proc = _spawn_training(out, 20, tmp_path)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, (tmp_path / "child.err").read_text()[-3000:]
    report = json.loads((tmp_path / "child.out").read_text().strip().splitlines()[-1])
    assert report["stopped_early"] == "signal SIGTERM" and report["handler_restored"]
    assert report["steps"] >= 20 and report["latest"].endswith(f"ckpt-{report['steps']}")
    resumed = H.long_run_trainer(str(out), 20)
    assert resumed.restore() == report["steps"]
    total = sum(float(np.sum(w)) for w in resumed.model.get_weights())
    assert total == pytest.approx(report["weights_sum"], rel=1e-6)  # the final weights were saved


@pytest.mark.slow
def test_sigkill_at_random_moment_leaves_latest_checkpoint_loadable(tmp_path):
    seed = random.randrange(10**6)
    delay = random.Random(seed).uniform(0.0, 1.5)
    out = tmp_path / "run"
    proc = _spawn_training(out, 1, tmp_path)  # checkpoint EVERY step: kills land mid-save
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    msg = f"seed={seed} delay={delay:.3f}s"
    resumed = H.long_run_trainer(str(out), 1)
    latest = resumed._ckpt.latest
    step = resumed.restore()
    assert step >= 1 and latest.endswith(f"ckpt-{step}"), msg
    # The latest checkpoint is complete. (Older listed ones may be gone or partly deleted:
    # CheckpointManager records the new checkpoint, then deletes the oldest file by file, then
    # rewrites the list, so a kill in between leaves a dead name listed; resuming ignores it.)
    assert tf.train.load_checkpoint(latest).has_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"), msg
    read_scalars(out / "logs")  # a torn last line is tolerated
    resumed = H.long_run_trainer(str(out), 1, max_steps=step + 3)
    assert resumed.restore() == step
    result = resumed.fit(H.long_run_dataset_fn())
    assert result.steps == step + 3 and np.isfinite(result.losses["total"]), msg
    assert resumed._ckpt.latest.endswith(f"ckpt-{step + 3}"), msg


@pytest.mark.slow
def test_two_replicas_equal_one_replica(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, str(HELPER), "equality", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = np.load(tmp_path / "result.npz")
    for opt in ("sgd", "adam"):
        one, two = f"{opt}_1_sync", f"{opt}_2_sync"
        assert int(r[f"{one}/replicas"]) == 1 and int(r[f"{two}/replicas"]) == 2
        assert int(r[f"{two}/traces"]) == 1
        keys = [k.split("/", 1)[1] for k in r.files
                if k.startswith(one + "/") and k.split("/", 1)[1] not in ("replicas", "traces")]
        assert any(k.startswith("w/bn/moving_") for k in keys)
        assert any(k.startswith("opt/") for k in keys)
        for k in keys:  # losses of both steps, weights incl. BN stats, optimizer slots
            np.testing.assert_allclose(r[f"{two}/{k}"], r[f"{one}/{k}"], rtol=0, atol=1e-5,
                                       err_msg=f"{opt}: {k}")
        assert np.all(np.abs(r[f"{one}/w/conv/kernel"] - H.tiny_model().get_weights()[0]) > 0)
    # Without sync BN, 2 replicas normalise 4-image halves: the loss really differs, so the
    # equality above is not vacuous.
    assert abs(r["sgd_2_nosync/loss/total"][0] - r["sgd_1_sync/loss/total"][0]) > 1e-4
