"""AttentionAlignment (AANet AAM) against NumPy and hand cases: CAM -> min-max -> dual soft
threshold crop -> row means -> resize; the ACD loss on its per-class vectors; gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from aanet_reference import alignment_vector
from tfreid.layers import AttentionAlignment
from tfreid.losses import attention_cosine_distance

# A "person" on an 8 x 4 map (hand-computed below): row means 0, .1, .4, .45, .45, .35, .05, 0;
# column means .025, .425, .425, .025.
PERSON = np.array([
    [0.0, 0.0, 0.0, 0.0],
    [0.0, 0.2, 0.2, 0.0],
    [0.0, 1.0, 0.6, 0.0],
    [0.2, 0.8, 0.8, 0.0],
    [0.0, 0.6, 1.0, 0.2],
    [0.0, 0.6, 0.8, 0.0],
    [0.0, 0.2, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
], dtype="float32")


def single_channel_layer(length, t_h=0.3, t_w=0.3, weights=(1.0,)):
    """One feature channel, class n's CAM = weights[n] * feature."""
    layer = AttentionAlignment(len(weights), length=length, height_threshold=t_h, width_threshold=t_w)
    layer.build((None, 8, 4, 1))
    layer.set_weights([np.array([weights], "float32"), np.zeros(len(weights), "float32")])
    return layer


def test_hand_computed_crop_and_vector():
    # T_h = 0.3 keeps rows 2..5, T_w = 0.3 keeps columns 1..2; the crop's row means are
    # .8, .8, .8, .7; resized 4 -> 8 with half-pixel centres: src = j / 2 - 0.25 (clamped).
    layer = single_channel_layer(8)
    _, vectors = layer(PERSON[None, :, :, None])
    np.testing.assert_allclose(np.asarray(vectors)[0, 0], [0.8, 0.8, 0.8, 0.8, 0.8, 0.775, 0.725, 0.7], atol=1e-6)


def test_crop_aligns_a_vertically_shifted_person_acd_zero_for_same_identity():
    """The same body two rows lower (detector misalignment) gives the same vector; a different
    body does not. ACD: 0 between the aligned pair, > 0 against the other, and nothing between
    different identities."""
    shifted = np.zeros_like(PERSON)
    shifted[2:] = PERSON[:-2]
    other = PERSON[::-1, ::-1].copy()
    other[2, :] = [0.0, 0.1, 0.9, 0.3]
    layer = single_channel_layer(6)
    _, vectors = layer(np.stack([PERSON, shifted, other])[..., None])
    v = np.asarray(vectors)[:, 0]
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)
    assert np.abs(v[0] - v[2]).max() > 0.05
    acd = attention_cosine_distance(tf.constant([0, 0, 0]), vectors).numpy()
    cos = lambda a, b: 1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    np.testing.assert_allclose(acd, [cos(v[0], v[2]) / 2, cos(v[1], v[2]) / 2,
                                     (cos(v[2], v[0]) + cos(v[2], v[1])) / 2], rtol=1e-4, atol=1e-6)
    assert acd[0] > 0
    # identities 0, 0, 1: the pair aligns perfectly, the third has no partner
    np.testing.assert_allclose(attention_cosine_distance(tf.constant([0, 0, 1]), v).numpy(), 0, atol=1e-6)


