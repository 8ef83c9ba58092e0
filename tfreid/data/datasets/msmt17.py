"""MSMT17 loader (list files + image folders, 15 cameras).

The release ships `list_train.txt`, `list_val.txt`, `list_query.txt`, `list_gallery.txt`; each
line is `relative/path.jpg pid`, relative to `train/` (train, val) or `test/` (query, gallery)
-- `mask_train_v2/` and `mask_test_v2/` in MSMT17_V2. The camera is the third underscore field
of the file name: `0000_000_01_0303morning_0015_0.jpg` is camera 1 (camid 0). Query and gallery
pids are kept as listed (MSMT17 numbers its test identities from 0; it has no distractors).

Reference:
    Wei et al. "Person Transfer GAN to Bridge Domain Gap for Person Re-Identification", CVPR 2018.
"""

from __future__ import annotations

import os

import numpy as np

from tfreid.data.datasets import register_dataset
from tfreid.data.datasets.base import ReIDDataset, Sample, relabel
from tfreid.data.datasets.market1501 import require_root

MSMT_LAYOUT = (
    "MSMT17 layout: list_train.txt, list_val.txt, list_query.txt, list_gallery.txt and the image "
    "folders train/ + test/ (or mask_train_v2/ + mask_test_v2/)"
)
NAME_HELP = "<pid>_<idx>_<camera>_<date><time>_<frame>_<n>.jpg, e.g. 0000_000_01_0303morning_0015_0.jpg"
_SUBDIRS = ("MSMT17_V1", "MSMT17_V2", "MSMT17", "msmt17", "msmt17/MSMT17_V1", "msmt17/MSMT17_V2")


@register_dataset("msmt17")
def load(root, combine_val: bool = False) -> ReIDDataset:
    """Load MSMT17 (V1 or V2 layout).

    Args:
        root: folder holding the `list_*.txt` files, or one containing `MSMT17_V1/`/`MSMT17_V2/`.
        combine_val: also train on `list_val.txt` (torchreid's `combineall`); off by default, as
            published results train on `list_train.txt` only.

    Returns:
        `ReIDDataset` (full release: 30,248 train images / 1,041 ids; 11,659 query; 82,161
        gallery), camids 0..14.

    Raises:
        ValueError: a list path that is absolute or leaves the dataset folder, a malformed line
            or an unparseable file name (naming the list file and line).
        FileNotFoundError: a listed image that does not exist (naming list file and line).

    Example:
        >>> ds = build_dataset("msmt17", "/data/MSMT17_V1", combine_val=True)  # doctest: +SKIP
    """
    root = require_root(root, "msmt17")
    if not isinstance(combine_val, (bool, np.bool_)):
        raise ValueError(f"combine_val must be True or False; received {combine_val!r}")
    data_dir = None
    for cand in (root,) + tuple(os.path.join(root, s) for s in _SUBDIRS):
        if os.path.isfile(os.path.join(cand, "list_train.txt")):
            data_dir = cand
            break
    if data_dir is None:
        raise FileNotFoundError(
            f"Dataset 'msmt17': expected list_train.txt under {root} (or under "
            f"{', '.join(_SUBDIRS)} inside it). Expected {MSMT_LAYOUT}"
        )
    train_dir = _image_dir(data_dir, ("train", "mask_train_v2"))
    test_dir = _image_dir(data_dir, ("test", "mask_test_v2"))
    lists = {}
    for split, image_dir in (("train", train_dir), ("val", train_dir), ("query", test_dir), ("gallery", test_dir)):
        list_path = os.path.join(data_dir, f"list_{split}.txt")
        if not os.path.isfile(list_path):
            if split == "val" and not combine_val:
                lists[split] = []
                continue
            raise FileNotFoundError(f"Dataset 'msmt17': expected {list_path} ({MSMT_LAYOUT})")
        lists[split] = read_list(list_path, image_dir, data_dir)
    train = lists["train"] + lists["val"] if combine_val else lists["train"]
    train.sort(key=lambda s: s.path)
    return ReIDDataset("msmt17", data_dir, relabel(train), lists["query"], lists["gallery"])


def _image_dir(data_dir: str, names: tuple[str, ...]) -> str:
    for name in names:
        path = os.path.join(data_dir, name)
        if os.path.isdir(path):
            return path
    raise FileNotFoundError(
        f"Dataset 'msmt17': expected one of {', '.join(n + '/' for n in names)} under {data_dir} "
        f"({MSMT_LAYOUT})"
    )


def _walk_files(directory: str) -> set[str]:
    # One directory walk instead of one stat per listed image (126k images in MSMT17).
    found = set()
    for dirpath, _, filenames in os.walk(directory):
        rel = os.path.relpath(dirpath, directory)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        found.update(prefix + f for f in filenames)
    return found


def read_list(list_path: str, image_dir: str, data_dir: str) -> list[Sample]:
    """Parse one MSMT17 list file into samples sorted by path (pids as listed, junk -1 dropped).

    Args:
        list_path: `list_*.txt`.
        image_dir: folder the listed paths are relative to.
        data_dir: the dataset folder no listed path may leave.

    Returns:
        list of `Sample` with absolute paths.
    """
    existing = _walk_files(image_dir)
    root_prefix = os.path.normpath(data_dir) + os.sep
    samples = []
    with open(list_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{list_path}, line {lineno}"
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit() or int(fields[1]) < -1:
                raise ValueError(f"{where}: expected '<relative/path.jpg> <pid>' with pid >= -1; received {line.strip()!r}")
            rel, pid = fields[0].replace("\\", "/"), int(fields[1])
            path = os.path.normpath(os.path.join(image_dir, rel))
            if os.path.isabs(rel) or rel.startswith("/") or not path.startswith(root_prefix):
                raise ValueError(
                    f"{where}: path {fields[0]!r} escapes the dataset folder {data_dir}; list paths "
                    f"must be relative to {image_dir} and stay inside the dataset"
                )
            parts = os.path.basename(rel).split("_")
            cam = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else 0
            if cam < 1:
                raise ValueError(
                    f"{where}: cannot read the camera from file name {rel!r}; expected {NAME_HELP} "
                    "(third underscore field = 1-based camera)"
                )
            if os.path.normpath(rel).replace(os.sep, "/") not in existing and not os.path.isfile(path):
                raise FileNotFoundError(f"{where}: listed image {path} does not exist")
            if pid == -1:
                continue
            samples.append(Sample(path, pid, cam - 1))
    samples.sort(key=lambda s: s.path)
    return samples
