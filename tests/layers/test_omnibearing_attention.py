"""OmnibearingAttention (AANet OFA = FCA then MSA) against NumPy, ablation variants, gradients,
serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aanet_reference import fca, msa, randomise
from tfreid.layers import OmnibearingAttention


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(2, 7, 5, 32)).astype("float32")


def build(x, **kwargs):
    layer = OmnibearingAttention(**kwargs)
    layer.build(x.shape)
    w_fca = randomise(layer.fca, 1) if layer.fca is not None else None
    w_msa = randomise(layer.msa, 2) if layer.msa is not None else None
    return layer, w_fca, w_msa


@pytest.mark.parametrize("stride,layout", [(1, "compact"), (2, "compact"), (2, "literal")])
def test_fca_then_msa_matches_numpy(x, stride, layout):
    """A = MSA(F_in * FCA(F_in)) with the block's output width and stride."""
    layer, w_fca, w_msa = build(x, filters=64, strides=stride, reduction=8, msa_layout=layout)
    assert layer.msa.layout == layout
    got = np.asarray(layer(x, training=False))
    want = msa(x * fca(x, w_fca), w_msa, stride=stride, layout=layout)
    assert got.shape == (2, -(-7 // stride), -(-5 // stride), 64) == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # the channel attention really enters: MSA on the raw input differs
    assert np.abs(msa(x, w_msa, stride=stride, layout=layout) - want).max() > 1e-3


def test_msa_only(x):
    layer, w_fca, w_msa = build(x, filters=16, use_fca=False)
    assert w_fca is None
    np.testing.assert_allclose(np.asarray(layer(x)), msa(x, w_msa), rtol=1e-4, atol=1e-5)


def test_fca_only_weights_output_channels_everywhere(x):
    layer, w_fca, w_msa = build(x, filters=48, strides=2, use_msa=False, reduction=4)
    assert w_msa is None
    got = np.asarray(layer(x))
    assert got.shape == (2, 4, 3, 48)
    want = np.broadcast_to(fca(x, w_fca), (2, 4, 3, 48))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_gradients_reach_input_fca_and_msa(x):
    # seeded weights: with random init the 4 ReLU units of FCA's reduce conv can all be off for
    # both samples, which zeroes that kernel's gradient (seen once in CI)
    layer, _, _ = build(x, filters=64, reduction=8)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        a = layer(xt, training=True)
        loss = tf.reduce_sum(a * tf.random.stateless_normal(a.shape, seed=(3, 4)))
    names = [w.path for w in layer.trainable_weights]
    assert any("/fca/" in n for n in names) and any("/msa/" in n for n in names)
    for g in tape.gradient(loss, [xt, *layer.trainable_weights]):
        assert g is not None and np.isfinite(g).all() and float(tf.reduce_max(tf.abs(g))) > 0


def test_serialisation_round_trip(x, tmp_path):
    inputs = keras.Input((7, 5, 32))
    layer = OmnibearingAttention(16, strides=2, reduction=4, spatial_reduction=8, kernel_sizes=(1, 3),
                                 msa_layout="literal", name="ofa")
    model = keras.Model(inputs, layer(inputs))
    randomise(layer, 6)
    model.save(tmp_path / "ofa.keras")
    loaded = keras.saving.load_model(tmp_path / "ofa.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
    config = loaded.get_layer("ofa").get_config()
    assert {k: config[k] for k in ("filters", "strides", "reduction", "spatial_reduction", "kernel_sizes",
                                   "use_fca", "use_msa", "msa_layout")} == {
        "filters": 16, "strides": 2, "reduction": 4, "spatial_reduction": 8, "kernel_sizes": [1, 3],
        "use_fca": True, "use_msa": True, "msa_layout": "literal"}


@pytest.mark.parametrize("kwargs,match", [
    ({"filters": 8, "use_fca": False, "use_msa": False}, "needs use_fca or use_msa"),
    ({"filters": 8, "strides": 4}, "strides"),
    ({"filters": 8, "use_fca": 1}, "use_fca"),
    ({"filters": 8, "spatial_reduction": 0}, "spatial_reduction"),
    ({"filters": None}, "filters"),
    ({"filters": 8, "msa_layout": "wide"}, "layout"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OmnibearingAttention(**kwargs)
