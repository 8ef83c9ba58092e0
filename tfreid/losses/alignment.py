"""Attention Cosine Distance (ACD) loss of AANet: same-identity attention vectors should align."""

from __future__ import annotations

import tensorflow as tf

from tfreid.losses.cross_replica import global_batch
from tfreid.losses.distances import pairwise_distance


def attention_cosine_distance(labels, vectors, sum_over_identities: bool = False):
    """Per-example ACD: mean cosine distance to the other examples of the same identity.

    For example `i`: the mean over its same-identity partners `j != i` in the GLOBAL batch of
    `1 - cos(v_i, v_j)`; 0 for an example with no partner. A zero vector has cosine similarity
    0 with everything (distance 1) and receives no gradient.

    Relation to the paper (AANet Eq. 7, which sums over the identities `i` the mean
    `(1 / C(K, 2)) sum_{a<b} (1 - S(v_i^a, v_i^b))` over the pairs of each identity): the mean of
    these per-example values over a P x K global batch is Eq. 7 divided by P (averaged instead
    of summed over the identities). With ``sum_over_identities`` each value is multiplied by
    `B / K_i` (`B` the global batch size, `K_i` the images of its identity in it), so that their
    global-batch mean, which the trainer takes, is Eq. 7 itself, for any identity counts.

    Args:
        labels: int tensor `[b]` of identity ids.
        vectors: float tensor `[b, L]`, the aligned attention vectors (AANet: row averages of
            the cropped CAM, resized to a fixed length `L`); or `[b, N, L]`, the vectors of
            every class (`tfreid.layers.AttentionAlignment`, whose model does not see the
            labels), of which each example's true class `labels[i]` is used.

    Returns:
        float32 tensor `[b]`, each value in `[0, 2]`.

    Example:
        >>> attention_cosine_distance(tf.constant([0, 0, 1]),
        ...                           tf.constant([[1., 3., 8.], [10., 30., 80.], [1., 0., 0.]]))
        # -> [0, 0, 0]: the first two point the same way, the third has no partner

    Reference: AANet (Attention-Aligned Network), Sec. 3.3, Eq. 6-7.
    """
    vectors = tf.convert_to_tensor(vectors)
    if vectors.shape.rank == 3:  # per-class vectors: keep each example's true class
        true_class = tf.cast(tf.reshape(labels, [-1]), tf.int32)
        vectors = tf.gather(vectors, true_class, axis=1, batch_dims=1)
    labels_g, vectors_g, anchor_index = global_batch(labels, vectors, name="vectors")
    anchor_labels = tf.gather(labels_g, anchor_index)
    dist = pairwise_distance(tf.gather(vectors_g, anchor_index), vectors_g, "cosine")
    num_global = tf.shape(labels_g, out_type=tf.int32)[0]
    is_self = tf.equal(anchor_index[:, tf.newaxis], tf.range(num_global)[tf.newaxis, :])
    partner = tf.logical_and(tf.equal(anchor_labels[:, tf.newaxis], labels_g[tf.newaxis, :]),
                             tf.logical_not(is_self))
    total = tf.reduce_sum(tf.where(partner, dist, tf.zeros_like(dist)), axis=1)
    count = tf.reduce_sum(tf.cast(partner, tf.float32), axis=1)
    per_example = total / tf.maximum(count, 1.0)
    if sum_over_identities:  # count + 1 = K_i, the images of example i's identity
        per_example *= tf.cast(num_global, tf.float32) / (count + 1.0)
    return per_example


__all__ = ["attention_cosine_distance"]
