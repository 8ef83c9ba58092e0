"""PKSampler: batch layout, balance, replacement, determinism (pure NumPy, fast)."""

import numpy as np
import pytest

from tfreid.data.sampler import PKSampler, RandomSampler


def _pids(counts):
    """Sample pid list with counts[i] images of identity 100 + i (non-contiguous ids on purpose)."""
    return np.repeat(100 + np.arange(len(counts)), counts)


def _check_layout(pids, sampler, batches):
    p, k = sampler.p, sampler.k
    labels = pids[batches].reshape(len(sampler), p, k)
    # Rows [i*K:(i+1)*K] share a pid and the P groups are distinct identities.
    assert (labels == labels[:, :, :1]).all()
    for batch in labels[:, :, 0]:
        assert len(set(batch.tolist())) == p
    return labels[:, :, 0]


def test_len_shape_dtype_and_range():
    pids = _pids([5, 7, 3, 9, 4, 6, 8, 2])  # 44 images
    sampler = PKSampler(pids, p=3, k=4, seed=0)
    assert len(sampler) == 44 // 12 == 3
    batches = sampler.epoch_indices(0)
    assert batches.shape == (3, 12) and batches.dtype == np.int64
    assert batches.min() >= 0 and batches.max() < 44


@pytest.mark.parametrize("counts,p,k", [([5, 7, 3, 9, 4, 6, 8, 2], 3, 4), ([4] * 7, 3, 2), ([30, 2, 2], 3, 2)])
def test_p_distinct_identities_times_k_over_many_epochs(counts, p, k):
    # 7 ids with P=3 makes batches straddle the identity permutations: still no duplicate ids.
    pids = _pids(counts)
    sampler = PKSampler(pids, p=p, k=k, seed=3)
    for epoch in range(20):
        _check_layout(pids, sampler, sampler.epoch_indices(epoch))


def test_identities_used_equally_and_k_distinct_images():
    pids = _pids([5, 7, 3, 9, 4, 6, 8, 10, 12, 4, 5])
    sampler = PKSampler(pids, p=4, k=3, seed=1)
    for epoch in range(5):
        batches = sampler.epoch_indices(epoch)
        ids = _check_layout(pids, sampler, batches)
        uses = np.bincount(ids.ravel() - 100, minlength=11)
        assert uses.max() - uses.min() <= 1 and uses.sum() == len(sampler) * 4
        # Every identity here has >= K images, so a slot never repeats an image.
        slots = batches.reshape(-1, 3)
        assert all(len(set(slot.tolist())) == 3 for slot in slots)


def test_every_image_used_once_when_counts_allow():
    # 6 ids x 8 images, P=3, K=4: 4 batches = 12 slots = 2 per id = exactly each image once.
    pids = _pids([8] * 6)
    sampler = PKSampler(pids, p=3, k=4, seed=5)
    for epoch in range(3):
        assert np.array_equal(np.sort(sampler.epoch_indices(epoch).ravel()), np.arange(48))


def test_with_replacement_for_identities_with_fewer_than_k_images():
    pids = _pids([2, 1, 9, 9])  # ids 100 (2 images) and 101 (1 image) have fewer than K=4
    sampler = PKSampler(pids, p=2, k=4, seed=0)
    seen_small = 0
    for epoch in range(10):
        batches = sampler.epoch_indices(epoch).reshape(-1, 4)
        for slot in batches:
            pid = pids[slot[0]]
            if pid == 100:  # images 0, 1: cyclic replacement uses each exactly twice
                assert sorted(slot.tolist()) == [0, 0, 1, 1]
                seen_small += 1
            elif pid == 101:
                assert slot.tolist() == [2, 2, 2, 2]
                seen_small += 1
    assert seen_small > 0


def test_deterministic_per_seed_and_epoch():
    pids = _pids([5, 7, 3, 9, 4, 6, 8, 2])
    a = PKSampler(pids, 3, 4, seed=7)
    b = PKSampler(list(pids), 3, 4, seed=7)
    assert np.array_equal(a.epoch_indices(4), b.epoch_indices(4))
    # Pure function of (seed, epoch): order of calls does not matter (resume).
    first = a.epoch_indices(2)
    a.epoch_indices(0)
    assert np.array_equal(a.epoch_indices(2), first)
    assert not np.array_equal(a.epoch_indices(2), a.epoch_indices(3))
    assert not np.array_equal(a.epoch_indices(2), PKSampler(pids, 3, 4, seed=8).epoch_indices(2))


def test_tiny_dataset_still_gives_one_batch():
    pids = _pids([1, 1, 1])
    sampler = PKSampler(pids, p=3, k=4)
    assert len(sampler) == 1
    batch = sampler.epoch_indices(0)
    assert sorted(batch.ravel().tolist()) == [0] * 4 + [1] * 4 + [2] * 4


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(pids=[0, 0, 1, 1], p=3, k=2), "p=3"),
        (dict(pids=[0, 1, 2], p=0, k=2), "`p` must be"),
        (dict(pids=[0, 1, 2], p=2, k=0), "`k` must be"),
        (dict(pids=[], p=1, k=1), "non-empty"),
        (dict(pids=[0.5, 1.0], p=1, k=1), "integers"),
        (dict(pids=[0, 1], p=1, k=1, seed=-1), "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PKSampler(**kwargs)


def test_bad_epoch():
    with pytest.raises(ValueError, match="epoch"):
        PKSampler([0, 1], 1, 1).epoch_indices(-1)


def test_random_sampler_is_a_seeded_permutation_per_epoch():
    sampler = RandomSampler(23, batch_size=5, seed=4)
    assert len(sampler) == 4 and (sampler.p, sampler.k) == (5, 1)
    epochs = [sampler.epoch_indices(e) for e in range(3)]
    for batches in epochs:
        assert batches.shape == (4, 5) and batches.dtype == np.int64
        assert len(np.unique(batches)) == 20 and batches.min() >= 0 and batches.max() < 23
    assert not np.array_equal(epochs[0], epochs[1])
    np.testing.assert_array_equal(RandomSampler(23, 5, seed=4).epoch_indices(1), epochs[1])
    # Over many epochs every image is used about equally often (no identity balance).
    counts = np.bincount(np.concatenate([sampler.epoch_indices(e).ravel() for e in range(230)]),
                         minlength=23)
    assert counts.sum() == 230 * 20 and counts.min() > 150


def test_random_sampler_cycles_a_set_smaller_than_a_batch_and_rejects_bad_args():
    batches = RandomSampler(3, batch_size=7, seed=0).epoch_indices(0)
    assert batches.shape == (1, 7) and set(batches.ravel()) == {0, 1, 2}
    for kwargs in ({"num_samples": 0, "batch_size": 2}, {"num_samples": 4, "batch_size": 0},
                   {"num_samples": 4, "batch_size": 2, "seed": -1}):
        with pytest.raises(ValueError):
            RandomSampler(**kwargs)
    with pytest.raises(ValueError, match="epoch"):
        RandomSampler(4, 2).epoch_indices(-1)
