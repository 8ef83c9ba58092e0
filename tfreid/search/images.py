"""Which images to embed: folders, list files and single files; identities from file names.

A folder is searched recursively (sorted, hidden files skipped) for the image types the
pipeline decodes. A list file holds one image path per line, relative to the list's folder
unless absolute. With a dataset name, pid and camera are parsed from each file name the way that
dataset's loader reads them (`0002_c1s1_000451_03.jpg` is person 2, camera 1 for the
Market-1501 family).

Example:
    >>> root, paths = list_images("gallery/")                        # doctest: +SKIP
    >>> pids, camids = parse_labels(paths, "market1501")             # doctest: +SKIP
"""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np

from tfreid.data.datasets.market1501 import IMAGE_EXTENSIONS, MARKET_PATTERN, PATTERN_HELP

EXTENSIONS = (*IMAGE_EXTENSIONS, "gif")  # what tfreid.data.pipeline.decode_image reads
_MSMT_PATTERN = re.compile(r"^(\d+)_\d+_(\d+)_")  # <pid>_<index>_<camera>_...
_MSMT_HELP = "<pid>_<idx>_<camera>_..., e.g. 0000_000_01_0303morning_0015_0.jpg"
# Dataset name -> (regex with groups pid and 1-based camera, description for errors).
NAME_PATTERNS = {
    "market1501": (MARKET_PATTERN, PATTERN_HELP),
    "dukemtmcreid": (MARKET_PATTERN, PATTERN_HELP),
    "cuhk03": (MARKET_PATTERN, PATTERN_HELP),  # the CUHK03-NP folders
    "synthetic": (MARKET_PATTERN, PATTERN_HELP),
    "msmt17": (_MSMT_PATTERN, _MSMT_HELP),
}


def list_images(source: str | os.PathLike, flag: str = "--images") -> tuple[str, list[str]]:
    """The images named by `source`: a folder (recursive), an image file, or a list file.

    Args:
        source: folder, image file, or text file with one image path per line.
        flag: how the caller names `source` in error messages.

    Returns:
        `(root, paths)`: the folder relative paths are stored against (the folder itself, the
        image's folder, or the list file's folder) and the absolute image paths, in order.

    Raises:
        FileNotFoundError: `source` does not exist.
        ValueError: no image found, or a listed path that is not an image file name.
    """
    source = os.path.abspath(os.fspath(source))
    if os.path.isdir(source):
        paths = []
        for folder, subdirs, files in os.walk(source):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            paths += sorted(os.path.join(folder, f) for f in files if _is_image_name(f))
        if not paths:
            raise ValueError(f"{flag} {source}: no image files ({', '.join(EXTENSIONS)}) in this "
                             "folder or its subfolders")
        return source, paths
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{flag} {source}: not found (expected a folder of images, an "
                                "image file or a text file listing image paths)")
    root = os.path.dirname(source)
    if _is_image_name(source):
        return root, [source]
    try:
        lines = pathlib.Path(source).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{flag} {source}: neither an image file name nor a UTF-8 text file "
                         "listing image paths") from None
    entries = [(lineno, line.strip()) for lineno, line in enumerate(lines, 1) if line.strip()]
    for lineno, entry in entries:
        if not _is_image_name(entry):
            raise ValueError(f"{flag} {source}, line {lineno}: {entry!r} is not an image file "
                             f"name (expected one path per line ending in "
                             f"{', '.join('.' + e for e in EXTENSIONS)})")
    paths = [os.path.normpath(os.path.join(root, entry)) for _, entry in entries]
    if not paths:
        raise ValueError(f"{flag} {source}: the list file names no images")
    return root, paths


def relative_paths(paths: list[str], root: str) -> list[str]:
    """`paths` relative to `root` where they lie inside it, absolute otherwise ('/' separated)."""
    prefix = os.path.join(root, "")
    return [p[len(prefix):].replace(os.sep, "/") if p.startswith(prefix) else p for p in paths]


def parse_labels(paths: list[str], dataset: str, strict: bool = True):
    """Person and camera ids from the file names, as `dataset`'s loader reads them.

    Args:
        paths: image paths (only the file name is parsed).
        dataset: one of `NAME_PATTERNS`.
        strict: raise on a name that does not parse; otherwise give it pid -1 and camid -1.

    Returns:
        `(pids, camids)`: int64 arrays; camids start at 0, pid -1 marks junk or unknown.

    Raises:
        ValueError: unknown dataset, or (strict) a name without ids.
    """
    if dataset not in NAME_PATTERNS:
        raise ValueError(f"--dataset {dataset!r}: identities can be parsed from the file names "
                         f"of {', '.join(sorted(NAME_PATTERNS))}")
    pattern, help_text = NAME_PATTERNS[dataset]
    pids = np.full(len(paths), -1, np.int64)
    camids = np.full(len(paths), -1, np.int64)
    for i, path in enumerate(paths):
        match = pattern.match(os.path.basename(path))
        if match is None or int(match.group(2)) < 1:
            if strict:
                raise ValueError(f"--dataset {dataset}: cannot read pid and camera from file name "
                                 f"{path!r}; expected {help_text}")
            continue
        pids[i], camids[i] = int(match.group(1)), int(match.group(2)) - 1
    return pids, camids


def _is_image_name(name: str) -> bool:
    base = os.path.basename(name)
    return not base.startswith(".") and base.lower().rsplit(".", 1)[-1] in EXTENSIONS
