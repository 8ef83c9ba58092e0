"""CollaborativeAttention: adjacent part slices merged by max, against NumPy; gradients; config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.layers import CollaborativeAttention


def np_collaborative(parts, window=2):
    """Loop reference: feature k = elementwise max of parts k .. k + window - 1."""
    n = parts.shape[1]
    out = np.empty((parts.shape[0], n - window + 1, *parts.shape[2:]), parts.dtype)
    for k in range(n - window + 1):
        out[:, k] = parts[:, k]
        for j in range(1, window):
            out[:, k] = np.maximum(out[:, k], parts[:, k + j])
    return out


@pytest.fixture(scope="module")
def parts():
    return np.random.default_rng(0).normal(size=(3, 7, 1, 6)).astype("float32")


@pytest.mark.parametrize("n", [2, 3, 5, 7])
def test_pairs_of_adjacent_parts(parts, n):
    y = np.asarray(CollaborativeAttention()(parts[:, :n]))
    assert y.shape == (3, n - 1, 1, 6)
    np.testing.assert_array_equal(y, np_collaborative(parts[:, :n]))


def test_hand_computed_example():
    p = np.array([1.0, 5.0, 2.0, -1.0, 3.0], "float32").reshape(1, 5, 1, 1)
    np.testing.assert_array_equal(np.asarray(CollaborativeAttention()(p)).ravel(), [5, 5, 2, 3])
    np.testing.assert_array_equal(np.asarray(CollaborativeAttention(3)(p)).ravel(), [5, 5, 3])
    np.testing.assert_array_equal(np.asarray(CollaborativeAttention(1)(p)).ravel(), p.ravel())


@pytest.mark.parametrize("window", [3, 4])
def test_wider_windows(parts, window):
    np.testing.assert_array_equal(np.asarray(CollaborativeAttention(window)(parts)),
                                  np_collaborative(parts, window))


def test_wider_maps_pool_rows_only():
    x = np.random.default_rng(2).normal(size=(2, 5, 3, 4)).astype("float32")
    np.testing.assert_array_equal(np.asarray(CollaborativeAttention()(x)), np_collaborative(x))


def test_gradient_goes_to_the_larger_neighbour():
    p = tf.constant([1.0, 5.0, 2.0, -1.0, 3.0], shape=(1, 5, 1, 1))
    with tf.GradientTape() as tape:
        tape.watch(p)
        total = tf.reduce_sum(CollaborativeAttention()(p))
    # outputs max(1,5)=5, max(5,2)=5, max(2,-1)=2, max(-1,3)=3: part 1 wins twice
    np.testing.assert_array_equal(tape.gradient(total, p).numpy().ravel(), [0, 2, 1, 0, 1])


def test_symbolic_shape_and_config_round_trip(tmp_path, parts):
    layer = CollaborativeAttention(window=2, name="ca")
    assert layer.compute_output_shape((None, 7, 1, 4096)) == (None, 6, 1, 4096)
    inp = keras.Input((7, 1, 6))
    model = keras.Model(inp, layer(inp))
    assert tuple(model.output.shape) == (None, 6, 1, 6)
    assert layer.get_config()["window"] == 2
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(np.asarray(again(parts)), np.asarray(model(parts)))


@pytest.mark.parametrize("window", [0, -1, 2.0, True])
def test_bad_window(window):
    with pytest.raises(ValueError, match=f"window={window!r}"):
        CollaborativeAttention(window)


def test_too_few_parts():
    with pytest.raises(ValueError, match=r"1 part\(s\).*window=2.*at least 2 parts"):
        CollaborativeAttention()(np.zeros((1, 1, 1, 4), "float32"))


def test_dynamic_part_count_is_rejected():
    with pytest.raises(ValueError, match="static n"):
        CollaborativeAttention()(keras.Input((None, 1, 4)))
