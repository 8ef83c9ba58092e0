"""Losses as per-example functions `fn(labels, predictions, **kw) -> [B]`.

Per-example values let the trainer average over the *global* batch under a distribution strategy
(`tf.nn.compute_average_loss`), so N replicas give the same loss as one. Metric-learning losses
mine over the global batch (all-gather across replicas, see `tfreid.losses.cross_replica`).

`LOSSES` maps the loss types a config names to a `LossSpec`: the loss function (or, for a
stateful loss, the class whose instances are such functions) and whether it needs the dataset's
number of identities; `build_loss` builds any of them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Callable

from tfreid.losses.alignment import attention_cosine_distance
from tfreid.losses.center import CenterLoss, center_loss
from tfreid.losses.classification import cross_entropy
from tfreid.losses.cross_replica import gather_across_replicas, global_batch
from tfreid.losses.distances import pairwise_distance
from tfreid.losses.keras_losses import (AttentionCosineDistanceLoss, BatchHardTripletLoss,
                                        ImprovedTriHardLoss, SemiHardTripletLoss)
from tfreid.losses.triplet import batch_hard_triplet, improved_trihard, semi_hard_triplet

@dataclasses.dataclass(frozen=True)
class LossSpec:
    """How a config's loss type is built.

    Attributes:
        fn: the per-example loss `fn(labels, predictions, **kwargs) -> [B]`, or for a stateful
            loss the class whose instances (built with the kwargs) are such functions.
        needs_num_classes: it takes `num_classes`, the dataset's training identities;
            `build_loss` fills it in from `dataset_num_classes` when the config leaves it out.
        stateful: it carries variables (a `tf.Module`: build it inside `strategy.scope()` so
            they are mirrored; the trainer checkpoints them with the run).
    """

    fn: Callable
    needs_num_classes: bool = False
    stateful: bool = False


LOSSES = {
    "cross_entropy": LossSpec(cross_entropy),
    "batch_hard_triplet": LossSpec(batch_hard_triplet),
    "semi_hard_triplet": LossSpec(semi_hard_triplet),
    "improved_trihard": LossSpec(improved_trihard),
    "attention_cosine_distance": LossSpec(attention_cosine_distance),
    "center_loss": LossSpec(CenterLoss, needs_num_classes=True, stateful=True),
}


def build_loss(loss_type: str, dataset_num_classes: int | None = None, **kwargs):
    """Return `fn(labels, predictions) -> [B]` for a loss type named in a config.

    Args:
        loss_type: a key of `LOSSES`.
        dataset_num_classes: the training identities, passed as `num_classes` to a loss that
            needs it (`LossSpec.needs_num_classes`) unless `kwargs` holds one; ignored by the
            others.
        **kwargs: the loss' keyword arguments (e.g. `margin=0.3`). For `"center_loss"` they
            are `CenterLoss(num_classes, feature_dim, alpha)`'s; build a stateful loss inside
            `strategy.scope()` so its variables are mirrored.

    Returns:
        A callable `fn(labels, predictions)`: a `functools.partial` of the loss function, or a
        new `CenterLoss` instance.

    Raises:
        ValueError: unknown `loss_type`, or a keyword argument the loss does not take.

    Example:
        >>> fn = build_loss("batch_hard_triplet", margin=0.3)
        >>> per_example = fn(labels, embeddings)
    """
    spec = check_loss(loss_type, kwargs)
    if spec.needs_num_classes and dataset_num_classes is not None:
        kwargs = {"num_classes": dataset_num_classes, **kwargs}
    if spec.stateful:
        return spec.fn(**kwargs)
    return functools.partial(spec.fn, **kwargs)


__all__ = ["LOSSES", "check_loss", "AttentionCosineDistanceLoss", "BatchHardTripletLoss", "CenterLoss",
           "ImprovedTriHardLoss", "LossSpec", "SemiHardTripletLoss", "attention_cosine_distance",
           "batch_hard_triplet", "build_loss", "center_loss", "cross_entropy",
           "gather_across_replicas", "global_batch", "improved_trihard", "pairwise_distance",
           "semi_hard_triplet"]


def check_loss(loss_type: str, kwargs: dict) -> LossSpec:
    """The `LossSpec` of `loss_type` if it exists and takes every key of `kwargs` (else
    ValueError): cheap, so configs are checked before any model is built."""
    if loss_type not in LOSSES:
        raise ValueError(f"unknown loss type {loss_type!r}; available: {', '.join(sorted(LOSSES))}")
    spec = LOSSES[loss_type]
    if spec.stateful:
        params = list(inspect.signature(spec.fn.__init__).parameters)[1:]  # drop self
    else:
        params = list(inspect.signature(spec.fn).parameters)[2:]  # drop labels, predictions
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"loss type {loss_type!r} got unexpected argument(s) {unknown}; "
                         f"it accepts: {params}")
    return spec
