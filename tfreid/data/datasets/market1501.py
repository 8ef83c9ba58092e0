"""Market-1501 loader and the folder parser shared by the Market-style benchmarks.

Market-1501 keeps one flat folder per split (`bounding_box_train/`, `query/`,
`bounding_box_test/`) and encodes the labels in the file name: `0002_c1s1_000451_03.jpg` is
person 2 seen by camera 1. `-1_*` files are junk boxes (dropped here), `0000_*` files are
distractors (kept in the gallery). DukeMTMC-reID, CUHK03-NP and the synthetic set use the same
folders and the same `<pid>_c<cam>` name prefix, so their loaders call `load_market_layout`.

Reference:
    Zheng et al. "Scalable Person Re-identification: A Benchmark", ICCV 2015.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Sequence

from tfreid.data.datasets import register_dataset
from tfreid.data.datasets.base import ReIDDataset, Sample, relabel

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp")

# `[-\d]+` admits the junk id -1; `\d+` for the camera admits both `c1s1` (Market), `c2_f...`
# (Duke) and `c1_01` (CUHK03-NP).
MARKET_PATTERN = re.compile(r"^([-\d]+)_c(\d+)")
PATTERN_HELP = "<pid>_c<camera>..., e.g. 0002_c1s1_000451_03.jpg (pid -1 = junk, 0 = distractor)"

MARKET_SPLIT_DIRS = (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test"))
MARKET_LAYOUT = (
    "Market-1501 layout: bounding_box_train/, query/, bounding_box_test/ holding images named "
    "like 0002_c1s1_000451_03.jpg"
)


def require_root(root, dataset: str) -> str:
    """Return `root` as an absolute path, or raise a helpful error when it is unset or absent.

    Args:
        root: the user's `--data-root` (str, PathLike or None).
        dataset: dataset name, used in the error message.

    Returns:
        The absolute, user-expanded path.
    """
    if root is None or str(root) == "":
        raise ValueError(
            f"Dataset {dataset!r} needs its files on disk: pass --data-root DIR "
            f"(or build_dataset({dataset!r}, root=DIR)); received root={root!r}"
        )
    path = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if not os.path.exists(path):
        raise FileNotFoundError(f"Data root for {dataset!r} does not exist: {path}")
    return path


def find_dataset_dir(root: str, marker: str, subdirs: Sequence[str], dataset: str, layout: str) -> str:
    """Find the folder holding `marker` among `root` and `root/<subdir>` (download layouts).

    Raises:
        FileNotFoundError: naming every place looked at and the expected `layout`.
    """
    candidates = [root] + [os.path.join(root, s) for s in subdirs]
    for cand in candidates:
        if os.path.isdir(os.path.join(cand, marker)):
            return cand
    looked = ", ".join(os.path.join(c, marker) for c in candidates)
    raise FileNotFoundError(
        f"Dataset {dataset!r}: expected {marker}/ under {root} (looked at: {looked}). "
        f"Expected {layout}"
    )


def normalize_extensions(extensions: Iterable[str] | str) -> tuple[str, ...]:
    """Lower-case extensions without dots; a single string is one extension."""
    if isinstance(extensions, str):
        extensions = [extensions]
    exts = tuple(str(e).lower().lstrip(".") for e in extensions)
    if not exts or any(not e for e in exts):
        raise ValueError(
            f"extensions must be a non-empty list such as ('jpg', 'png'); received {extensions!r}"
        )
    return exts


def list_images(directory: str, extensions: Sequence[str]) -> list[str]:
    """Image file names (not paths) in `directory`, sorted; other files (Thumbs.db...) skipped."""
    suffixes = tuple("." + e for e in extensions)
    with os.scandir(directory) as it:
        names = [
            e.name
            for e in it
            if not e.name.startswith(".") and e.name.lower().endswith(suffixes) and e.is_file()
        ]
    return sorted(names)


def parse_image_dir(
    directory: str,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    pattern: re.Pattern = MARKET_PATTERN,
    pattern_help: str = PATTERN_HELP,
) -> list[Sample]:
    """Parse one flat Market-style folder into samples sorted by file name.

    Junk (pid -1) is dropped; cameras are 1-based in the name and 0-based in the result.

    Args:
        directory: folder of images.
        extensions: accepted image extensions (lower case, no dot).
        pattern: regex whose groups 1 and 2 are the pid and the 1-based camera.
        pattern_help: human description of `pattern` for error messages.

    Returns:
        list of `Sample` with absolute paths and the original pids.

    Raises:
        ValueError: an image whose name does not match, or a camera number < 1.
    """
    samples = []
    for name in list_images(directory, extensions):
        m = pattern.match(name)
        if m is None:
            raise ValueError(
                f"Cannot parse image file name {os.path.join(directory, name)!r}: expected "
                f"{pattern_help} (regex {pattern.pattern!r})"
            )
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1:
            continue
        if pid < -1 or cam < 1:
            raise ValueError(
                f"Bad ids in file name {os.path.join(directory, name)!r}: pid={pid}, camera={cam}; "
                f"expected pid >= -1 and a 1-based camera number >= 1 ({pattern_help})"
            )
        samples.append(Sample(os.path.join(directory, name), pid, cam - 1))
    return samples


def load_market_layout(
    root,
    name: str,
    subdirs: Sequence[str] = (),
    layout: str = MARKET_LAYOUT,
    extensions: Iterable[str] | str = IMAGE_EXTENSIONS,
    pattern: re.Pattern = MARKET_PATTERN,
    pattern_help: str = PATTERN_HELP,
) -> ReIDDataset:
    """Load any dataset stored in the Market-1501 folder layout.

    Args:
        root: the dataset folder, or a folder containing one of `subdirs`.
        name: dataset name for the result and for error messages.
        subdirs: download-layout folder names that may sit between `root` and the splits.
        layout: human description of the layout for error messages.
        extensions: accepted image extensions.
        pattern / pattern_help: file-name regex (groups: pid, 1-based camera) and its description.

    Returns:
        `ReIDDataset` with train pids relabelled 0..N-1 and query/gallery pids unchanged.
    """
    root = require_root(root, name)
    exts = normalize_extensions(extensions)
    data_dir = find_dataset_dir(root, MARKET_SPLIT_DIRS[0][1], subdirs, name, layout)
    splits = {}
    for split, folder in MARKET_SPLIT_DIRS:
        directory = os.path.join(data_dir, folder)
        if not os.path.isdir(directory):
            raise FileNotFoundError(
                f"Dataset {name!r}: expected {folder}/ under {data_dir} ({layout})"
            )
        splits[split] = parse_image_dir(directory, exts, pattern, pattern_help)
    if not splits["train"]:
        raise ValueError(
            f"Dataset {name!r}: no training images with extensions {exts} in "
            f"{os.path.join(data_dir, MARKET_SPLIT_DIRS[0][1])} ({layout})"
        )
    return ReIDDataset(name, data_dir, relabel(splits["train"]), splits["query"], splits["gallery"])


@register_dataset("market1501")
def load(root, extensions: Iterable[str] | str = IMAGE_EXTENSIONS) -> ReIDDataset:
    """Load Market-1501 (or any set written in its format, e.g. the synthetic one).

    Args:
        root: the folder holding `bounding_box_train/`, `query/`, `bounding_box_test/`, or a
            folder containing `Market-1501-v15.09.15/` (or `market1501/`).
        extensions: accepted image extensions (default jpg, jpeg, png, bmp); other files such as
            Thumbs.db are ignored.

    Returns:
        `ReIDDataset`; the full release gives 12,936 train images / 751 ids, 3,368 query,
        15,913 gallery (19,732 minus 3,819 junk).

    Example:
        >>> ds = build_dataset("market1501", "/data/Market-1501-v15.09.15")  # doctest: +SKIP
        >>> ds.num_train_pids  # doctest: +SKIP
        751

    Reference:
        Zheng et al. "Scalable Person Re-identification: A Benchmark", ICCV 2015.
    """
    return load_market_layout(
        root,
        "market1501",
        subdirs=("Market-1501-v15.09.15", "market1501", "market1501/Market-1501-v15.09.15"),
        extensions=extensions,
    )
