"""AdaptiveConcatPooling2D against independent NumPy loops of CAN Eq. (1) and of PyTorch's bins."""

import keras
import numpy as np
import pytest

from tfreid.layers import AdaptiveConcatPooling2D


# ----------------------------------------------------------------------------- NumPy reference
def paper_windows(size, out):
    """CAN Eq. (1): stride = floor(IS / OS), kernel = IS - (OS - 1) * stride, padding 0."""
    stride = size // out
    kernel = size - (out - 1) * stride
    return [(i * stride, i * stride + kernel) for i in range(out)]


def pytorch_windows(size, out):
    """PyTorch adaptive pooling: [floor(i * IS / OS), ceil((i + 1) * IS / OS)), integer maths."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def np_pool(x, out_hw, windows):
    """[B, H, W, C] -> [B, OH, OW, 2C] = [max, avg], one window at a time."""
    b, h, w, c = x.shape
    rows, cols = windows(h, out_hw[0]), windows(w, out_hw[1])
    y = np.zeros((b, len(rows), len(cols), 2 * c))
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            patch = x[:, r0:r1, c0:c1, :].astype(np.float64)
            y[:, i, j, :c] = patch.max(axis=(1, 2))
            y[:, i, j, c:] = patch.mean(axis=(1, 2))
    return y


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(2, 24, 8, 5)).astype("float32")


# ----------------------------------------------------------------------------- the windows themselves
def test_windows_of_the_docstring_example():
    assert paper_windows(24, 5) == [(0, 8), (4, 12), (8, 16), (12, 20), (16, 24)]
    assert pytorch_windows(24, 5) == [(0, 5), (4, 10), (9, 15), (14, 20), (19, 24)]
    assert paper_windows(24, 7) == [(3 * i, 3 * i + 6) for i in range(7)]
    assert pytorch_windows(24, 7) == [(0, 4), (3, 7), (6, 11), (10, 14), (13, 18), (17, 21), (20, 24)]
    assert paper_windows(24, 3) == pytorch_windows(24, 3) == [(0, 8), (8, 16), (16, 24)]


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("out_hw", [(1, 1), (3, 1), (5, 1), (7, 1), (24, 8), (7, 3), (5, 8), (1, 3)])
@pytest.mark.parametrize("rule,windows", [("paper", paper_windows), ("pytorch", pytorch_windows)])
def test_matches_numpy_reference(x, out_hw, rule, windows):
    y = np.asarray(AdaptiveConcatPooling2D(out_hw, bin_rule=rule)(x))
    assert y.shape == (2, *out_hw, 10)
    np.testing.assert_allclose(y, np_pool(x, out_hw, windows), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("out_h", [5, 7])
def test_rules_differ_where_os_does_not_divide_is(x, out_h):
    """IS=24 with OS=5 or 7: the two rules give different windows, so different values."""
    paper = np.asarray(AdaptiveConcatPooling2D((out_h, 1))(x))
    torch = np.asarray(AdaptiveConcatPooling2D((out_h, 1), bin_rule="pytorch")(x))
    assert np.abs(paper - torch).max() > 0.1


def test_rules_agree_where_os_divides_is(x):
    paper = np.asarray(AdaptiveConcatPooling2D((3, 1))(x))
    torch = np.asarray(AdaptiveConcatPooling2D((3, 1), bin_rule="pytorch")(x))
    np.testing.assert_allclose(paper, torch, rtol=1e-6, atol=1e-6)


def test_pytorch_rule_is_keras_adaptive_pooling(x):
    """The "pytorch" rule equals Keras' own adaptive layers (where they run: every OS >= 2;
    Keras' AdaptiveMaxPooling2D crashes the process for an output size of 1)."""
    y = np.asarray(AdaptiveConcatPooling2D((7, 3), bin_rule="pytorch")(x))
    k_max = np.asarray(keras.layers.AdaptiveMaxPooling2D((7, 3))(x))
    k_avg = np.asarray(keras.layers.AdaptiveAveragePooling2D((7, 3))(x))
    np.testing.assert_allclose(y, np.concatenate([k_max, k_avg], -1), rtol=1e-6, atol=1e-6)
    y1 = np.asarray(AdaptiveConcatPooling2D((5, 1), bin_rule="pytorch")(x))[..., 5:]
    np.testing.assert_allclose(y1, np.asarray(keras.layers.AdaptiveAveragePooling2D((5, 1))(x)),
                               rtol=1e-6, atol=1e-6)


def test_gradient_routes_to_window_maxima_and_means():
    """d sum(output) / d x: each max window adds 1 at its argmax, each mean window 1/size."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(1).permutation(24 * 2).reshape(1, 24, 2, 1), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(AdaptiveConcatPooling2D((7, 1))(x))
    grad = tape.gradient(total, x).numpy()[0, :, :, 0]
    want = np.zeros((24, 2))
    xn = x.numpy()[0, :, :, 0]
    for r0, r1 in paper_windows(24, 7):
        window = xn[r0:r1]
        row, col = np.unravel_index(window.argmax(), window.shape)  # values are distinct
        want[r0 + row, col] += 1
        want[r0:r1] += 1.0 / window.size
    np.testing.assert_allclose(grad, want, rtol=1e-6)


def test_bfloat16_policy_keeps_dtype(x):
    layer = AdaptiveConcatPooling2D((7, 1), dtype="mixed_bfloat16")
    y = layer(x.astype("float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    np.testing.assert_allclose(np.asarray(y, np.float32), np_pool(x, (7, 1), paper_windows), rtol=2e-2, atol=2e-2)


# ----------------------------------------------------------------------------- shapes, config, errors
def test_compute_output_shape_and_symbolic_call():
    layer = AdaptiveConcatPooling2D(5)
    assert layer.compute_output_shape((None, 24, 8, 16)) == (None, 5, 5, 32)
    out = layer(keras.Input((24, 8, 16)))
    assert tuple(out.shape) == (None, 5, 5, 32)


def test_config_round_trip_in_a_saved_model(tmp_path, x):
    inp = keras.Input((24, 8, 5))
    out = AdaptiveConcatPooling2D((5, 1), bin_rule="pytorch", name="pool")(inp)
    model = keras.Model(inp, out)
    layer = model.get_layer("pool")
    assert layer.get_config()["output_size"] == (5, 1) and layer.get_config()["bin_rule"] == "pytorch"
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))


@pytest.mark.parametrize("kwargs,message", [
    ({"output_size": 0}, "output_size"),
    ({"output_size": (3, 1, 1)}, "output_size"),
    ({"output_size": (3, True)}, "output_size"),
    ({"output_size": "3"}, "output_size"),
    ({"output_size": 3, "bin_rule": "torch"}, "bin_rule='torch'"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveConcatPooling2D(**kwargs)


def test_output_larger_than_input_is_rejected():
    with pytest.raises(ValueError, match=r"output_size=\(9, 1\) exceeds the input height 8"):
        AdaptiveConcatPooling2D((9, 1))(np.zeros((1, 8, 4, 2), "float32"))


def test_dynamic_spatial_size_is_rejected():
    with pytest.raises(ValueError, match=r"static H, W and C, received shape \(None, None, 8, 4\) "
                                         r"\(H is not static\)"):
        AdaptiveConcatPooling2D(1)(keras.Input((None, 8, 4)))
