"""Center loss (Wen et al., ECCV 2016); centres move by Wen's rule, identically on every replica."""

from __future__ import annotations

import numbers

import tensorflow as tf

from tfreid.checks import check_int
from tfreid.losses.cross_replica import check_labelled_batch, gather_across_replicas


def center_loss(labels, features, centers):
    """Per-example center loss `0.5 * ||f_i - c_{y_i}||^2`.

    Args:
        labels: int tensor `[b]` of class ids in `[0, num_classes)`.
        features: float tensor `[b, D]` (cast to float32).
        centers: float tensor `[num_classes, D]`. Gradients flow into it if it is differentiable;
            `CenterLoss` passes it through `tf.stop_gradient` because its centres are updated
            by Wen's rule, not by the optimizer.

    Returns:
        float32 tensor `[b]`.

    Example:
        >>> center_loss(tf.constant([1]), tf.constant([[3.0, 4.0]]), tf.zeros([2, 2])).numpy()
        array([12.5], dtype=float32)

    Reference: Wen, Zhang, Li & Qiao, "A Discriminative Feature Learning Approach for Deep Face
    Recognition", ECCV 2016, Eq. 2; CAN (Eq. 9) uses it with weight 5e-4.
    """
    labels, features = check_labelled_batch(labels, features, name="features")
    centers = tf.cast(centers, tf.float32)
    _check_dim(features, centers.shape[-1])
    diff = features - tf.gather(centers, labels)
    return 0.5 * tf.reduce_sum(tf.square(diff), axis=1)


def _check_dim(features, dim):
    got = features.shape[-1]
    if got is not None and dim is not None and got != dim:
        raise ValueError(f"`features` must have {dim} channels (the centres' feature_dim); "
                         f"received shape {features.shape}.")


def wen_center_update(labels, features, centers, alpha):
    """New centres after one step of Wen's rule (Eq. 4) on a batch.

    `delta_j = sum_{i: y_i = j} (c_j - f_i) / (1 + n_j)` and `c_j <- c_j - alpha * delta_j`;
    classes absent from the batch do not move.

    Args:
        labels: int tensor `[B]`.
        features: float tensor `[B, D]` (no gradient is taken through the update).
        centers: float tensor `[C, D]`, the current centres.
        alpha: update rate.

    Returns:
        float32 tensor `[C, D]`.
    """
    num_classes = tf.shape(centers)[0]
    features = tf.stop_gradient(tf.cast(features, tf.float32))
    labels = tf.cast(labels, tf.int32)
    feat_sum = tf.math.unsorted_segment_sum(features, labels, num_classes)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(labels, tf.float32), labels, num_classes)
    # sum_i (c_j - f_i) = n_j c_j - sum_i f_i
    delta = (counts[:, tf.newaxis] * centers - feat_sum) / (1.0 + counts[:, tf.newaxis])
    return centers - alpha * delta


class CenterLoss(tf.Module):
    """Stateful center loss: returns per-example losses and updates the class centres.

    Each call (1) computes `0.5 * ||f_i - c_{y_i}||^2` with the centres as they were BEFORE the
    call (gradient only into the features), then (2) moves the centres by Wen's rule with rate
    `alpha`, using the features and labels of the GLOBAL batch (all-gathered across replicas).
    The centres are a non-trainable variable, so the main optimizer never touches them.

    Distribution: create the object inside `strategy.scope()`; the centres then are a mirrored
    variable (aggregation ONLY_FIRST_REPLICA). Every replica computes the same update from the
    same gathered batch and the first replica's value is written to all copies, so the copies
    stay identical. Calling it in a multi-replica `strategy.run` when it was created outside
    that strategy's scope raises `ValueError` (each replica would otherwise update a shared
    plain variable once per replica). Works eagerly and inside `tf.function`; being a
    `tf.Module`, the centres can be checkpointed with `tf.train.Checkpoint(center_loss=obj)`.

    Args:
        num_classes: number of identities (rows of the centre table).
        feature_dim: feature size `D`.
        alpha: centre update rate (Wen et al. use 0.5); 0 freezes the centres.
        name: module / variable name.

    Call arguments:
        labels: int tensor `[b]` in `[0, num_classes)`.
        features: float tensor `[b, feature_dim]`.

    Returns:
        float32 tensor `[b]` of per-example losses.

    Example:
        >>> with strategy.scope():
        ...     closs = CenterLoss(num_classes=751, feature_dim=2048, alpha=0.5)
        >>> per_example = closs(labels, features)  # inside the train step

    Reference: Wen et al., ECCV 2016 (Eq. 2 loss, Eq. 4 update); CAN.
    """

    def __init__(self, num_classes: int, feature_dim: int, alpha: float = 0.5,
                 name: str = "center_loss"):
        super().__init__(name=name)
        check_int("num_classes", num_classes)
        check_int("feature_dim", feature_dim)
        if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 0 <= alpha <= 1:
            raise ValueError(f"`alpha` must be a number in [0, 1]; received {alpha!r}.")
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.alpha = float(alpha)
        self.centers = tf.Variable(
            tf.zeros([num_classes, feature_dim], tf.float32), trainable=False, name="centers",
            synchronization=tf.VariableSynchronization.ON_WRITE,
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def _check_strategy(self):
        strategy = tf.distribute.get_strategy()
        if (strategy.num_replicas_in_sync > 1
                and not strategy.extended.variable_created_in_scope(self.centers)):
            raise ValueError(
                f"CenterLoss {self.name!r} was created outside the scope of the distribution "
                f"strategy it is called under ({type(strategy).__name__}, "
                f"{strategy.num_replicas_in_sync} replicas); create it inside "
                "`strategy.scope()` so its centres are mirrored and updated once per step.")

    def __call__(self, labels, features):
        self._check_strategy()
        labels, features = check_labelled_batch(labels, features, name="features")
        _check_dim(features, self.feature_dim)
        if tf.executing_eagerly():
            bad = tf.logical_or(labels < 0, labels >= self.num_classes)
            if bool(tf.reduce_any(bad)):
                raise ValueError(f"`labels` must be in [0, {self.num_classes}); received "
                                 f"{labels.numpy()[bad.numpy()].tolist()}.")
        # Read once: the loss uses the pre-update centres and automatic control dependencies
        # order this read before the assign below inside tf.function.
        old = tf.stop_gradient(self.centers.read_value())
        loss = center_loss(labels, features, old)
        labels_g = gather_across_replicas(labels)
        features_g = gather_across_replicas(tf.stop_gradient(features))
        self.centers.assign(wen_center_update(labels_g, features_g, old, self.alpha))
        return loss

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "feature_dim": self.feature_dim,
                "alpha": self.alpha, "name": self.name}


__all__ = ["CenterLoss", "center_loss", "wen_center_update"]
