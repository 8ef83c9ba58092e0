"""Triplet losses against straightforward NumPy loops, hand cases and degenerate batches."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfreid.losses import (LOSSES, BatchHardTripletLoss, ImprovedTriHardLoss, SemiHardTripletLoss,
                           batch_hard_triplet, build_loss, improved_trihard, pairwise_distance,
                           semi_hard_triplet)


# ----------------------------------------------------------------------------- NumPy references
def np_dist(a, b, metric):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = np.zeros((len(a), len(b)))
    for i in range(len(a)):
        for j in range(len(b)):
            if metric == "cosine":
                na, nb = np.linalg.norm(a[i]), np.linalg.norm(b[j])
                sim = 0.0 if na == 0 or nb == 0 else a[i] @ b[j] / (na * nb)
                out[i, j] = 1.0 - sim
            else:
                sq = np.sum((a[i] - b[j]) ** 2)
                out[i, j] = sq if metric == "sqeuclidean" else np.sqrt(sq)
    return out


def np_batch_hard(labels, x, margin, metric="euclidean", soft=False, improved=False):
    d = np_dist(x, x, metric)
    out = np.zeros(len(x))
    for a in range(len(x)):
        pos = [d[a, p] for p in range(len(x)) if p != a and labels[p] == labels[a]]
        neg = [d[a, n] for n in range(len(x)) if labels[n] != labels[a]]
        if improved and pos:
            out[a] += max(pos)
        if pos and neg:
            gap = max(pos) - min(neg)
            out[a] += np.log1p(np.exp(gap)) if soft else max(0.0, gap + margin)
    return out


def np_semi_hard(labels, x, margin, top_r, metric="euclidean"):
    d = np_dist(x, x, metric)
    out = np.zeros(len(x))
    for a in range(len(x)):
        negs = sorted((d[a, n], n) for n in range(len(x)) if labels[n] != labels[a])
        triplets = []
        for p in range(len(x)):
            if p == a or labels[p] != labels[a] or not negs:
                continue
            semi = [dn for dn, _ in negs if dn > d[a, p]][:top_r]
            chosen = semi if semi else [negs[-1][0]]  # fallback: the farthest negative
            triplets += [max(0.0, d[a, p] - dn + margin) for dn in chosen]
        out[a] = np.mean(triplets) if triplets else 0.0
    return out


def make_batch(seed, structure, n=12, dim=6):
    rng = np.random.default_rng(seed)
    if structure == "pk":
        labels = np.repeat(np.arange(n // 3), 3)
        rng.shuffle(labels)
    else:  # random labels: some identities appear once, others several times
        labels = rng.integers(0, n // 2, size=n)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return labels, x


def grads_of(fn, labels, x, **kw):
    x = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = fn(tf.constant(labels), x, **kw)
        total = tf.reduce_sum(loss)
    return loss.numpy(), tape.gradient(total, x).numpy()


# ----------------------------------------------------------------------------- against NumPy
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("structure", ["pk", "random"])
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_batch_hard_and_improved_match_numpy(seed, structure, metric):
    labels, x = make_batch(seed, structure)
    for soft in (False, True):
        got = batch_hard_triplet(labels, x, margin=0.3, metric=metric, soft_margin=soft).numpy()
        np.testing.assert_allclose(got, np_batch_hard(labels, x, 0.3, metric, soft),
                                   rtol=1e-5, atol=1e-5)
    got = improved_trihard(labels, x, margin=0.5, metric=metric).numpy()
    np.testing.assert_allclose(got, np_batch_hard(labels, x, 0.5, metric, improved=True),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("structure", ["pk", "random"])
@pytest.mark.parametrize("top_r", [1, 3, 10])
def test_semi_hard_matches_numpy(seed, structure, top_r):
    labels, x = make_batch(seed, structure)
    for metric, margin in (("euclidean", 1.0), ("cosine", 0.3)):
        got = semi_hard_triplet(labels, x, margin=margin, top_r=top_r, metric=metric).numpy()
        np.testing.assert_allclose(got, np_semi_hard(labels, x, margin, top_r, metric),
                                   rtol=1e-5, atol=1e-5)


def test_pairwise_distance_matches_numpy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 7)) * 3, rng.normal(size=(4, 7))
    for metric in ("euclidean", "sqeuclidean", "cosine"):
        np.testing.assert_allclose(pairwise_distance(a, b, metric).numpy(), np_dist(a, b, metric),
                                   rtol=1e-5, atol=1e-5)


def test_gradients_match_finite_differences():
    labels, x = make_batch(4, "pk", n=6, dim=3)
    x = x.astype(np.float64)
    weights = tf.constant(np.random.default_rng(4).uniform(0.5, 1.5, size=6))
    for fn, kw in ((batch_hard_triplet, {"margin": 2.0}), (improved_trihard, {"margin": 2.0}),
                   (semi_hard_triplet, {"margin": 2.0, "top_r": 2})):
        objective = tf.function(lambda e, fn=fn, kw=kw: tf.reduce_sum(
            tf.cast(fn(labels, e, **kw), tf.float64) * weights))
        x_t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x_t)
            value = objective(x_t)  # same input signature as below: traced once
        theo = tape.gradient(value, x_t).numpy()
        num = np.zeros_like(x)
        for idx in np.ndindex(*x.shape):  # central differences, float32 inside -> loose atol
            step = np.zeros_like(x)
            step[idx] = 1e-2
            num[idx] = (objective(tf.constant(x + step)) - objective(tf.constant(x - step))) / 2e-2
        np.testing.assert_allclose(theo, num, atol=2e-3)
        assert np.abs(theo).max() > 0.1  # the check is not vacuous


# ----------------------------------------------------------------------------- hand cases
def test_hand_cases_1d():
    labels, x = [0, 0, 1], [[0.0], [1.0], [3.0]]
    # anchor 0: d_ap 1, d_an 3; anchor 1: d_ap 1, d_an 2; anchor 2 has no positive
    np.testing.assert_allclose(batch_hard_triplet(labels, x, margin=1.5).numpy(), [0.0, 0.5, 0.0])
    np.testing.assert_allclose(improved_trihard(labels, x, margin=1.5).numpy(), [1.0, 1.5, 0.0])
    np.testing.assert_allclose(batch_hard_triplet(labels, x, metric="sqeuclidean",
                                                  margin=0.0).numpy(), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(batch_hard_triplet(labels, x, soft_margin=True).numpy(),
                               [np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0)), 0.0], rtol=1e-6)


def test_semi_hard_hand_cases_fewer_than_r_and_fallback():
    labels, x = [0, 0, 1, 2], [[0.0], [1.0], [1.5], [3.0]]
    # anchor 0, positive at 1: semi-hard negatives 1.5 and 3 (both used, r=10 > 2):
    #   mean(1 - 1.5 + 1, 1 - 3 + 1 -> 0) = 0.25
    # anchor 1, positive at 1: negatives at 0.5 (not semi-hard) and 2 -> [1 - 2 + 1] = 0
    got = semi_hard_triplet(labels, x, margin=1.0, top_r=10).numpy()
    np.testing.assert_allclose(got, [0.25, 0.0, 0.0, 0.0], atol=1e-6)
    # only the nearest semi-hard negative with r = 1
    np.testing.assert_allclose(semi_hard_triplet(labels, x, 1.0, top_r=1).numpy()[0], 0.5)
    # no semi-hard negative: positive at 4 is farther than every negative -> the farthest
    # negative (3) is used alone: [4 - 3 + 1] = 2, not the hardest (1.5: 3.5) and not 0
    x2 = [[0.0], [4.0], [1.5], [3.0]]
    np.testing.assert_allclose(semi_hard_triplet(labels, x2, 1.0, top_r=2).numpy()[0], 2.0)


# ----------------------------------------------------------------------------- degenerate batches
ALL = [(batch_hard_triplet, {}), (batch_hard_triplet, {"soft_margin": True}),
       (batch_hard_triplet, {"metric": "cosine"}), (batch_hard_triplet, {"metric": "sqeuclidean"}),
       (improved_trihard, {}), (semi_hard_triplet, {"top_r": 2}),
       (semi_hard_triplet, {"metric": "cosine"})]


@pytest.mark.parametrize("fn,kw", ALL)
def test_identical_embeddings_finite_gradients(fn, kw):
    labels = np.array([0, 0, 1, 1])
    x = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [-3.0, 0.5]], np.float32)
    loss, grad = grads_of(fn, labels, x, **kw)
    assert np.all(np.isfinite(grad)) and np.all(np.isfinite(loss))
    ref = (np_semi_hard(labels, x, kw.get("margin", 1.0), kw.get("top_r", 10),
                        kw.get("metric", "euclidean")) if fn is semi_hard_triplet else
           np_batch_hard(labels, x, 0.3, kw.get("metric", "euclidean"), kw.get("soft_margin"),
                         improved=fn is improved_trihard))
    np.testing.assert_allclose(loss, ref, rtol=1e-5, atol=1e-5)
    # all-identical batch: every distance 0, the hinge is the margin, gradients vanish (up to
    # round-off in the cosine normalisation)
    loss, grad = grads_of(fn, labels, np.ones((4, 3), np.float32), **kw)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() < 1e-6


@pytest.mark.parametrize("fn,kw", ALL)
def test_no_positive_and_no_negative(fn, kw):
    x = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)
    # every identity appears once: no positive anywhere -> 0 and zero gradient
    loss, grad = grads_of(fn, np.arange(4), x, **kw)
    np.testing.assert_array_equal(loss, 0.0)
    assert np.all(grad == 0)
    # one identity only: no negative; only the improved TriHard pull term remains
    loss, grad = grads_of(fn, np.zeros(4, int), x, **kw)
    assert np.all(np.isfinite(grad))
    if fn is improved_trihard:
        np.testing.assert_allclose(loss, np_dist(x, x, "euclidean").max(axis=1), rtol=1e-5)
    else:
        np.testing.assert_array_equal(loss, 0.0)
    # singleton anchor in an otherwise normal batch: it gets 0, the others do not
    loss, _ = grads_of(fn, np.array([0, 0, 1, 2]), x, margin=5.0, **kw)
    assert loss[2] == 0 and loss[3] == 0 and loss[0] > 0


def test_zero_vectors_with_cosine():
    labels = np.array([0, 0, 1, 1])
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], np.float32)
    for fn, kw in ALL:
        if kw.get("metric") != "cosine":
            continue
        loss, grad = grads_of(fn, labels, x, **kw)
        assert np.all(np.isfinite(grad))
        np.testing.assert_allclose(loss, np_semi_hard(labels, x, 1.0, 10, "cosine")
                                   if fn is semi_hard_triplet else
                                   np_batch_hard(labels, x, 0.3, "cosine"), atol=1e-6)


# ----------------------------------------------------------------------------- API / errors
def test_xla_graph_int64_column_labels_and_bfloat16():
    labels, x = make_batch(7, "pk")

    @tf.function(jit_compile=True)  # the trainer may XLA-compile the replica step
    def fn(y, e):
        return semi_hard_triplet(y, e, margin=1.0, top_r=3)

    got = fn(tf.constant(labels[:, None], tf.int64), tf.constant(x)).numpy()
    np.testing.assert_allclose(got, np_semi_hard(labels, x, 1.0, 3), rtol=1e-5, atol=1e-5)
    # mixed precision: bfloat16 embeddings, float32 losses
    got = batch_hard_triplet(labels, tf.cast(x, tf.bfloat16))
    assert got.dtype == tf.float32
    x_bf16 = tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy()
    np.testing.assert_allclose(got.numpy(), np_batch_hard(labels, x_bf16, 0.3), rtol=1e-4,
                               atol=1e-4)


def test_argument_errors():
    with pytest.raises(ValueError, match="`margin`.*-1"):
        batch_hard_triplet([0, 1], [[0.0], [1.0]], margin=-1)
    with pytest.raises(ValueError, match="`metric`.*'l1'"):
        improved_trihard([0, 1], [[0.0], [1.0]], metric="l1")
    with pytest.raises(ValueError, match="`top_r`.*0"):
        semi_hard_triplet([0, 1], [[0.0], [1.0]], top_r=0)
    with pytest.raises(ValueError, match="same batch size"):
        batch_hard_triplet([0, 1, 2], [[0.0], [1.0]])
    with pytest.raises(ValueError, match=r"\[batch, dim\]"):
        batch_hard_triplet([0, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match="unexpected argument.*'marign'"):
        build_loss("batch_hard_triplet", marign=0.3)
    with pytest.raises(ValueError, match="`top_r`"):
        SemiHardTripletLoss(top_r=-2)


def test_registry_and_build_loss():
    labels, x = make_batch(8, "random")
    for name in ("batch_hard_triplet", "semi_hard_triplet", "improved_trihard"):
        assert not LOSSES[name].stateful and not LOSSES[name].needs_num_classes
    assert build_loss("batch_hard_triplet", dataset_num_classes=5, margin=0.3).keywords == {
        "margin": 0.3}  # needs no num_classes: the dataset's is not passed on
    fn = build_loss("semi_hard_triplet", margin=0.7, top_r=2)
    np.testing.assert_allclose(fn(labels, x).numpy(), np_semi_hard(labels, x, 0.7, 2), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("cls,kw,ref", [
    (BatchHardTripletLoss, {"margin": 0.4, "metric": "cosine"},
     lambda y, x: np_batch_hard(y, x, 0.4, "cosine")),
    (SemiHardTripletLoss, {"margin": 0.8, "top_r": 2}, lambda y, x: np_semi_hard(y, x, 0.8, 2)),
    (ImprovedTriHardLoss, {"margin": 0.2}, lambda y, x: np_batch_hard(y, x, 0.2, improved=True)),
])
def test_keras_wrappers_value_and_serialization(cls, kw, ref):
    labels, x = make_batch(9, "pk")
    loss = cls(**kw)
    # Keras passes y_true as a float [b, 1] column; the mean is the default reduction
    np.testing.assert_allclose(float(loss(labels[:, None].astype(np.float32), x)),
                               ref(labels, x).mean(), rtol=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is cls and restored.get_config() == loss.get_config()
    for key, value in kw.items():
        assert restored.get_config()[key] == value
    np.testing.assert_allclose(float(restored(labels, x)), ref(labels, x).mean(), rtol=1e-5)
    per_example = cls(reduction=None, **kw)(labels, x).numpy()
    np.testing.assert_allclose(per_example, ref(labels, x), rtol=1e-5, atol=1e-5)
