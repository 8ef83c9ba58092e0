"""Losses as per-example functions `fn(labels, predictions, **kw) -> [B]`.

Per-example values let the trainer average over the *global* batch under a distribution strategy
(`tf.nn.compute_average_loss`), so N replicas give the same loss as one. Metric-learning losses
mine over the global batch (all-gather across replicas, see `tfreid.losses.cross_replica`).

`LOSSES` maps config names to either a loss function or, for stateful losses (center loss), a
class whose instances are such functions; `build_loss` handles both.
"""

from __future__ import annotations

import functools
import inspect

from tfreid.losses.alignment import attention_cosine_distance
from tfreid.losses.center import CenterLoss, center_loss
from tfreid.losses.classification import cross_entropy
from tfreid.losses.cross_replica import gather_across_replicas, global_batch
from tfreid.losses.distances import pairwise_distance
from tfreid.losses.keras_losses import (AttentionCosineDistanceLoss, BatchHardTripletLoss,
                                        ImprovedTriHardLoss, SemiHardTripletLoss)
from tfreid.losses.triplet import batch_hard_triplet, improved_trihard, semi_hard_triplet

LOSSES = {
    "cross_entropy": cross_entropy,
    "batch_hard_triplet": batch_hard_triplet,
    "semi_hard_triplet": semi_hard_triplet,
    "improved_trihard": improved_trihard,
    "attention_cosine_distance": attention_cosine_distance,
    "center_loss": CenterLoss,
}


def build_loss(loss_type: str, **kwargs):
    """Return `fn(labels, predictions) -> [B]` for a loss type named in a config.

    Args:
        loss_type: a key of `LOSSES`.
        **kwargs: the loss' keyword arguments (e.g. `margin=0.3`). For `"center_loss"` they
            are `CenterLoss(num_classes, feature_dim, alpha)`'s; build it inside
            `strategy.scope()` so its centres are mirrored.

    Returns:
        A callable `fn(labels, predictions)`: a `functools.partial` of the loss function, or a
        new `CenterLoss` instance.

    Raises:
        ValueError: unknown `loss_type`, or a keyword argument the loss does not take.

    Example:
        >>> fn = build_loss("batch_hard_triplet", margin=0.3)
        >>> per_example = fn(labels, embeddings)
    """
    if loss_type not in LOSSES:
        raise ValueError(f"unknown loss type {loss_type!r}; available: {', '.join(sorted(LOSSES))}")
    entry = LOSSES[loss_type]
    if isinstance(entry, type):
        params = list(inspect.signature(entry.__init__).parameters)[1:]  # drop self
    else:
        params = list(inspect.signature(entry).parameters)[2:]  # drop labels, predictions
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"loss type {loss_type!r} got unexpected argument(s) {unknown}; "
                         f"it accepts: {params}")
    if isinstance(entry, type):
        return entry(**kwargs)
    return functools.partial(entry, **kwargs)


__all__ = ["LOSSES", "AttentionCosineDistanceLoss", "BatchHardTripletLoss", "CenterLoss",
           "ImprovedTriHardLoss", "SemiHardTripletLoss", "attention_cosine_distance",
           "batch_hard_triplet", "build_loss", "center_loss", "cross_entropy",
           "gather_across_replicas", "global_batch", "improved_trihard", "pairwise_distance",
           "semi_hard_triplet"]
