"""`random_erasing_start_epoch`: random erasing only from a given epoch on (CCAN: epoch 50)."""

import numpy as np
import pytest
from PIL import Image

from tfreid import config as config_lib
from tfreid.data.datasets.base import Sample
from tfreid.data.pipeline import build_train_dataset
from tfreid.data.transforms import AugmentConfig

P, K = 2, 2  # 16 images -> 4 batches per epoch
SIZE = (16, 8)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("erase")
    rng = np.random.default_rng(0)
    out = []
    for pid in range(4):
        for j in range(4):
            path = root / f"{pid}_{j}.png"
            Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(path)
            out.append(Sample(str(path), pid, j % 2))
    return out


def batches(samples, n, augment, start_epoch=0, start_step=0):
    ds = build_train_dataset(samples, SIZE, p=P, k=K, seed=3, augment=augment, start_step=start_step,
                             deterministic=True, random_erasing_start_epoch=start_epoch)
    return [images.numpy() for images, _ in ds.take(n)]


def test_erasing_starts_at_the_given_epoch_other_augmentation_unchanged(samples):
    erase = AugmentConfig(flip=True, pad=2, random_erasing=1.0)
    no_erase = AugmentConfig(flip=True, pad=2, random_erasing=0.0)
    gated = batches(samples, 8, erase, start_epoch=1)  # epochs 0 and 1
    always = batches(samples, 8, erase)
    never = batches(samples, 8, no_erase)
    for b in range(4):  # epoch 0: exactly the batches of a run without erasing
        np.testing.assert_array_equal(gated[b], never[b], err_msg=f"batch {b}")
    for b in range(4, 8):  # from epoch 1 on: exactly the batches of a run erasing throughout
        np.testing.assert_array_equal(gated[b], always[b], err_msg=f"batch {b}")
        assert np.abs(gated[b] - never[b]).max() > 0.1, f"batch {b} was not erased"
    # resuming mid-epoch-1 reproduces the same batches (the epoch comes from the batch number)
    resumed = batches(samples, 2, erase, start_epoch=1, start_step=6)
    for got, want in zip(resumed, gated[6:]):
        np.testing.assert_array_equal(got, want)


def test_bad_start_epoch_is_rejected(samples):
    with pytest.raises(ValueError, match="`random_erasing_start_epoch` must be an integer >= 0, received random_erasing_start_epoch=-1"):
        build_train_dataset(samples, SIZE, p=P, k=K, random_erasing_start_epoch=-1)
    cfg = config_lib.resolve("ccan", None, {}, ["data.random_erasing_start_epoch=50"])
    assert cfg.data.random_erasing_start_epoch == 50
    with pytest.raises(ValueError, match="data.random_erasing_start_epoch must be int, got 1.5"):
        config_lib.resolve("ccan", None, {}, ["data.random_erasing_start_epoch=1.5"])
