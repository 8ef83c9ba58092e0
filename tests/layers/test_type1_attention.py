"""ADFL Type I (long-range) attention layers against the supplementary Eq. (5)-(11) in NumPy."""

import numpy as np
import pytest

import adfl_reference as ref
from tfreid.layers import BatchAttention, ChannelSelfAttention, HyperAttention, PositionAttention

SHAPE = (2, 5, 3, 16)  # B, H, W, C: 15 positions, small enough for the per-position reference


@pytest.fixture
def x():
    return ref.random_map(SHAPE)


# ----------------------------------------------------------------------------- values
def test_position_attention_matches_eq_5_6(x):
    layer = ref.built(PositionAttention(reduction=8, return_attention=True), x, alpha=0.8)
    assert layer.query.kernel.shape == (1, 1, 16, 2) and layer.value.kernel.shape == (1, 1, 16, 16)
    out, received = (np.asarray(t) for t in layer(x))
    want, want_map = ref.position(x, *(np.asarray(w) for w in (
        layer.query.kernel, layer.query.bias, layer.key.kernel, layer.key.bias,
        layer.value.kernel, layer.value.bias)), 0.8)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(received, want_map, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(received.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    assert np.abs(out - x).max() > 0.1  # alpha != 0: the context really is added


def test_channel_self_attention_matches_eq_7_8(x):
    layer = ref.built(ChannelSelfAttention(), x, alpha=-0.6)
    np.testing.assert_allclose(np.asarray(layer(x)), ref.channel_self(x, -0.6), rtol=1e-4, atol=1e-5)


def test_hyper_attention_matches_eq_9(x):
    layer = ref.built(HyperAttention(reduction=8, return_attention=True), x, alpha=1.3)
    assert layer.query.kernel.shape == (1, 1, 16, 2) and layer.expand.kernel.shape == (1, 1, 2, 16)
    out, received = (np.asarray(t) for t in layer(x))
    weights = [np.asarray(w) for conv in (layer.query, layer.key, layer.value, layer.expand)
               for w in (conv.kernel, conv.bias)]
    want, want_map = ref.hyper(x, *weights, 1.3)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(received, want_map, rtol=1e-4, atol=1e-6)


def test_batch_attention_matches_eq_10_11(x):
    x4 = np.random.default_rng(3).normal(0.0, 0.1, (4, 5, 3, 16)).astype("float32")
    layer = ref.built(BatchAttention(), x4, alpha=0.9)
    np.testing.assert_allclose(np.asarray(layer(x4)), ref.batch(x4, 0.9), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", [PositionAttention, ChannelSelfAttention, HyperAttention, BatchAttention])
def test_alpha_starts_at_zero_so_the_layer_starts_as_identity(make, x):
    layer = make(reduction=8) if make in (PositionAttention, HyperAttention) else make()
    out = layer(x)
    assert float(layer.alpha.numpy()) == 0.0 and layer.alpha.trainable
    np.testing.assert_array_equal(np.asarray(out), x)


# ----------------------------------------------------------------------------- batch dependence
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")  # the batch of one
def test_batch_attention_depends_on_batch_composition():
    """The documented caveat: a sample's output changes with its batch-mates (alpha != 0)."""
    rng = np.random.default_rng(4)
    a, b, c = (rng.normal(0.0, 0.1, (1, 5, 3, 16)).astype("float32") for _ in range(3))
    layer = ref.built(BatchAttention(), np.concatenate([a, b]), alpha=0.9)
    with_b = np.asarray(layer(np.concatenate([a, b])))[0]
    with_c = np.asarray(layer(np.concatenate([a, c])))[0]
    alone = np.asarray(layer(a))[0]
    assert np.abs(with_b - with_c).max() > 1e-3
    np.testing.assert_allclose(alone, 1.9 * a[0], rtol=1e-6)  # batch of one: A = [[1]]
    # permuting the batch permutes the outputs (no position in the batch is special)
    abc = np.concatenate([a, b, c])
    np.testing.assert_allclose(np.asarray(layer(abc[::-1]))[::-1], np.asarray(layer(abc)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("make", [
    lambda: PositionAttention(reduction=8, dtype="float64"),
    lambda: ChannelSelfAttention(dtype="float64"),
    lambda: HyperAttention(reduction=8, dtype="float64"),
    lambda: BatchAttention(dtype="float64"),
], ids=["1s", "1c", "1h", "1b"])
def test_gradients_match_finite_differences(make):
    x = ref.random_map((3, 4, 3, 16), seed=5, scale=0.3, dtype="float64")
    ref.check_gradients(ref.built(make(), x, seed=6, alpha=0.7), x)


# ----------------------------------------------------------------------------- serialisation etc.
@pytest.mark.parametrize("make", [
    lambda: PositionAttention(reduction=4, use_bias=False, return_attention=True, name="pa"),
    lambda: ChannelSelfAttention(name="ca"),
    lambda: HyperAttention(reduction=4, return_attention=True, name="ha"),
    lambda: BatchAttention(name="ba"),
], ids=["1s", "1c", "1h", "1b"])
def test_config_round_trip_and_keras_file(make, x, tmp_path):
    ref.check_serialisation(ref.built(make(), x, seed=7, alpha=0.5), x, tmp_path)


@pytest.mark.parametrize("make,scale", [(PositionAttention, 3.0), (BatchAttention, 5.0)], ids=["1s", "1b"])
def test_mixed_precision_runs_attention_in_float32(make, scale):
    """1b's energies are sums of 3072 products (~75,000 here): float16 (max 65,504) would give
    inf and NaN outputs; the float32 attention stays finite and close to the float32 layer."""
    big = np.random.default_rng(8).normal(0.0, scale, (2, 12, 4, 64)).astype("float32")
    full = ref.built(make(), big, seed=9, alpha=0.5)
    half = ref.built_under_policy("mixed_float16", make, big)
    half.set_weights(full.get_weights())
    out, want = np.asarray(half(big)), np.asarray(full(big))
    assert out.dtype == np.float16 and np.isfinite(out).all()
    # float16 rounding of the projections moves a few near-tied softmax rows; on average the
    # outputs agree to float16 precision
    assert np.abs(out - want).mean() < 1e-2 * np.abs(want).mean()


def test_bad_arguments():
    with pytest.raises(ValueError, match="reduction"):
        PositionAttention(reduction=0)
    with pytest.raises(ValueError, match="return_attention"):
        HyperAttention(return_attention="yes")
    with pytest.raises(ValueError, match=r"C=4 must be >= reduction=8"):
        PositionAttention()(np.zeros((1, 3, 3, 4), "float32"))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        ChannelSelfAttention()(np.zeros((2, 16), "float32"))
