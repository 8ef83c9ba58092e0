"""Which images exist: splits, identities, cameras and Market-1501 file names.

The plan is drawn serially from one layout generator (cheap); the pixels of each image come from
the image's own generator, so rendering can run in any order and in parallel.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tfreid.data.synthetic.config import SyntheticConfig

TRAIN_DIR, QUERY_DIR, GALLERY_DIR = "bounding_box_train", "query", "bounding_box_test"
SPLIT_DIRS = (TRAIN_DIR, QUERY_DIR, GALLERY_DIR)
# Market-1501 name: pid (4 digits, or -1 for junk), camera, sequence, 6-digit frame, box index.
NAME_PATTERN = r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$"


class ImageSpec(NamedTuple):
    """One file to render. `index` numbers the images of (pid, cam) and seeds the image."""

    split: str
    filename: str
    pid: int
    cam: int
    index: int

    @property
    def relpath(self) -> str:
        return f"{self.split}/{self.filename}"


def market_name(pid: int, cam: int, seq: int, frame: int, box: int) -> str:
    """`0002_c1s1_000451_03.jpg`; junk is `-1_c1s1_...` as in Market-1501."""
    head = "-1" if pid < 0 else f"{pid:04d}"
    return f"{head}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


class _Namer:
    """Unique names: a person walks past a camera in one sequence, 25 frames apart."""

    def __init__(self, rng):
        self.rng, self.used = rng, set()

    def names(self, pid, cam, n, query=False):
        seq, frame = int(self.rng.integers(1, 7)), int(self.rng.integers(0, 150000))
        out = []
        for _ in range(n):
            box = 0 if query else int(self.rng.integers(1, 9))
            name = market_name(pid, cam, seq, frame, box)
            while name in self.used:  # another person in the same frame: next box index
                box = box + 1 if box < 99 else 1
                name = market_name(pid, cam, seq, frame, box)
            self.used.add(name)
            out.append(name)
            frame += int(self.rng.integers(20, 60))
        return out


def _camera_counts(rng, cameras, n_images):
    """The cameras an identity is seen in (>= 2) and how many images each gets (>= 1)."""
    n_cams = int(rng.integers(2, min(cameras, n_images) + 1))
    cams = np.sort(rng.choice(cameras, n_cams, replace=False)) + 1
    counts = 1 + rng.multinomial(n_images - n_cams, np.full(n_cams, 1.0 / n_cams))
    return [int(c) for c in cams], [int(c) for c in counts]


def plan(config: SyntheticConfig) -> list[ImageSpec]:
    """All files of the set, in split order (train, query, gallery).

    Every test id has gallery images in >= 2 cameras and one query in some of them, so every
    query has a gallery match in another camera. Train and test ids are disjoint.

    Args:
        config: the generator parameters.

    Returns:
        A list of `ImageSpec`.
    """
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 4]))
    n_ids = config.train_ids + config.test_ids
    # Ids are scattered over a wider range and interleaved between splits, as in Market-1501.
    pool = np.arange(1, min(9999, 3 * n_ids) + 1)
    ids = rng.choice(pool, n_ids, replace=False)
    train_ids = sorted(int(i) for i in ids[: config.train_ids])
    test_ids = sorted(int(i) for i in ids[config.train_ids:])
    namer = _Namer(rng)
    train, query, gallery = [], [], []
    for pid in train_ids:
        cams, counts = _camera_counts(rng, config.cameras, config.images_per_id)
        for cam, n in zip(cams, counts):
            train += [ImageSpec(TRAIN_DIR, name, pid, cam, i)
                      for i, name in enumerate(namer.names(pid, cam, n))]
    for pid in test_ids:
        cams, counts = _camera_counts(rng, config.cameras, config.images_per_id)
        is_query = rng.random(len(cams)) < 0.6
        if not is_query.any():
            is_query[rng.integers(0, len(cams))] = True
        for cam, n, q in zip(cams, counts, is_query):
            index = 0
            if q:
                query.append(ImageSpec(QUERY_DIR, namer.names(pid, cam, 1, query=True)[0],
                                       pid, cam, 0))
                index = 1
            gallery += [ImageSpec(GALLERY_DIR, name, pid, cam, index + i)
                        for i, name in enumerate(namer.names(pid, cam, n))]
    for pid, count in ((0, config.distractors), (-1, config.junk)):
        cams = rng.integers(1, config.cameras + 1, count)
        per_cam = np.zeros(config.cameras + 1, int)
        for cam in cams:
            # Each one-off person gets its own short track: one image.
            gallery.append(ImageSpec(GALLERY_DIR, namer.names(pid, int(cam), 1)[0], pid, int(cam),
                                     int(per_cam[cam])))
            per_cam[cam] += 1
    return train + query + gallery
