"""NonLocalAttention (Wang et al.; CCAN's SS without concat/alpha) against NumPy."""

import keras
import numpy as np
import pytest

import ccan_reference as ref
from tfreid.layers import NonLocalAttention, SymmetricSelfAttention

B, M, N, C = 2, 3, 4, 16


@pytest.fixture
def x():
    return ref.random_map((B, M, N, C))


@pytest.mark.parametrize("pairwise", ["dot", "embedded_gaussian"])
@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_matches_numpy(x, pairwise, activation):
    layer = NonLocalAttention(pairwise=pairwise, activation=activation, return_attention=True)
    layer(x)
    w = ref.set_random(layer, 1)
    assert sorted(w) == ["f_kernel", "g_kernel", "h_kernel", "w_kernel"]  # no W_alpha
    z, attended = layer(x)
    want_z, want_map = ref.self_attention(x, w["g_kernel"], w["f_kernel"], w["h_kernel"], w["w_kernel"],
                                          pairwise=pairwise, activation=activation)
    np.testing.assert_allclose(np.asarray(z), want_z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(attended), want_map, rtol=1e-5, atol=1e-6)
    if pairwise == "embedded_gaussian":  # softmax rows: column means sum to 1 over positions
        np.testing.assert_allclose(np.asarray(attended).sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)


def test_is_symmetric_self_attention_without_concat_and_alpha(x):
    """CCAN Remark 2: removing [A', A'^T] W_alpha from SS gives the (dot, ReLU) non-local block.
    With W_alpha = [I; 0] the SS layer computes ReLU(A') = A' (A' >= 0 after ReLU projections)."""
    nl = NonLocalAttention()
    nl(x)
    ref.set_random(nl, 2)
    p = M * N
    ss = SymmetricSelfAttention()
    ss(x)
    by_name = {w.name: np.asarray(w) for w in nl.weights}
    by_name["alpha_kernel"] = np.concatenate([np.eye(p), np.zeros((p, p))])
    ss.set_weights([by_name[w.name] for w in ss.weights])
    np.testing.assert_allclose(np.asarray(ss(x)), np.asarray(nl(x)), rtol=1e-5, atol=1e-6)


def test_any_spatial_size_and_dynamic_shapes(x):
    layer = NonLocalAttention()
    layer(x)
    assert layer(np.ones((1, 7, 5, C), "float32")).shape == (1, 7, 5, C)
    inp = keras.Input((None, None, C))
    model = keras.Model(inp, NonLocalAttention(return_attention=True)(inp))
    z, attended = model(x)
    assert z.shape == x.shape and attended.shape == (B, M, N, 1)


def test_gradient_matches_central_differences():
    rng = np.random.default_rng(3)
    x = rng.normal(0.5, 1.0, (1, 2, 2, 16))
    layer = NonLocalAttention(pairwise="embedded_gaussian", dtype="float64")
    layer(x)
    ref.set_random(layer, 4, scale=0.5)
    ref.check_input_gradient(layer, x, rng.normal(size=x.shape))


def test_config_and_keras_file_round_trip(x, tmp_path):
    layer = NonLocalAttention(reduction=4, pairwise="embedded_gaussian", activation="linear", name="nl")
    model, loaded = ref.saved_and_loaded(layer, x, tmp_path, seed=5)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="pairwise='gaussian'"):
        NonLocalAttention(pairwise="gaussian")
    with pytest.raises(ValueError, match="activation='sigmoid'"):
        NonLocalAttention(activation="sigmoid")
    with pytest.raises(ValueError, match="channels C=4 must be >= reduction=8"):
        NonLocalAttention()(np.zeros((1, 2, 2, 4), "float32"))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        NonLocalAttention()(np.zeros((2, 4, 16), "float32"))
