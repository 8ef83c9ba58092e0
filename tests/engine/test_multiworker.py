"""Multi-worker training: TF_CONFIG handling, chief-only writing, 2 workers == 1 process, resume."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from tfreid import config as config_lib
from tfreid import train
from tfreid.engine.strategy import (create_strategy, resolve_tf_config, tf_config_from_hosts,
                                    worker_info)
from tfreid.runs import read_scalars

import multiworker_helpers as MW

HELPER = pathlib.Path(MW.__file__).resolve()
REPO = HELPER.parents[2]
HOSTS = "10.0.0.1:2222,10.0.0.2:2222"


def test_tf_config_from_hosts_builds_the_cluster():
    cfg = tf_config_from_hosts(HOSTS, 1)
    assert cfg == {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
                   "task": {"type": "worker", "index": 1}}
    assert tf_config_from_hosts(["a:1", "b:2", "c:3"], 2)["task"]["index"] == 2
    info = worker_info(tf_config=cfg)
    assert (info.task_id, info.num_workers, info.is_chief) == (1, 2, False)
    assert worker_info(tf_config=tf_config_from_hosts(HOSTS, 0)).is_chief
    # A cluster with an explicit chief task: worker 0 is then NOT the chief.
    with_chief = {"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                  "task": {"type": "worker", "index": 0}}
    assert not worker_info(tf_config=with_chief).is_chief
    assert worker_info(tf_config=with_chief).num_workers == 2
    assert worker_info(tf_config={**with_chief, "task": {"type": "chief", "index": 0}}).is_chief
    assert worker_info(create_strategy(1)).is_chief  # single host: always the chief


@pytest.mark.parametrize("hosts, index, match", [
    ("", 0, "not of the form host:port"), ("a:1,a:1", 0, "twice"), ("a:1,b", 0, "'b'"),
    ("a:1,b:x", 1, "host:port"), (HOSTS, 2, r"`task_index` must be an integer in \[0, 1\]"),
    (HOSTS, -1, "received -1"), ([], 0, "worker_hosts")])
def test_bad_worker_hosts_raise_clear_errors(hosts, index, match):
    with pytest.raises(ValueError, match=match):
        tf_config_from_hosts(hosts, index)


def test_resolve_tf_config_env_flags_and_conflicts(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert resolve_tf_config() is None
    assert resolve_tf_config("a:1", 0) is None  # one worker = plain single-host training
    assert resolve_tf_config(HOSTS, 1)["task"]["index"] == 1
    with pytest.raises(ValueError, match="given together"):
        resolve_tf_config(HOSTS, None)
    env = {"cluster": {"worker": ["h0:5000", "h1:5000", "h2:5000"]},
           "task": {"type": "worker", "index": 2}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(env))
    assert resolve_tf_config() == env
    with pytest.raises(ValueError, match="both TF_CONFIG and --worker-hosts"):
        resolve_tf_config(HOSTS, 0)
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["h0:1"]}, "task": {"index": 3}}')
    with pytest.raises(ValueError, match="TF_CONFIG must look like"):
        resolve_tf_config()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_tf_config()
    with pytest.raises(ValueError, match="cannot be combined with multi-worker"):
        create_strategy(2, tf_config=env)


def test_config_and_cli_validate_multiworker_keys(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    flags = {"train": {"worker_hosts": ["a:1", "b:2"], "task_index": 1}}
    cfg = config_lib.resolve("hacnn", None, flags, [])
    assert (cfg.train.worker_hosts, cfg.train.task_index) == (["a:1", "b:2"], 1)
    with pytest.raises(ValueError, match="given together"):
        config_lib.resolve("hacnn", None, {"train": {"worker_hosts": ["a:1"]}}, [])
    with pytest.raises(ValueError, match=r"`train.task_index` must be an integer in \[0, 1\]"):
        config_lib.resolve("hacnn", None, {"train": {**flags["train"], "task_index": 5}}, [])
    args = train.parse_args(["--worker-hosts", "a:1, b:2", "--task-index", "0"])
    assert train._flags(args)["train"] == {"worker_hosts": ["a:1", "b:2"], "task_index": 0}
    # Without --output each worker would pick its own timestamped run directory.
    assert train.main(["--model", "hacnn", "--worker-hosts", "127.0.0.1:1,127.0.0.1:2",
                       "--task-index", "1"]) == 2
    assert "multi-worker training needs --output" in capsys.readouterr().err


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run_workers(run_dir, result_dir, timeout=120):
    hosts = ",".join(f"127.0.0.1:{p}" for p in _free_ports(2))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="2")
    procs = [subprocess.Popen([sys.executable, str(HELPER), str(run_dir), str(result_dir), hosts,
                               str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=REPO) for i in range(2)]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, f"worker failed (rc={p.returncode}):\n{err[-3000:]}"
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:  # a hung collective would otherwise outlive the test
            if p.poll() is None:
                p.kill()
                p.wait()
    return outputs


@pytest.mark.slow  # two TF processes: ~15 s on an idle 2-core box
def test_two_workers_train_like_one_process_chief_writes_and_resumes(tmp_path):
    run_dir, result_dir = tmp_path / "run", tmp_path / "results"
    result_dir.mkdir()
    chief, other = _run_workers(run_dir, result_dir)
    steps = MW.STEPS_PER_EPOCH * MW.EPOCHS
    assert (chief["is_chief"], other["is_chief"]) == (True, False)
    assert chief["replicas"] == other["replicas"] == 2 and chief["steps"] == steps

    w0 = dict(np.load(result_dir / "worker0.npz"))
    w1 = dict(np.load(result_dir / "worker1.npz"))
    assert w0.keys() == w1.keys() and "bn/moving_mean" in w0
    for key in w0:  # all-reduced updates: both workers hold bit-identical weights
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)

    # Only the chief wrote: one checkpoint per epoch, one log line per step (not two), and the
    # other worker's temporary checkpoint folder is gone.
    assert sorted(os.listdir(run_dir)) == ["checkpoints", "logs"]
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.index"))
    assert ckpts == ["ckpt-2.index", "ckpt-4.index"]
    assert len(list((run_dir / "logs").glob("events.out.tfevents.*"))) == 1
    logged = read_scalars(run_dir / "logs")["loss/total"]
    assert [s for s, _ in logged] == list(range(1, steps + 1))
    assert other["tmp_dir"] and not other["tmp_dir_exists"] and chief["tmp_dir"] is None

    # Independent reference: one process, one replica, the same global batches. Equal weights
    # mean each worker got its own half of every global batch (DATA sharding) and the gradient
    # and synchronized-BN reductions spanned both processes.
    ref = MW.make_trainer(create_strategy(1), str(tmp_path / "ref"))
    ref.fit(MW.dataset_fn())
    ref_w = MW.weights(ref.model)
    for key in w0:
        np.testing.assert_allclose(w0[key], ref_w[key], rtol=1e-5, atol=1e-6, err_msg=key)
    ref_logged = read_scalars(tmp_path / "ref" / "logs")["loss/total"]
    np.testing.assert_allclose([v for _, v in logged], [v for _, v in ref_logged], rtol=1e-5)

    # The chief's checkpoint resumes (single process here) and continues like a straight run.
    resumed = MW.make_trainer(create_strategy(1), str(run_dir), epochs=MW.EPOCHS + 1)
    assert resumed.restore() == steps
    for key, value in MW.weights(resumed.model).items():
        np.testing.assert_array_equal(value, w0[key], err_msg=key)
    resumed.fit(MW.dataset_fn())
    straight = MW.make_trainer(create_strategy(1), str(tmp_path / "straight"),
                               epochs=MW.EPOCHS + 1)
    straight.fit(MW.dataset_fn())
    for key, value in MW.weights(straight.model).items():
        np.testing.assert_allclose(MW.weights(resumed.model)[key], value, rtol=1e-5, atol=1e-6,
                                   err_msg=key)
