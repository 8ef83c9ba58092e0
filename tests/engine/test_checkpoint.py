"""Checkpoints hold EVERY model variable, including BN statistics inside nested custom layers."""

import keras
import numpy as np
import tensorflow as tf

from tfreid import config as config_lib
from tfreid.engine.checkpoint import CheckpointKeeper
from tfreid.models import build_model, embedding_model
from tfreid.runs import RunDir, load_run, model_variables


def _hacnn(seed):
    keras.utils.set_random_seed(seed)
    return build_model("hacnn", 5)


def test_restore_reproduces_every_variable_of_hacnn(tmp_path):
    model = _hacnn(1)
    # Moving statistics are not trainable (the optimizer does not reference them): give them
    # values a fresh model cannot have, then require them back after the restore.
    for v in model.non_trainable_weights:
        v.assign(np.random.default_rng(0).uniform(0.5, 2.0, v.shape).astype("float32"))
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    keeper = CheckpointKeeper(tmp_path / "checkpoints", model, optimizer,
                              tf.Variable(7, dtype=tf.int64))
    prefix = keeper.save()
    saved = {name for name, _ in tf.train.list_variables(prefix) if name.startswith("model/")}
    assert len(saved) == len(model.weights) == len(model_variables(model))

    RunDir.create(tmp_path, config_lib.resolve("hacnn", None, {}, []), num_classes=5)
    keras.utils.set_random_seed(2)  # the rebuilt model starts from different weights
    _, restored, path = load_run(tmp_path)
    assert path == prefix
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    images = tf.random.stateless_normal((2, 160, 64, 3), seed=(1, 2))
    np.testing.assert_allclose(embedding_model(model)(images, training=False),
                               embedding_model(restored)(images, training=False), atol=1e-6)
