import numpy as np
import pytest
import tensorflow as tf

from tfreid.losses import build_loss, cross_entropy


def _numpy_ce(labels, logits, eps):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    num_classes = logits.shape[1]
    target = np.eye(num_classes)[labels] * (1 - eps) + eps / num_classes
    return -(target * log_probs).sum(axis=1)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_matches_numpy(eps):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, size=6)
    got = cross_entropy(tf.constant(labels), tf.constant(logits), label_smoothing=eps).numpy()
    np.testing.assert_allclose(got, _numpy_ce(labels, logits.astype(np.float64), eps), rtol=1e-5)


def test_cross_entropy_hand_case():
    # two classes, equal logits: -log(1/2) whatever the smoothing
    got = cross_entropy(tf.constant([1]), tf.constant([[2.0, 2.0]]), label_smoothing=0.1).numpy()
    np.testing.assert_allclose(got, [np.log(2.0)], rtol=1e-6)


def test_cross_entropy_in_float32_under_bfloat16_logits():
    logits = tf.constant([[1.0, 3.0, -2.0]], dtype=tf.bfloat16)
    got = cross_entropy(tf.constant([1]), logits)
    assert got.dtype == tf.float32


def test_build_loss_and_errors():
    fn = build_loss("cross_entropy", label_smoothing=0.1)
    assert fn(tf.constant([0]), tf.constant([[0.0, 0.0]])).shape == (1,)
    with pytest.raises(ValueError, match="unknown loss type 'nope'"):
        build_loss("nope")
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(tf.constant([0]), tf.constant([[0.0]]), label_smoothing=1.5)
