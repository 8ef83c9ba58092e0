"""Loaders for your own data: a CSV index (`csv`) or one folder per identity (`folder`).

Both follow the common contract: junk pid -1 is dropped, pid 0 (distractors) stays, train pids
are relabelled 0..N-1, query/gallery keep theirs, every split is sorted by path.
"""

from __future__ import annotations

import csv
import os
import re
from typing import Iterable

from tfreid.data.datasets import register_dataset
from tfreid.data.datasets.base import ReIDDataset, Sample, relabel
from tfreid.data.datasets.market1501 import (
    IMAGE_EXTENSIONS,
    list_images,
    normalize_extensions,
    require_root,
)

SPLITS = ("train", "query", "gallery")
CSV_COLUMNS = ("path", "pid", "camid", "split")
CSV_LAYOUT = (
    "CSV layout: a header line 'path,pid,camid,split' then one row per image; path relative to "
    "the CSV's folder or absolute, pid an integer (-1 junk, 0 distractor), camid 0-based, split "
    "one of train/query/gallery"
)
FOLDER_LAYOUT = (
    "folder layout: train/<pid>/*.jpg, query/<pid>/*.jpg, gallery/<pid>/*.jpg -- one folder per "
    "identity, the camera in the file name (camera_regex)"
)


def _int(value: str, what: str, where: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{where}: {what} must be an integer; received {value!r}") from None


@register_dataset("csv")
def load_csv(root) -> ReIDDataset:
    """Load a dataset described by a CSV file with columns `path,pid,camid,split`.

    Args:
        root: the CSV file, or a folder containing `dataset.csv`.

    Returns:
        `ReIDDataset` named "csv" rooted at the CSV's folder.

    Example:
        >>> # dataset.csv:  path,pid,camid,split
        >>> #               imgs/a.jpg,7,0,train
        >>> ds = build_dataset("csv", "/data/mine/dataset.csv")  # doctest: +SKIP
    """
    root = require_root(root, "csv")
    csv_path = os.path.join(root, "dataset.csv") if os.path.isdir(root) else root
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"Dataset 'csv': expected {csv_path} ({CSV_LAYOUT})")
    base = os.path.dirname(csv_path)
    splits = {s: [] for s in SPLITS}
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{csv_path}: missing column(s) {missing}; found {header}. Expected {CSV_LAYOUT}"
            )
        reader.fieldnames = header
        for row in reader:
            where = f"{csv_path}, line {reader.line_num}"
            split = (row["split"] or "").strip()
            if split not in splits:
                raise ValueError(f"{where}: split must be one of {SPLITS}; received {split!r}")
            pid = _int(row["pid"], "pid", where)
            camid = _int(row["camid"], "camid", where)
            if pid < -1 or camid < 0:
                raise ValueError(
                    f"{where}: expected pid >= -1 and a 0-based camid >= 0; received pid={pid}, camid={camid}"
                )
            rel = (row["path"] or "").strip()
            path = os.path.normpath(os.path.join(base, rel))  # an absolute `rel` wins in join
            if not rel or not os.path.isfile(path):
                raise FileNotFoundError(f"{where}: image {path} does not exist (path column {rel!r})")
            if pid != -1:
                splits[split].append(Sample(path, pid, camid))
    if not splits["train"] and not splits["query"]:
        raise ValueError(f"{csv_path}: no train or query rows. Expected {CSV_LAYOUT}")
    for samples in splits.values():
        samples.sort(key=lambda s: s.path)
    return ReIDDataset("csv", base, relabel(splits["train"]), splits["query"], splits["gallery"])


@register_dataset("folder")
def load_folder(
    root,
    camera_regex: str = r"c(\d+)",
    default_camid: int | None = None,
    extensions: Iterable[str] | str = IMAGE_EXTENSIONS,
) -> ReIDDataset:
    """Load `root/{train,query,gallery}/<identity>/<image>` folders.

    Identity folders named by integers keep those pids (-1 junk is dropped, 0 = distractor);
    if any folder name is not an integer, all names (over the three splits, so query and
    gallery agree) are sorted and mapped to 1..N.

    Args:
        root: the folder holding `train/`, `query/` and `gallery/`.
        camera_regex: searched in each file name; group 1 is the 1-based camera number.
        default_camid: 0-based camid for files where `camera_regex` does not match; None makes
            such a file an error.
        extensions: accepted image extensions; other files are ignored.

    Returns:
        `ReIDDataset` named "folder".

    Example:
        >>> # mine/train/alice/cam1_0001.jpg, mine/query/alice/c2_0001.jpg, ...
        >>> ds = build_dataset("folder", "mine", camera_regex=r"c(?:am)?(\\d+)")  # doctest: +SKIP
    """
    root = require_root(root, "folder")
    exts = normalize_extensions(extensions)
    try:
        cam_re = re.compile(camera_regex)
    except (re.error, TypeError) as err:
        raise ValueError(f"camera_regex is not a valid regex: {camera_regex!r} ({err})") from None
    if cam_re.groups < 1:
        raise ValueError(f"camera_regex needs a capture group for the camera number; received {camera_regex!r}")
    if default_camid is not None and (not isinstance(default_camid, int) or default_camid < 0):
        raise ValueError(f"default_camid must be None or an integer >= 0; received {default_camid!r}")

    identity_dirs = {}
    for split in SPLITS:
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            raise FileNotFoundError(f"Dataset 'folder': expected {split}/ under {root} ({FOLDER_LAYOUT})")
        stray = list_images(split_dir, exts)
        if stray:
            raise ValueError(
                f"Dataset 'folder': image {os.path.join(split_dir, stray[0])} is not inside an "
                f"identity folder ({FOLDER_LAYOUT})"
            )
        with os.scandir(split_dir) as it:
            identity_dirs[split] = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))

    names = sorted(set().union(*identity_dirs.values()))
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        pid_of = {n: int(n) for n in names}
    else:
        pid_of = {n: i + 1 for i, n in enumerate(names)}

    splits = {}
    for split in SPLITS:
        samples = []
        for name in identity_dirs[split]:
            pid = pid_of[name]
            if pid == -1:
                continue
            if pid < -1:
                raise ValueError(f"Dataset 'folder': identity folder {name!r} in {split}/ must be >= -1")
            id_dir = os.path.join(root, split, name)
            for fname in list_images(id_dir, exts):
                m = cam_re.search(fname)
                if m is None:
                    if default_camid is None:
                        raise ValueError(
                            f"Cannot read the camera from {os.path.join(id_dir, fname)!r}: "
                            f"camera_regex {camera_regex!r} does not match; rename the file, pass "
                            "another camera_regex or a default_camid"
                        )
                    camid = default_camid
                else:
                    camid = _int(m.group(1), "camera", os.path.join(id_dir, fname)) - 1
                    if camid < 0:
                        raise ValueError(
                            f"{os.path.join(id_dir, fname)!r}: camera numbers are 1-based; received {m.group(1)!r}"
                        )
                samples.append(Sample(os.path.join(id_dir, fname), pid, camid))
        samples.sort(key=lambda s: s.path)
        splits[split] = samples
    if not splits["train"] and not splits["query"]:
        raise ValueError(f"Dataset 'folder': no images under {root} with extensions {exts} ({FOLDER_LAYOUT})")
    return ReIDDataset("folder", root, relabel(splits["train"]), splits["query"], splits["gallery"])
