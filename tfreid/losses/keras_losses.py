"""`keras.losses.Loss` wrappers of the metric-learning losses, for `model.compile` / `model.fit`.

Each wrapper's `call(y_true, y_pred)` returns the per-example losses of the functional form
(`y_true` = identity labels `[b]` or `[b, 1]`, `y_pred` = embeddings `[b, D]`), and Keras reduces
them (`reduction="sum_over_batch_size"` by default: the batch mean). Inside a multi-replica
strategy they mine over the global batch like the functions do.

The loss dtype is fixed to float32: Keras casts `y_true` to the loss dtype, and identity ids above
256 would not survive a cast to bfloat16 / float16. The stateful `CenterLoss` has no wrapper:
a Keras `Loss` is not tracked, so its centres would be neither mirrored nor checkpointed.
"""

from __future__ import annotations

import keras

from tfreid.losses.alignment import attention_cosine_distance
from tfreid.losses.distances import check_metric
from tfreid.losses.triplet import (batch_hard_triplet, check_margin, check_top_r,
                                   improved_trihard, semi_hard_triplet)


class _MetricLoss(keras.losses.Loss):
    """Shared plumbing: fixed float32 dtype and a `get_config` with the loss' own arguments."""

    _fn = None

    def __init__(self, name, reduction, **params):
        super().__init__(name=name, reduction=reduction, dtype="float32")
        # Fail at construction, not at the first training step.
        if "margin" in params:
            check_margin(params["margin"])
        if "metric" in params:
            check_metric(params["metric"])
        if "top_r" in params:
            check_top_r(params["top_r"])
        self._params = params

    def call(self, y_true, y_pred):
        return type(self)._fn(y_true, y_pred, **self._params)

    def get_config(self) -> dict:
        return {**super().get_config(), **self._params}


@keras.saving.register_keras_serializable(package="tfreid")
class BatchHardTripletLoss(_MetricLoss):
    """Keras wrapper of `tfreid.losses.batch_hard_triplet` (Hermans et al. 2017).

    Args:
        margin: hinge margin.
        metric: `"euclidean"`, `"sqeuclidean"` or `"cosine"`.
        soft_margin: softplus instead of the hinge.
        reduction: Keras reduction of the per-example losses.
        name: loss name.

    Example:
        >>> model.compile(optimizer="adam", loss={"features/global": BatchHardTripletLoss(0.3)})
    """

    _fn = staticmethod(batch_hard_triplet)

    def __init__(self, margin: float = 0.3, metric: str = "euclidean", soft_margin: bool = False,
                 reduction: str = "sum_over_batch_size", name: str = "batch_hard_triplet"):
        super().__init__(name, reduction, margin=margin, metric=metric, soft_margin=soft_margin)


@keras.saving.register_keras_serializable(package="tfreid")
class SemiHardTripletLoss(_MetricLoss):
    """Keras wrapper of `tfreid.losses.semi_hard_triplet` (CCAN Eq. 5): each anchor-positive pair
    against its `top_r` semi-hard negatives.

    Args:
        margin: hinge margin `tau`.
        top_r: semi-hard negatives per anchor-positive pair.
        metric: `"euclidean"`, `"sqeuclidean"` or `"cosine"`.
        reduction: Keras reduction of the per-example losses.
        name: loss name.
    """

    _fn = staticmethod(semi_hard_triplet)

    def __init__(self, margin: float = 1.0, top_r: int = 10, metric: str = "euclidean",
                 reduction: str = "sum_over_batch_size", name: str = "semi_hard_triplet"):
        super().__init__(name, reduction, margin=margin, top_r=top_r, metric=metric)


@keras.saving.register_keras_serializable(package="tfreid")
class ImprovedTriHardLoss(_MetricLoss):
    """Keras wrapper of `tfreid.losses.improved_trihard` (AANet Eq. 9): the batch-hard triplet
    plus the hardest positive's distance.

    Args:
        margin: hinge margin `m`.
        metric: `"euclidean"`, `"sqeuclidean"` or `"cosine"`.
        reduction: Keras reduction of the per-example losses.
        name: loss name.
    """

    _fn = staticmethod(improved_trihard)

    def __init__(self, margin: float = 0.3, metric: str = "euclidean",
                 reduction: str = "sum_over_batch_size", name: str = "improved_trihard"):
        super().__init__(name, reduction, margin=margin, metric=metric)


@keras.saving.register_keras_serializable(package="tfreid")
class AttentionCosineDistanceLoss(_MetricLoss):
    """Keras wrapper of `tfreid.losses.attention_cosine_distance` (AANet ACD, Eq. 7).

    Args:
        sum_over_identities: batch mean = Eq. 7's sum over the identities (instead of / P).
        reduction: Keras reduction of the per-example losses.
        name: loss name.
    """

    _fn = staticmethod(attention_cosine_distance)

    def __init__(self, sum_over_identities: bool = False, reduction: str = "sum_over_batch_size",
                 name: str = "attention_cosine_distance"):
        if not isinstance(sum_over_identities, bool):
            raise ValueError("`sum_over_identities` must be a bool, received "
                             f"sum_over_identities={sum_over_identities!r}.")
        super().__init__(name, reduction, sum_over_identities=sum_over_identities)


__all__ = ["AttentionCosineDistanceLoss", "BatchHardTripletLoss", "ImprovedTriHardLoss",
           "SemiHardTripletLoss"]
