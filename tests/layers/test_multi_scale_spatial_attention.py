"""MultiScaleSpatialAttention (AANet MSA) against NumPy: values, factorisation, receptive field,
stride alignment with a strided residual block, gradients, serialisation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aanet_reference import msa, randomise
from tfreid.layers import MultiScaleSpatialAttention


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(2, 9, 7, 32)).astype("float32")


@pytest.mark.parametrize("layout", ["compact", "literal"])
@pytest.mark.parametrize("stride", [1, 2])
def test_matches_numpy(x, stride, layout):
    layer = MultiScaleSpatialAttention(48, strides=stride, layout=layout)
    layer.build(x.shape)
    w = randomise(layer, stride)
    got = np.asarray(layer(x, training=False))
    want = msa(x, w, stride=stride, layout=layout)
    assert got.shape == (2, -(-9 // stride), -(-7 // stride), 48) == layer.compute_output_shape(x.shape)
    assert want.std() > 0.05
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_compact_layout_is_the_literal_one_with_linear_expansions_composed(x):
    """Make the literal layout's expansions linear (identity BN, no ReLU): then branch b's
    expansion E_b, the sum and the fuse F equal the compact layout with fuse slice b = E_b F."""
    literal = MultiScaleSpatialAttention(48, layout="literal")
    compact = MultiScaleSpatialAttention(48, layout="compact")
    literal.build(x.shape)
    compact.build(x.shape)
    randomise(literal, 8)
    slices = []
    for units in literal.branches:
        expand = units[-1]
        expand.relu = False
        expand.bn.set_weights([np.ones(32), np.zeros(32), np.zeros(32), np.full(32, 1.0 - 1e-5)])
        slices.append(expand.conv.kernel.numpy()[0, 0] @ literal.fuse.conv.kernel.numpy()[0, 0])
    for shared, units in zip(compact.branches, literal.branches):  # reduce, 1xn, nx1
        for a, b in zip(shared, units[:-1]):
            a.set_weights(b.get_weights())
    compact.fuse.conv.kernel.assign(np.concatenate(slices, axis=0)[None, None])
    compact.fuse.bn.set_weights(literal.fuse.bn.get_weights())
    np.testing.assert_allclose(np.asarray(compact(x)), np.asarray(literal(x)), rtol=1e-4, atol=1e-5)


def test_compact_branch_structure(x):
    layer = MultiScaleSpatialAttention(48, reduction=16)
    layer.build(x.shape)
    kernels = {w.path.split("/")[-3]: tuple(w.shape) for w in layer.weights if w.name == "kernel"}
    assert kernels == {
        "b1_reduce": (1, 1, 32, 2),
        **{k: v for n in (3, 5, 7) for k, v in (
            (f"b{n}_reduce", (1, 1, 32, 2)), (f"b{n}_1x{n}", (1, n, 2, 2)), (f"b{n}_{n}x1", (n, 1, 2, 2)))},
        "fuse": (1, 1, 8, 48),  # the four 2-channel branches, each mapped straight to 48
    }


def test_literal_branch_structure_is_factorised_with_c_over_r_bottleneck(x):
    layer = MultiScaleSpatialAttention(48, reduction=16, layout="literal")
    layer.build(x.shape)
    kernels = {w.path.split("/")[-3]: tuple(w.shape) for w in layer.weights if w.name == "kernel"}
    assert kernels == {
        "b1_reduce": (1, 1, 32, 2), "b1_expand": (1, 1, 2, 32),
        **{k: v for n in (3, 5, 7) for k, v in (
            (f"b{n}_reduce", (1, 1, 32, 2)), (f"b{n}_1x{n}", (1, n, 2, 2)),
            (f"b{n}_{n}x1", (n, 1, 2, 2)), (f"b{n}_expand", (1, 1, 2, 32)))},
        "fuse": (1, 1, 32, 48),
    }


@pytest.mark.parametrize("sizes,field", [((1, 3, 5, 7), 7), ((1, 3), 3), ((1,), 1)])
def test_receptive_field_is_the_largest_branch(sizes, field):
    """An impulse moves the map exactly on the field x field window around it (1xn then nx1
    covers the full n x n square)."""
    layer = MultiScaleSpatialAttention(4, reduction=2, kernel_sizes=sizes)  # 8-channel branches
    base = np.random.default_rng(1).normal(size=(1, 11, 11, 16)).astype("float32")
    layer.build(base.shape)
    randomise(layer, 7)
    bumped = base.copy()
    bumped[0, 5, 5, :] += 3.0
    changed = np.abs(np.asarray(layer(bumped)) - np.asarray(layer(base))).max(axis=-1)[0] > 1e-6
    r = field // 2
    want = np.zeros((11, 11), bool)
    want[5 - r : 6 + r, 5 - r : 6 + r] = True
    np.testing.assert_array_equal(changed, want)


def test_stride_two_samples_the_positions_of_a_strided_1x1_block():
    """MSA(s=2) = MSA(s=1)[::2, ::2] with the same weights: the map lines up with a ResNet block
    whose 1x1 convs stride 2 (Keras ResNet-50), odd sizes included."""
    xo = np.random.default_rng(2).normal(size=(2, 7, 5, 16)).astype("float32")
    s1, s2 = MultiScaleSpatialAttention(8, strides=1), MultiScaleSpatialAttention(8, strides=2)
    s1.build(xo.shape)
    s2.build(xo.shape)
    randomise(s1, 3)
    s2.set_weights(s1.get_weights())
    np.testing.assert_allclose(np.asarray(s2(xo)), np.asarray(s1(xo))[:, ::2, ::2], rtol=1e-5, atol=1e-6)
    block_shortcut = keras.layers.Conv2D(8, 1, strides=2)(xo)  # how ResNet-50 subsamples
    assert block_shortcut.shape == s2(xo).shape


def test_training_mode_range_and_gradients(x):
    layer = MultiScaleSpatialAttention(48)
    layer.build(x.shape)
    randomise(layer, 4)  # seeded weights: the test must not depend on the global random state
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        a = layer(xt, training=True)
        loss = tf.reduce_sum(a * tf.random.stateless_normal(a.shape, seed=(1, 2)))
    a = np.asarray(a)
    assert a.min() > 0.0 and a.max() < 1.0 and a.std() > 0.05  # BN statistics: a spread map
    grads = tape.gradient(loss, [xt, *layer.trainable_weights])
    assert all(g is not None and np.isfinite(g).all() for g in grads)
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_serialisation_round_trip(x, tmp_path):
    inputs = keras.Input((9, 7, 32))
    model = keras.Model(inputs, MultiScaleSpatialAttention(16, strides=2, kernel_sizes=(1, 5), layout="literal",
                                                           name="msa")(inputs))
    randomise(model.get_layer("msa"), 5)
    model.save(tmp_path / "msa.keras")
    loaded = keras.saving.load_model(tmp_path / "msa.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
    config = loaded.get_layer("msa").get_config()
    assert {k: config[k] for k in ("filters", "strides", "reduction", "kernel_sizes", "layout")} == {
        "filters": 16, "strides": 2, "reduction": 16, "kernel_sizes": [1, 5], "layout": "literal"}


@pytest.mark.parametrize("kwargs,match", [
    ({"filters": 0}, "filters"),
    ({"filters": 8, "strides": 3}, "strides"),
    ({"filters": 8, "reduction": -2}, "reduction"),
    ({"filters": 8, "kernel_sizes": (1, 4)}, "kernel_sizes"),
    ({"filters": 8, "kernel_sizes": (3, 3)}, "kernel_sizes"),
    ({"filters": 8, "kernel_sizes": ()}, "kernel_sizes"),
    ({"filters": 8, "layout": "paper"}, "layout"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiScaleSpatialAttention(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"channels C=8 must be >= reduction=16"):
        MultiScaleSpatialAttention(4)(np.zeros((1, 3, 3, 8), "float32"))
    with pytest.raises(ValueError, match=r"static H, W and C"):
        MultiScaleSpatialAttention(4).compute_output_shape((None, None, 5, 32))
