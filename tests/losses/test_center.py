"""Center loss and Wen's centre update against NumPy loops."""

import numpy as np
import pytest
import tensorflow as tf

from tfreid.losses import LOSSES, CenterLoss, build_loss, center_loss


def np_center_loss(labels, x, centers):
    return np.array([0.5 * np.sum((x[i] - centers[labels[i]]) ** 2) for i in range(len(x))])


def np_wen_update(labels, x, centers, alpha):
    new = centers.astype(np.float64).copy()
    for j in range(len(centers)):
        members = [x[i] for i in range(len(x)) if labels[i] == j]
        delta = sum((centers[j] - f for f in members), np.zeros(centers.shape[1]))
        new[j] = centers[j] - alpha * delta / (1 + len(members))
    return new


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_center_loss_function_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=10)
    x, centers = rng.normal(size=(10, 6)), rng.normal(size=(5, 6))
    got = center_loss(labels, x, centers).numpy()
    np.testing.assert_allclose(got, np_center_loss(labels, x, centers), rtol=1e-5)


def test_hand_case():
    # ||(3, 4) - 0||^2 / 2 = 12.5; one member: c <- c - 0.5 * (0 - f) / 2 = f / 4
    closs = CenterLoss(num_classes=2, feature_dim=2, alpha=0.5)
    np.testing.assert_allclose(closs([1], [[3.0, 4.0]]).numpy(), [12.5])
    np.testing.assert_allclose(closs.centers.numpy(), [[0.0, 0.0], [0.75, 1.0]])


@pytest.mark.parametrize("graph", [False, True])
def test_stateful_updates_match_wen_rule(graph):
    rng = np.random.default_rng(3)
    closs = CenterLoss(num_classes=4, feature_dim=3, alpha=0.5)
    centers = rng.normal(size=(4, 3))
    closs.centers.assign(centers)
    call = tf.function(closs) if graph else closs
    for _ in range(3):
        labels = rng.integers(0, 4, size=6)
        labels[0] = labels[1]  # a class with several members in the batch
        x = rng.normal(size=(6, 3)).astype(np.float32)
        # the loss uses the centres from BEFORE this call's update
        np.testing.assert_allclose(call(tf.constant(labels), tf.constant(x)).numpy(),
                                   np_center_loss(labels, x, centers), rtol=1e-5)
        centers = np_wen_update(labels, x, centers, 0.5)
        np.testing.assert_allclose(closs.centers.numpy(), centers, rtol=1e-5, atol=1e-6)


def test_gradient_only_into_features_and_alpha_zero_freezes():
    closs = CenterLoss(num_classes=3, feature_dim=2, alpha=0.0)
    closs.centers.assign([[1.0, 1.0], [0.0, 2.0], [5.0, 5.0]])
    x = tf.Variable([[2.0, 3.0], [0.0, 0.0]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(closs([0, 1], x))
    grad_x, grad_c = tape.gradient(loss, [x, closs.centers])
    np.testing.assert_allclose(grad_x.numpy(), [[1.0, 2.0], [0.0, -2.0]])  # f - c_y
    assert grad_c is None and not closs.centers.trainable
    np.testing.assert_array_equal(closs.centers.numpy(), [[1.0, 1.0], [0.0, 2.0], [5.0, 5.0]])


def test_feature_equal_to_centre_and_absent_classes():
    closs = CenterLoss(num_classes=3, feature_dim=2)
    x = tf.Variable([[0.0, 0.0], [0.0, 0.0]])
    with tf.GradientTape() as tape:
        loss = closs([2, 2], x)
        total = tf.reduce_sum(loss)
    np.testing.assert_array_equal(loss.numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(tape.gradient(total, x).numpy(), 0.0)
    np.testing.assert_array_equal(closs.centers.numpy(), np.zeros((3, 2)))


def test_checkpoint_round_trip(tmp_path):
    closs = CenterLoss(num_classes=2, feature_dim=2)
    closs([0, 1], [[1.0, 2.0], [3.0, 4.0]])
    saved = closs.centers.numpy()
    path = tf.train.Checkpoint(center_loss=closs).save(str(tmp_path / "ckpt"))
    other = CenterLoss(num_classes=2, feature_dim=2)
    tf.train.Checkpoint(center_loss=other).restore(path).assert_consumed()
    np.testing.assert_array_equal(other.centers.numpy(), saved)
    assert other.get_config() == {"num_classes": 2, "feature_dim": 2, "alpha": 0.5,
                                  "name": "center_loss"}


def test_build_loss_and_errors():
    spec = LOSSES["center_loss"]
    assert spec.fn is CenterLoss and spec.needs_num_classes and spec.stateful
    closs = build_loss("center_loss", num_classes=3, feature_dim=4, alpha=0.25)
    assert isinstance(closs, CenterLoss) and closs.alpha == 0.25
    assert closs.centers.shape == (3, 4)
    # the dataset's identities fill num_classes in only when the config leaves it out
    assert build_loss("center_loss", dataset_num_classes=7, feature_dim=4).centers.shape == (7, 4)
    assert build_loss("center_loss", dataset_num_classes=7, num_classes=3,
                      feature_dim=4).centers.shape == (3, 4)
    with pytest.raises(ValueError, match="`num_classes`.*0"):
        CenterLoss(num_classes=0, feature_dim=4)
    with pytest.raises(ValueError, match="`alpha`.*1.5"):
        CenterLoss(num_classes=2, feature_dim=4, alpha=1.5)
    with pytest.raises(ValueError, match="4 channels.*shape \\(2, 3\\)"):
        closs([0, 1], tf.zeros([2, 3]))
    with pytest.raises(ValueError, match=r"`labels` must be in \[0, 3\); received \[3\]"):
        closs([0, 3], tf.zeros([2, 4]))
    with pytest.raises(ValueError, match="unexpected argument.*'lr'"):
        build_loss("center_loss", num_classes=3, feature_dim=4, lr=0.1)
