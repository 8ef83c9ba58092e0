"""Attention Cosine Distance (AANet Eq. 7) against NumPy loops, hand cases and zero vectors."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.losses import LOSSES, AttentionCosineDistanceLoss, attention_cosine_distance


def np_cos_dist(u, v):
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    return 1.0 - (0.0 if nu == 0 or nv == 0 else float(u @ v) / (nu * nv))


def np_acd(labels, v):
    out = np.zeros(len(v))
    for i in range(len(v)):
        partners = [j for j in range(len(v)) if j != i and labels[j] == labels[i]]
        if partners:
            out[i] = np.mean([np_cos_dist(v[i], v[j]) for j in partners])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("structure", ["pk", "random"])
def test_matches_numpy(seed, structure):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), 3) if structure == "pk" else rng.integers(0, 6, size=12)
    v = rng.uniform(0, 1, size=(12, 8)).astype(np.float32)  # attention vectors are >= 0
    np.testing.assert_allclose(attention_cosine_distance(labels, v).numpy(), np_acd(labels, v),
                               rtol=1e-5, atol=1e-6)


def test_global_mean_is_eq7_averaged_over_identities():
    p, k = 3, 4
    rng = np.random.default_rng(4)
    labels, v = np.repeat(np.arange(p), k), rng.uniform(size=(p * k, 5))
    eq7 = 0.0  # paper: per identity, sum over the C(K, 2) pairs divided by C(K, 2)
    for i in range(p):
        rows = v[labels == i]
        pairs = list(itertools.combinations(range(k), 2))
        eq7 += sum(np_cos_dist(rows[a], rows[b]) for a, b in pairs) / len(pairs)
    got = attention_cosine_distance(labels, v).numpy().mean()
    np.testing.assert_allclose(got, eq7 / p, rtol=1e-5)
    got = attention_cosine_distance(labels, v, sum_over_identities=True).numpy().mean()
    np.testing.assert_allclose(got, eq7, rtol=1e-5)


def test_sum_over_identities_is_eq7_for_uneven_identities():
    """Eq. 7 with each identity's own C(K_i, 2); a singleton has no pair and adds 0."""
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 3, 3, 3])
    v = np.random.default_rng(5).uniform(size=(10, 6))
    eq7 = 0.0
    for i in np.unique(labels):
        pairs = list(itertools.combinations(v[labels == i], 2))
        eq7 += sum(np_cos_dist(a, b) for a, b in pairs) / len(pairs) if pairs else 0.0
    got = attention_cosine_distance(labels, v, sum_over_identities=True).numpy()
    np.testing.assert_allclose(got.mean(), eq7, rtol=1e-5)
    assert got[6] == 0.0


def test_hand_cases_paper_example():
    # AANet's example: (10, 30, 80) and (1, 3, 8) have cosine distance 0; orthogonal -> 1
    v = [[10.0, 30.0, 80.0], [1.0, 3.0, 8.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]]
    got = attention_cosine_distance([0, 0, 1, 1, 2], v).numpy()
    np.testing.assert_allclose(got, [0.0, 0.0, 1.0, 1.0, 0.0], atol=1e-6)
    # three partners: anchor 0 sees distances 0 (same direction) and 1 (orthogonal) -> 0.5
    got = attention_cosine_distance([0, 0, 0], [[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]]).numpy()
    np.testing.assert_allclose(got, [0.5, 0.5, 1.0], atol=1e-6)


def test_zero_and_identical_vectors_have_finite_gradients():
    labels = tf.constant([0, 0, 1, 1, 2])
    v = tf.Variable([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0],
                     [0.0, 0.0, 0.0]])
    with tf.GradientTape() as tape:
        loss = attention_cosine_distance(labels, v)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, v).numpy()
    # zero vector: similarity 0, distance 1 (both members of pair 0); identical: 0; single: 0
    np.testing.assert_allclose(loss.numpy(), [1.0, 1.0, 0.0, 0.0, 0.0], atol=1e-6)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[0], 0.0)  # a zero vector receives no gradient
    assert np.abs(grad[2:4]).max() < 1e-6


def test_gradient_direction_aligns_vectors():
    labels = tf.constant([0, 0])
    v = tf.Variable([[1.0, 0.0], [1.0, 1.0]])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(attention_cosine_distance(labels, v))
    grad = tape.gradient(total, v).numpy()
    # d/dv0 of -2 cos(v0, v1) at v0 = (1, 0), v1 = (1, 1): -2 * (v1/|v1| - cos * v0) / |v0|
    np.testing.assert_allclose(grad[0], [0.0, -np.sqrt(2.0)], atol=1e-5)


def test_keras_wrapper_and_registry():
    assert LOSSES["attention_cosine_distance"].fn is attention_cosine_distance
    labels = np.repeat(np.arange(3), 2)
    v = np.random.default_rng(6).uniform(size=(6, 4)).astype(np.float32)
    loss = AttentionCosineDistanceLoss()
    np.testing.assert_allclose(float(loss(labels.astype(np.float32)[:, None], v)),
                               np_acd(labels, v).mean(), rtol=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, AttentionCosineDistanceLoss)
    assert restored.get_config() == loss.get_config()
    summed = AttentionCosineDistanceLoss(sum_over_identities=True)  # 3 identities of 2: x3
    np.testing.assert_allclose(float(summed(labels.astype(np.float32)[:, None], v)),
                               3 * np_acd(labels, v).mean(), rtol=1e-5)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(summed))
    assert again.get_config()["sum_over_identities"] is True
    with pytest.raises(ValueError, match="sum_over_identities"):
        AttentionCosineDistanceLoss(sum_over_identities="yes")


def test_shape_errors():
    with pytest.raises(ValueError, match=r"`vectors` must have shape \[batch, dim\]"):
        attention_cosine_distance([0, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match="same batch size"):
        attention_cosine_distance([0, 1, 1], [[1.0], [2.0]])