@pytest.mark.parametrize("seed,t_h,t_w,length", [(0, 0.3, 0.3, None), (1, 0.5, 0.2, 10), (2, 0.1, 0.6, 5)])
def test_matches_numpy_for_every_class(seed, t_h, t_w, length):
    rng = np.random.default_rng(seed)
    feats = np.maximum(rng.normal(size=(3, 9, 5, 16)), 0).astype("float32")
    layer = AttentionAlignment(7, length=length, height_threshold=t_h, width_threshold=t_w)
    layer.build(feats.shape)
    kernel = rng.normal(size=(16, 7)).astype("float32")
    bias = rng.normal(size=7).astype("float32")
    layer.set_weights([kernel, bias])
    logits, vectors = (np.asarray(v) for v in layer(feats))
    assert vectors.shape == (3, 7, length or 9) and logits.shape == (3, 7)
    want = np.array([[alignment_vector(feats[b].astype("float64"), kernel[:, n].astype("float64"),
                                       t_h, t_w, length or 9) for n in range(7)] for b in range(3)])
    np.testing.assert_allclose(vectors, want, rtol=1e-4, atol=1e-5)
    assert 0.0 <= vectors.min() and vectors.max() <= 1.0
    # Eq. 3: the classifier on GAP; the mean of each CAM is its logit without the bias
    np.testing.assert_allclose(logits, feats.mean(axis=(1, 2)) @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_no_row_above_threshold_keeps_the_whole_map_and_scale_shift_invariance():
    rng = np.random.default_rng(3)
    feats = rng.uniform(size=(2, 6, 4, 8)).astype("float32")
    layer = AttentionAlignment(3, height_threshold=1.0, width_threshold=1.0)
    layer.build(feats.shape)
    kernel = layer.get_weights()[0]
    _, vectors = layer(feats)
    for b in range(2):
        for n in range(3):
            cam = feats[b] @ kernel[:, n]
            norm = (cam - cam.min()) / (cam.max() - cam.min())
            np.testing.assert_allclose(np.asarray(vectors)[b, n], norm.mean(axis=1), rtol=1e-4, atol=1e-5)
    # min-max normalisation: a positive scale and a constant offset of the features change nothing
    layer.height_threshold = layer.width_threshold = 0.3
    _, base = layer(feats)
    _, moved = layer(3.0 * feats + 0.7)
    np.testing.assert_allclose(np.asarray(moved), np.asarray(base), rtol=1e-4, atol=1e-5)


def test_flat_cam_gives_zero_vector_and_finite_gradients():
    layer = AttentionAlignment(2)
    feats = tf.ones((2, 6, 4, 8))
    with tf.GradientTape() as tape:
        tape.watch(feats)
        _, vectors = layer(feats)
        loss = tf.reduce_sum(attention_cosine_distance(tf.constant([0, 0]), vectors))
    np.testing.assert_array_equal(np.asarray(vectors), 0.0)
    for g in tape.gradient(loss, [feats, layer.kernel]):
        assert g is None or np.isfinite(g).all()


def test_gradients_match_finite_differences_and_only_true_class_columns_move():
    """The crop bounds are piecewise constant: away from a threshold the analytic gradient of the
    vectors equals the numerical one through the CAM values (min-max, row means, interpolation)."""
    rng = np.random.default_rng(4)
    feats = np.maximum(rng.normal(size=(2, 8, 4, 6)), 0).astype("float32") + 0.1
    labels = tf.constant([2, 0])
    layer = AttentionAlignment(4, length=5)
    layer.build(feats.shape)
    probe = tf.constant(rng.normal(size=(2, 5)).astype("float32"))

    @tf.function
    def f(x):
        _, v = layer(x)
        return tf.reduce_sum(tf.gather(v, labels, axis=1, batch_dims=1) * probe)

    xt = tf.constant(feats)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        value = f(xt)
    gx, gk = tape.gradient(value, [xt, layer.kernel])
    gk = np.asarray(gk)
    assert np.abs(gk[:, [0, 2]]).max() > 0 and np.abs(gk[:, [1, 3]]).max() == 0
    gx = np.asarray(gx)
    assert np.abs(gx).max() > 0
    eps = 1e-2
    for idx in [tuple(rng.integers(0, s) for s in feats.shape) for _ in range(12)]:
        up, down = feats.copy(), feats.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric = (float(f(tf.constant(up))) - float(f(tf.constant(down)))) / (2 * eps)
        np.testing.assert_allclose(gx[idx], numeric, rtol=0.05, atol=2e-3)


def test_acd_gathers_the_true_class_of_per_class_vectors():
    rng = np.random.default_rng(5)
    vectors = rng.uniform(size=(6, 4, 5)).astype("float32")
    labels = np.array([3, 3, 1, 1, 0, 3])
    got = attention_cosine_distance(labels, vectors).numpy()
    want = attention_cosine_distance(labels, vectors[np.arange(6), labels]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[4] == 0.0 and got.max() > 0  # identity 0 has no partner


def test_mixed_precision_outputs_float32_and_config_round_trip(tmp_path):
    feats = np.random.default_rng(6).uniform(size=(2, 6, 4, 8)).astype("float32")
    layer = AttentionAlignment(3, length=4, dtype="mixed_bfloat16")
    logits, vectors = layer(feats)
    assert logits.dtype == "float32" and vectors.dtype == "float32"

    inputs = keras.Input((6, 4, 8))
    model = keras.Model(inputs, AttentionAlignment(3, length=7, height_threshold=0.4, name="aam")(inputs))
    model.save(tmp_path / "aam.keras")
    loaded = keras.saving.load_model(tmp_path / "aam.keras", safe_mode=True)
    for a, b in zip(loaded(feats), model(feats)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    config = loaded.get_layer("aam").get_config()
    assert {k: config[k] for k in ("num_classes", "length", "height_threshold", "width_threshold")} == {
        "num_classes": 3, "length": 7, "height_threshold": 0.4, "width_threshold": 0.3}
    assert model.get_layer("aam").compute_output_shape((None, 6, 4, 8)) == ((None, 3), (None, 3, 7))


@pytest.mark.parametrize("kwargs,match", [
    ({"num_classes": 0}, "num_classes"),
    ({"num_classes": 3, "length": 0}, "length"),
    ({"num_classes": 3, "height_threshold": 1.5}, "height_threshold"),
    ({"num_classes": 3, "width_threshold": -0.1}, "width_threshold"),
    ({"num_classes": 3, "width_threshold": True}, "width_threshold"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionAlignment(**kwargs)


def test_bad_shape():
    with pytest.raises(ValueError, match=r"static H, W and C"):
        AttentionAlignment(3)(np.zeros((2, 8), "float32"))
