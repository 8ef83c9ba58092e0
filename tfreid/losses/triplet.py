"""Triplet losses with in-batch mining: batch-hard, semi-hard (CCAN) and improved TriHard (AANet).

Every function follows the loss contract of `tfreid.losses`: `fn(labels [b], embeddings [b, D])
-> per-example float32 losses [b]` for this replica's LOCAL anchors, mined over the GLOBAL batch
(see `tfreid.losses.cross_replica`). The trainer averages them with
`tf.nn.compute_average_loss(..., global_batch_size=B)`, so the reported loss is the mean over
all B anchors of the global batch.

Anchors without a valid triplet (no other example of their identity in the global batch, or no
example of another identity) contribute 0 and no gradient; they still count in the mean's
denominator B.
"""

from __future__ import annotations

import numbers

import tensorflow as tf

from tfreid.checks import check_int
from tfreid.losses.cross_replica import global_batch
from tfreid.losses.distances import check_metric, pairwise_distance

# Stands in for "no negative" in a masked minimum; finite so that no inf - inf can appear.
_FAR = 1e9


def check_margin(margin):
    if not isinstance(margin, numbers.Real) or isinstance(margin, bool) or margin < 0:
        raise ValueError(f"`margin` must be a number >= 0; received {margin!r}.")
    return float(margin)


def check_top_r(top_r):
    return check_int("top_r", top_r)


def _distances_and_masks(labels, embeddings, metric):
    """Local-anchor x global-batch distances `[b, B]` and positive / negative masks `[b, B]`."""
    check_metric(metric)
    labels_g, embeddings_g, anchor_index = global_batch(labels, embeddings)
    anchors = tf.gather(embeddings_g, anchor_index)
    anchor_labels = tf.gather(labels_g, anchor_index)
    dist = pairwise_distance(anchors, embeddings_g, metric)
    same = tf.equal(anchor_labels[:, tf.newaxis], labels_g[tf.newaxis, :])
    num_global = tf.shape(labels_g, out_type=tf.int32)[0]
    is_self = tf.equal(anchor_index[:, tf.newaxis], tf.range(num_global)[tf.newaxis, :])
    return dist, tf.logical_and(same, tf.logical_not(is_self)), tf.logical_not(same)


def _hardest(dist, positive, negative):
    """Per anchor: hardest positive distance, hardest negative distance and validity masks."""
    # Distances are >= 0, so -1 never wins the max and masked entries get no gradient.
    d_ap = tf.reduce_max(tf.where(positive, dist, -tf.ones_like(dist)), axis=1)
    d_an = tf.reduce_min(tf.where(negative, dist, tf.fill(tf.shape(dist), _FAR)), axis=1)
    has_pos = tf.reduce_any(positive, axis=1)
    has_neg = tf.reduce_any(negative, axis=1)
    return d_ap, d_an, has_pos, has_neg


def batch_hard_triplet(labels, embeddings, margin: float = 0.3, metric: str = "euclidean",
                       soft_margin: bool = False):
    """Batch-hard triplet loss: hardest positive and hardest negative per anchor.

    For anchor `a`: `d_ap = max d(a, p)` over the other examples of its identity and
    `d_an = min d(a, n)` over examples of other identities (global batch);
    loss `max(0, d_ap - d_an + margin)`, or `softplus(d_ap - d_an)` with `soft_margin`.

    Args:
        labels: int tensor `[b]` of identity ids.
        embeddings: float tensor `[b, D]` (cast to float32).
        margin: hinge margin (>= 0); ignored when `soft_margin`.
        metric: `"euclidean"`, `"sqeuclidean"` (CAN Eq. 7-8) or `"cosine"`.
        soft_margin: use the soft-margin formulation of Hermans et al.

    Returns:
        float32 tensor `[b]`; 0 for anchors without a positive or a negative.

    Example:
        >>> batch_hard_triplet(tf.constant([0, 0, 1]), tf.constant([[0.], [1.], [3.]]), 0.5)
        # anchor 0: d_ap = 1, d_an = 3 -> 0; anchor 1: 1 - 2 + 0.5 -> 0; anchor 2: no positive -> 0

    Reference: Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person
    Re-Identification", 2017; CAN (batch-hard triplet, squared Euclidean, Eq. 7-8).
    """
    margin = check_margin(margin)
    dist, positive, negative = _distances_and_masks(labels, embeddings, metric)
    d_ap, d_an, has_pos, has_neg = _hardest(dist, positive, negative)
    valid = tf.logical_and(has_pos, has_neg)
    if soft_margin:
        loss = tf.nn.softplus(d_ap - d_an)
    else:
        loss = tf.nn.relu(d_ap - d_an + margin)
    return tf.where(valid, loss, tf.zeros_like(loss))


