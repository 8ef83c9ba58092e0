"""HA-CNN's opt-in hard-attention options (localisation experiments) reach every level, and a
frozen theta stays at the stripes through a training step; the defaults are the paper's."""

import keras
import numpy as np
import tensorflow as tf

from tfreid.config import parse_overrides
from tfreid.models import build_model, small_overrides

SMALL = small_overrides("hacnn")
STRIPES = np.stack([np.zeros(4), np.tanh([-0.75, -0.25, 0.25, 0.75])], axis=1)


def hard_layers(model):
    return [model.get_layer(f"ha{level}").hard for level in (1, 2, 3)]


def test_defaults_are_the_paper_design():
    for hard in hard_layers(build_model("hacnn", 5, **SMALL)):
        assert (hard.pooling, hard.center, hard.frozen, hard.fc.trainable) == ("average", False, False, True)


def test_one_set_flag_reaches_every_level():
    kwargs = parse_overrides(["model.kwargs.hard_attention.pooling=stripes",
                              "model.kwargs.hard_attention.center=true"])["model"]["kwargs"]
    model = build_model("hacnn", 5, **SMALL, **kwargs)
    for hard, width in zip(hard_layers(model), SMALL["widths"]):
        assert hard.pooling == "stripes" and hard.center
        assert tuple(hard.fc.kernel.shape) == (8 * width, 8)
    out = model(np.random.default_rng(0).normal(size=(2, 160, 64, 3)).astype("float32"), training=True)
    assert out["attention/theta_3"].shape == (2, 4, 2)


def test_frozen_theta_stays_at_the_stripes_while_training():
    keras.utils.set_random_seed(0)
    model = build_model("hacnn", 5, **SMALL, hard_attention={"frozen": True})
    assert not [v for v in model.trainable_variables if "/hard/" in v.path]
    images = np.random.default_rng(1).normal(size=(4, 160, 64, 3)).astype("float32")
    opt = keras.optimizers.Adam(1e-2)
    with tf.GradientTape() as tape:
        out = model(images, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(np.arange(4), out["logits/local"],
                                                                           from_logits=True))
    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    after = model(images, training=False)
    for level in (1, 2, 3):
        np.testing.assert_allclose(np.asarray(after[f"attention/theta_{level}"]),
                                   np.broadcast_to(STRIPES, (4, 4, 2)), rtol=1e-6)
