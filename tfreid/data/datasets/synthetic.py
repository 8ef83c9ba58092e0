"""The built-in synthetic dataset: `build_dataset("synthetic", root=None, **kw)`.

Generates the set once (see `tfreid.data.synthetic`) and loads it with the Market-1501 loader,
so a fresh machine can train and evaluate without downloading anything.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

from tfreid.data.datasets import build_dataset, register_dataset
from tfreid.data.datasets.base import ReIDDataset

CACHE_ENV = "TFREID_CACHE"
_CONFIG_FIELDS = ("train_ids", "test_ids", "cameras", "images_per_id", "distractors", "junk",
                  "seed")


def cache_dir(config) -> pathlib.Path:
    """`$TFREID_CACHE` (or `~/.cache/tfreid`) / `synthetic-v1-<hash of the parameters>`."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "tfreid")
    return pathlib.Path(base) / f"synthetic-v1-{config.short_hash()}"


def make_config(difficulty="medium", **kwargs):
    """`SyntheticConfig` from keyword arguments: config fields plus difficulty knob overrides."""
    from tfreid.data.synthetic import KNOBS, Difficulty, SyntheticConfig

    unknown = sorted(set(kwargs) - set(_CONFIG_FIELDS) - set(KNOBS))
    if unknown:
        raise ValueError(
            f"build_dataset('synthetic'): unknown argument(s) {unknown}; expected any of "
            f"{list(_CONFIG_FIELDS)}, 'difficulty', 'workers', 'verbose', 'overwrite' or a knob of "
            f"{sorted(KNOBS)}"
        )
    knobs = {k: v for k, v in kwargs.items() if k in KNOBS}
    fields = {k: v for k, v in kwargs.items() if k in _CONFIG_FIELDS}
    return SyntheticConfig(**fields, difficulty=Difficulty.from_level(difficulty, **knobs))


@register_dataset("synthetic")
def load(root=None, *, difficulty="medium", workers=None, verbose=True, overwrite=False,
         **kwargs) -> ReIDDataset:
    """Generate (once) and load the synthetic ReID set.

    The set is written to `root` if given, else to `cache_dir(config)`. A completion marker
    holding the parameter hash is written last, so an interrupted or differently-parameterised
    generation is redone; a finished one is only read.

    Args:
        root: dataset folder (default: the cache folder). Must be empty, absent or a synthetic
            set: other folders are refused unless `overwrite` (then only the Market split
            folders' images and our own files are replaced).
        difficulty: level in [0, 1] or "easy" / "medium" / "hard".
        workers: render processes (default: CPU count).
        verbose: print generation progress.
        overwrite: allow generating into a non-empty folder that is not a synthetic set.
        **kwargs: `train_ids`, `test_ids`, `cameras`, `images_per_id`, `distractors`, `junk`,
            `seed` and any difficulty knob (e.g. `occlusion=0.3`).

    Returns:
        `ReIDDataset` named "synthetic" (train pids relabelled, junk dropped).

    Example:
        >>> ds = build_dataset("synthetic")  # doctest: +SKIP
        >>> ds.num_train_pids  # doctest: +SKIP
        200
    """
    from tfreid.data.synthetic import generate, is_complete

    config = make_config(difficulty, **kwargs)
    path = pathlib.Path(root) if root is not None and str(root) != "" else cache_dir(config)
    if not is_complete(path, config):
        generate(path, config, workers=workers, overwrite=overwrite, verbose=verbose)
    dataset = build_dataset("market1501", str(path))
    return dataclasses.replace(dataset, name="synthetic")
