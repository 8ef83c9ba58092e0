"""Gather a replica's batch into the global batch, for losses that mine over the whole batch.

Design choice: metric-learning losses mine triplets over the GLOBAL batch. Each
replica all-gathers labels and embeddings, computes the distances from its LOCAL anchors to all
global examples, and returns per-example losses for its local anchors only. Scaled by the global
batch size (`tf.nn.compute_average_loss`) and summed over replicas this is exactly the
1-replica loss of the same global batch, and so are the gradients: the gradient of
`ReplicaContext.all_gather` all-reduces (sums) the incoming gradients over replicas and hands
each replica the slice of its own examples, so every replica back-propagates the full
`d(total loss) / d(own embeddings)` through its own part of the network.

fast-reid instead gives each GPU whole identities and mines locally, which changes the
loss with the number of GPUs (fewer negatives per anchor) and constrains the sampler. Ours costs
one all-gather of `[global batch, D]` floats per loss per step, negligible next to the network.
"""

from __future__ import annotations

import tensorflow as tf


def _replica_context():
    """The replica context if we are inside `strategy.run` with more than one replica, else None."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def gather_across_replicas(x):
    """Concatenates `x` over all replicas along axis 0 (in replica order).

    Identity outside a replica context (eager code, cross-replica context) and with one
    replica. Differentiable: the gradient reaching the gathered tensor is summed over replicas
    and sliced back to each replica's own rows.

    Args:
        x: tensor `[b, ...]`, this replica's examples; `b` may differ between replicas.

    Returns:
        Tensor `[B, ...]` with `B` the global batch size.

    Example:
        >>> # inside strategy.run with 2 replicas holding [[1.], [2.]] and [[3.], [4.]]:
        >>> gather_across_replicas(x)  # -> [[1.], [2.], [3.], [4.]] on both replicas
    """
    ctx = _replica_context()
    if ctx is None:
        return x
    return ctx.all_gather(x, axis=0)


def local_offset(x):
    """Row of the global batch where this replica's first example of `x` lands (0 if unsharded).

    Args:
        x: tensor `[b, ...]`, this replica's examples.

    Returns:
        int32 scalar tensor: the summed batch sizes of the replicas before this one.
    """
    ctx = _replica_context()
    if ctx is None:
        return tf.constant(0, tf.int32)
    # Gathering the sizes (R ints) instead of assuming `replica_id * b` keeps uneven final
    # batches correct.
    sizes = ctx.all_gather(tf.shape(x, out_type=tf.int32)[:1], axis=0)
    replica_id = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    return tf.reduce_sum(sizes[:replica_id])


def global_batch(labels, embeddings, name: str = "embeddings"):
    """Gathers a replica's labelled embeddings into the global batch.

    Args:
        labels: int tensor `[b]` (a trailing axis of size 1, as Keras passes `y_true`, is
            flattened).
        embeddings: float tensor `[b, D]`.
        name: how error messages call `embeddings`.

    Returns:
        `(labels_global [B] int64, embeddings_global [B, D] float32, anchor_index [b] int32)`:
        `anchor_index[i]` is the row of local example `i` in the global batch.

    Raises:
        ValueError: ranks or static batch sizes of `labels` and `embeddings` disagree.
    """
    labels, embeddings = check_labelled_batch(labels, embeddings, name=name)
    labels_g = gather_across_replicas(labels)
    embeddings_g = gather_across_replicas(embeddings)
    b = tf.shape(labels, out_type=tf.int32)[0]
    anchor_index = local_offset(labels) + tf.range(b, dtype=tf.int32)
    return labels_g, embeddings_g, anchor_index


def check_labelled_batch(labels, embeddings, name: str = "embeddings"):
    """Validates and normalises `(labels [b], embeddings [b, D])`; returns int64 / float32."""
    labels = tf.convert_to_tensor(labels)
    embeddings = tf.cast(tf.convert_to_tensor(embeddings), tf.float32)
    if labels.shape.rank == 2 and labels.shape[-1] == 1:
        labels = tf.reshape(labels, [-1])
    if labels.shape.rank != 1:
        raise ValueError(f"`labels` must have shape [batch]; received shape {labels.shape}.")
    if embeddings.shape.rank != 2:
        raise ValueError(f"`{name}` must have shape [batch, dim]; received shape "
                         f"{embeddings.shape}.")
    nl, ne = labels.shape[0], embeddings.shape[0]
    if nl is not None and ne is not None and nl != ne:
        raise ValueError(f"`labels` ({nl}) and `{name}` ({ne}) must have the same batch size.")
    if labels.dtype.is_floating:
        labels = tf.cast(tf.round(labels), tf.int64)  # Keras may pass y_true as floats
    return tf.cast(labels, tf.int64), embeddings


__all__ = ["check_labelled_batch", "gather_across_replicas", "global_batch", "local_offset"]
