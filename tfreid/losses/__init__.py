"""Losses as per-example functions `fn(labels, predictions, **kw) -> [B]`.

Per-example values let the trainer average over the *global* batch under a distribution strategy
(`tf.nn.compute_average_loss`), so N replicas give the same loss as one.
"""

from __future__ import annotations

import functools

from tfreid.losses.classification import cross_entropy

LOSSES = {
    "cross_entropy": cross_entropy,
}


def build_loss(loss_type: str, **kwargs):
    """Return `fn(labels, predictions) -> [B]` for a loss type named in a config."""
    if loss_type not in LOSSES:
        raise ValueError(f"unknown loss type {loss_type!r}; available: {', '.join(sorted(LOSSES))}")
    return functools.partial(LOSSES[loss_type], **kwargs)


__all__ = ["LOSSES", "build_loss", "cross_entropy"]
