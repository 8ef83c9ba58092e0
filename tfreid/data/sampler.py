"""Batch samplers: P x K identities (metric learning) or shuffled images (classification).

Both are pure NumPy and stateless: ``epoch_indices(epoch)`` is a function of
``(seed, epoch)`` only, so a run resumed at step ``s`` regenerates exactly the batches it would
have seen (the tf.data pipeline relies on this, see ``tfreid.data.pipeline``).

Reference: Hermans et al., "In Defense of the Triplet Loss for Person Re-Identification", 2017
(batch construction with P identities x K images); torchreid ``RandomIdentitySampler``.
"""

from __future__ import annotations

import operator
from typing import Sequence

import numpy as np

from tfreid.checks import check_int

__all__ = ["PKSampler", "RandomSampler"]


class PKSampler:
    """P identities x K images per batch, seeded and reproducible per epoch.

    Every epoch has exactly ``len(self)`` batches. Identities are used about equally often: the
    epoch's identity slots (``len(self) * p`` of them) are filled from successive random
    permutations of all identities, so any two identities are used a number of times differing by
    at most one. A batch never holds the same identity twice (where a batch straddles two
    permutations, the second permutation is reordered so its head avoids the tail's ids).

    The K images of an identity slot are consecutive entries of a per-epoch random permutation of
    that identity's images, walked cyclically across the identity's slots. Hence the K images are
    distinct when the identity has at least K images, and every image is used before any is
    reused. Identities with fewer than K images are sampled with replacement in the same cyclic
    way: every one of their images appears, none more than ``ceil(K / n)`` times per slot.

    Args:
        pids: the person id of every sample (one entry per image, any integers); the sampler
            returns indices into this sequence.
        p: identities per batch (>= 1, at most the number of distinct ids).
        k: images per identity (>= 1).
        seed: non-negative integer seed.

    Returns:
        ``epoch_indices(epoch)``: int64 array ``[len(self), p * k]`` of sample indices; rows
        ``[i*k:(i+1)*k]`` of a batch share one pid and the p groups have distinct pids.

    Raises:
        ValueError: fewer than ``p`` distinct identities, ``p``/``k`` < 1, empty or non-integer
            ``pids``, negative ``seed`` or ``epoch``.

    Example:
        >>> sampler = PKSampler([0, 0, 1, 1, 2, 2, 2, 2], p=2, k=2, seed=0)
        >>> len(sampler)
        2
        >>> sampler.epoch_indices(0).shape
        (2, 4)
    """

    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0):
        self.p = check_int("p", p)
        self.k = check_int("k", k)
        seed_i = operator.index(seed) if isinstance(seed, (int, np.integer)) else None
        if seed_i is None or seed_i < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed_i
        arr = np.asarray(pids)
        if arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"pids must be a non-empty 1-D sequence of ints, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"pids must be integers, got dtype {arr.dtype}")
        # Relabel to 0..N-1 so identities index count/start tables directly.
        self._unique_pids, self._labels = np.unique(arr, return_inverse=True)
        self.num_pids = int(self._unique_pids.size)
        if self.num_pids < self.p:
            raise ValueError(
                f"p={self.p} identities per batch needs at least {self.p} distinct pids, "
                f"got {self.num_pids}"
            )
        self._counts = np.bincount(self._labels, minlength=self.num_pids)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)[:-1]])
        self.num_samples = int(arr.size)
        # Tiny datasets (fewer than P*K images) still give one batch per epoch, via replacement.
        self._len = max(1, self.num_samples // (self.p * self.k))

    def __len__(self) -> int:
        """Batches per epoch: ``num_samples // (p * k)`` (at least 1)."""
        return self._len

    def __repr__(self) -> str:
        return (
            f"PKSampler(num_samples={self.num_samples}, num_pids={self.num_pids}, p={self.p}, "
            f"k={self.k}, seed={self.seed}, batches_per_epoch={self._len})"
        )

    def _identity_slots(self, rng: np.random.Generator) -> np.ndarray:
        """Relabelled identity of every (batch, group) slot, shape [len * p]."""
        n, p = self.num_pids, self.p
        needed = self._len * p
        num_perms = -(-needed // n)
        perms = [rng.permutation(n)]
        filled = n
        # One loop iteration per pass over the identities (few per epoch), not per item.
        for _ in range(num_perms - 1):
            perm = rng.permutation(n)
            tail = filled % p  # slots of the straddling batch already taken
            if tail:
                clash = np.isin(perm, perms[-1][n - tail:])  # tail < p <= n
                free, taken = perm[~clash], perm[clash]
                head = p - tail  # free has n - tail >= p - tail ids, enough to finish the batch
                perm = np.concatenate([free[:head], taken, free[head:]])
            perms.append(perm)
            filled += n
        return np.concatenate(perms)[:needed]

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Sample indices of every batch of ``epoch`` (pure function of ``(seed, epoch)``).

        Args:
            epoch: non-negative epoch number.

        Returns:
            int64 array ``[len(self), p * k]``.
        """
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        rng = np.random.default_rng([self.seed, int(epoch)])
        slots = self._identity_slots(rng)
        # Per-epoch random order of each identity's images: sort by (identity, random key).
        keys = rng.random(self.num_samples)
        shuffled = np.lexsort((keys, self._labels))
        # Occurrence number of each slot among the slots of the same identity.
        by_id = np.argsort(slots, kind="stable")
        first = np.searchsorted(slots[by_id], slots[by_id], side="left")
        occurrence = np.empty_like(slots)
        occurrence[by_id] = np.arange(slots.size) - first
        # Walk each identity's permutation cyclically: slot o takes positions o*K .. o*K+K-1.
        offsets = occurrence[:, None] * self.k + np.arange(self.k)[None, :]
        counts = self._counts[slots][:, None]
        positions = self._starts[slots][:, None] + offsets % counts
        return shuffled[positions].reshape(self._len, self.p * self.k).astype(np.int64)


class RandomSampler:
    """Shuffled batches of ``p * k`` images, no identity balance (torchreid's ``RandomSampler``).

    Every epoch is a seeded permutation of all samples cut into ``len(self)`` batches (the
    remainder is dropped, as PyTorch's ``drop_last``); identities appear as often as they have
    images. HA-CNN's paper recipe trains on such batches of 32. The interface is
    :class:`PKSampler`'s, with ``p`` = batch size and ``k = 1`` (no identity groups).

    Args:
        num_samples: number of training images (>= 1).
        batch_size: images per batch (>= 1).
        seed: non-negative integer seed.

    Example:
        >>> sampler = RandomSampler(10, batch_size=4, seed=0)
        >>> sampler.epoch_indices(0).shape
        (2, 4)
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0):
        self.num_samples = check_int("num_samples", num_samples)
        self.p, self.k = check_int("batch_size", batch_size), 1
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self._len = max(1, self.num_samples // self.p)

    def __len__(self) -> int:
        """Batches per epoch: ``num_samples // batch_size`` (at least 1)."""
        return self._len

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """Sample indices of every batch of ``epoch`` (pure function of ``(seed, epoch)``).

        Returns:
            int64 array ``[len(self), batch_size]``; a set smaller than one batch is repeated.
        """
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        rng = np.random.default_rng([self.seed, int(epoch)])
        order = rng.permutation(self.num_samples)
        order = np.resize(order, max(self.num_samples, self.p))  # tiny sets: cycle the order
        return order[: self._len * self.p].reshape(self._len, self.p).astype(np.int64)