def improved_trihard(labels, embeddings, margin: float = 0.3, metric: str = "euclidean"):
    """AANet's improved TriHard loss: batch-hard hinge plus the hardest-positive distance.

    Per anchor (AANet Eq. 9): `d_ap + max(0, margin + d_ap - d_an)` with `d_ap` / `d_an` the
    hardest positive / negative distances of `batch_hard_triplet`. The extra `d_ap` term pulls
    each identity together even when the hinge is already satisfied. An anchor with a positive
    but no negative (one identity in the batch) still gets the `d_ap` term; without a positive
    it contributes 0.

    Args:
        labels: int tensor `[b]`.
        embeddings: float tensor `[b, D]`.
        margin: hinge margin `m` (>= 0).
        metric: the paper uses `"euclidean"`; `"sqeuclidean"` and `"cosine"` are also accepted.

    Returns:
        float32 tensor `[b]`. The mean over the global batch is Eq. 9 (`1 / PK` sum over anchors).

    Example:
        >>> improved_trihard(tf.constant([0, 0, 1]), tf.constant([[0.], [1.], [3.]]), 0.5)
        # anchor 0: 1 + max(0, 0.5 + 1 - 3) = 1; anchor 1: 1 + max(0, 0.5 + 1 - 2) = 1; anchor 2: 0

    Reference: AANet (Attention-Aligned Network), Eq. 9.
    """
    margin = check_margin(margin)
    dist, positive, negative = _distances_and_masks(labels, embeddings, metric)
    d_ap, d_an, has_pos, has_neg = _hardest(dist, positive, negative)
    zeros = tf.zeros_like(d_ap)
    pull = tf.where(has_pos, d_ap, zeros)
    hinge = tf.where(tf.logical_and(has_pos, has_neg), tf.nn.relu(margin + d_ap - d_an), zeros)
    return pull + hinge


def semi_hard_triplet(labels, embeddings, margin: float = 1.0, top_r: int = 10,
                      metric: str = "euclidean"):
    """Semi-hard triplet loss with the top-r semi-hard negatives per anchor-positive pair (CCAN).

    Mining (CCAN Eq. 5): for every anchor `a` and every positive `p != a` of its identity, the
    semi-hard negatives are those with `d(a, n) > d(a, p)` (strictly farther than the positive);
    the `top_r` nearest of them form the triplets `(a, p, n)`. If fewer than `top_r` exist, all
    that exist are used. If none exists (every negative is at least as close as the positive),
    the pair falls back to ONE triplet with the farthest negative, i.e. the least hard of the
    hard negatives -- the rule of FaceNet and of TensorFlow Addons' `triplet_semihard_loss`; this keeps a
    learning signal (loss >= margin) instead of silently dropping the pair when the embedding
    has collapsed.

    Averaging: each triplet's loss is `max(0, d(a, p) - d(a, n) + margin)`; the per-example loss
    of anchor `a` is the mean over ALL triplets mined for `a` (over all its positives and their
    negatives). Anchors without a positive or without any negative contribute 0. The global mean
    of these values equals Eq. 5 (mean over all mined triplets of the batch) whenever every
    anchor has the same number of triplets, e.g. a P x K batch where each pair finds `top_r`
    semi-hard negatives; otherwise each anchor gets equal weight.

    Ties between negatives at the same distance are broken by their position in the global batch.

    Args:
        labels: int tensor `[b]`.
        embeddings: float tensor `[b, D]`.
        margin: `tau` of Eq. 5 (CCAN: 1.0 on Market-1501 / DukeMTMC-reID, 1.5 on CUHK03).
        top_r: `r`, the number of semi-hard negatives per pair (CCAN: 10).
        metric: `"euclidean"` (the paper's `D = ||x_a - x_j||_2`), `"sqeuclidean"` or `"cosine"`.

    Returns:
        float32 tensor `[b]`.

    Example:
        >>> semi_hard_triplet(tf.constant([0, 0, 1, 2]), tf.constant([[0.], [1.], [1.5], [3.]]),
        ...                   margin=1.0, top_r=1)
        # anchor 0 / positive 1 (d=1): nearest farther negative is 1.5 -> 1 - 1.5 + 1 = 0.5

    Reference: CCAN (Cross-Correlated Attention Networks), Sec. 3.3, Eq. 5; Schroff et al.,
    "FaceNet", 2015 (semi-hard mining).
    """
    margin = check_margin(margin)
    check_top_r(top_r)
    dist, positive, negative = _distances_and_masks(labels, embeddings, metric)

    # rank[a, n]: position of negative n in anchor a's negatives sorted by distance (stable, so
    # ties follow batch order); non-negatives sort after all negatives.
    neg_dist = tf.stop_gradient(tf.where(negative, dist, tf.fill(tf.shape(dist), _FAR)))
    order = tf.argsort(neg_dist, axis=1, stable=True)
    rank = tf.argsort(order, axis=1, stable=True)
    num_neg = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1)  # [b]

    d_ap = dist[:, :, tf.newaxis]  # [b, B(p), 1]
    d_an = dist[:, tf.newaxis, :]  # [b, 1, B(n)]
    # Negatives not farther than the positive are exactly the first `closer` in sorted order, so
    # the top-r semi-hard ones are the ranks [closer, closer + r).
    not_farther = tf.logical_and(negative[:, tf.newaxis, :],
                                 tf.stop_gradient(d_an) <= tf.stop_gradient(d_ap))
    closer = tf.reduce_sum(tf.cast(not_farther, tf.int32), axis=2, keepdims=True)  # [b, B, 1]
    rank_n = rank[:, tf.newaxis, :]
    semi = tf.logical_and(rank_n >= closer, rank_n < closer + top_r)
    has_semi = closer < num_neg[:, tf.newaxis, tf.newaxis]
    farthest = tf.equal(rank_n, num_neg[:, tf.newaxis, tf.newaxis] - 1)
    chosen = tf.where(has_semi, semi, farthest)
    selected = tf.logical_and(tf.logical_and(chosen, negative[:, tf.newaxis, :]),
                              positive[:, :, tf.newaxis])  # [b, B(p), B(n)]

    hinge = tf.nn.relu(d_ap - d_an + margin)
    total = tf.reduce_sum(tf.where(selected, hinge, tf.zeros_like(hinge)), axis=[1, 2])
    count = tf.reduce_sum(tf.cast(selected, tf.float32), axis=[1, 2])
    return total / tf.maximum(count, 1.0)


__all__ = ["batch_hard_triplet", "improved_trihard", "semi_hard_triplet"]
