"""Tests for tfreid.engine.strategy."""

import os
import pathlib
import subprocess
import sys
import textwrap

import keras
import pytest
import tensorflow as tf

from tfreid.engine.strategy import (configure_cpu_replicas, create_strategy, describe_devices,
                                    enable_sync_batchnorm)

REPO = pathlib.Path(__file__).resolve().parents[2]
NO_GPU = not tf.config.list_physical_devices("GPU")


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5, True])
def test_bad_replica_counts_raise_value_error(bad):
    with pytest.raises(ValueError, match=r"`replicas` must be a positive integer.*received"):
        create_strategy(bad)
    with pytest.raises(ValueError, match=r"`n` must be a positive integer"):
        configure_cpu_replicas(bad)


@pytest.mark.skipif(not NO_GPU, reason="CPU-only behaviour")
@pytest.mark.parametrize("replicas", [None, 1])
def test_single_cpu_strategy_has_one_replica_context(replicas):
    strategy = create_strategy(replicas)
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert strategy.num_replicas_in_sync == 1
    # A real replica context: all_reduce works, so the trainer's code path is the N-replica one.
    out = strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("SUM", 3.0))
    assert float(strategy.reduce("SUM", out, axis=None)) == 3.0


@pytest.mark.skipif(not NO_GPU, reason="CPU-only behaviour")
def test_describe_devices_names_the_training_device():
    line = describe_devices(create_strategy(1))
    assert line.startswith("training on 1 replica: ") and "CPU:0" in line
    assert line.endswith("(no GPU visible)")


def test_configure_after_tf_init_raises_runtime_error():
    current = len(tf.config.list_logical_devices("CPU"))  # forces device initialisation
    configure_cpu_replicas(current)  # same count: idempotent no-op
    with pytest.raises(RuntimeError, match=rf"already initialised.*{current} logical CPU"):
        configure_cpu_replicas(current + 2)


class _ConvBN(keras.layers.Layer):
    """A custom layer holding a BN as an attribute (not listed by Model.layers)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.conv = keras.layers.Conv2D(2, 1)
        self.bn = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        return self.bn(self.conv(x), training=training)


def test_enable_sync_batchnorm_reaches_nested_layers():
    inner = keras.Sequential([keras.layers.Conv2D(2, 1), keras.layers.BatchNormalization()])
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.BatchNormalization()(inputs)
    x = inner(x)
    x = _ConvBN()(x)
    model = keras.Model(inputs, {"embedding": keras.layers.GlobalAveragePooling2D()(x)})
    bns = [l for l in model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 3 and not any(bn.synchronized for bn in bns)
    assert enable_sync_batchnorm(model) == 3
    assert all(bn.synchronized for bn in bns)
    assert all(bn.get_config()["synchronized"] for bn in bns)
    assert enable_sync_batchnorm(keras.Sequential([keras.layers.Dense(2)])) == 0
    with pytest.raises(ValueError, match="keras.Model/Layer; received str"):
        enable_sync_batchnorm("model")


@pytest.mark.slow
@pytest.mark.skipif(not NO_GPU, reason="logical CPU split is the CPU-only path")
def test_two_logical_cpu_replicas_in_fresh_process():
    script = textwrap.dedent("""
        import tensorflow as tf
        from tfreid.engine.strategy import configure_cpu_replicas, create_strategy
        configure_cpu_replicas(2)
        configure_cpu_replicas(2)  # idempotent before init
        s = create_strategy(2)
        print("type", type(s).__name__)
        print("replicas", s.num_replicas_in_sync)
        print("devices", ",".join(sorted(d.split("/")[-1] for d in s.extended.worker_devices)))
        from tfreid.engine.strategy import describe_devices
        print("described", describe_devices(s))
        ctx = lambda: tf.distribute.get_replica_context()
        rid = lambda: tf.cast(ctx().replica_id_in_sync_group, tf.float32)
        out = s.run(lambda: ctx().all_reduce("SUM", rid() + 1.0))
        print("allreduce", float(s.reduce("MEAN", out, axis=None)))
        try:
            configure_cpu_replicas(3)
        except RuntimeError as e:
            print("error", "already initialised" in str(e))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert lines["type"] == "MirroredStrategy"
    assert lines["replicas"] == "2"
    assert lines["devices"] == "device:CPU:0,device:CPU:1"
    assert lines["described"].startswith("training on 2 replicas: ") and "CPU:1" in lines["described"]
    assert float(lines["allreduce"]) == 3.0  # (0 + 1) + (1 + 1) on every replica
    assert lines["error"] == "True"
