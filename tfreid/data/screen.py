"""Up-front screening of a dataset's image files: size, magic bytes and end marker, once, in Python.

Run before any training or evaluation work (`python -m tfreid.train`, `python -m tfreid.evaluate`)
so that a bad file stops the run at once, naming the file and its split, instead of surfacing
hours later inside the TensorFlow pipeline. Reading the first and last bytes of each file is
cheap (Market-1501: ~30k files in about a second from a warm cache); a file that passes may still
fail to decode (corrupt scan data), which the pipeline catches in-graph
(`tfreid.data.pipeline`).

Policies (``data.on_bad_image``):

- ``"error"``: the first bad file raises :class:`~tfreid.data.pipeline.BadImageError` naming the
  split, the file, what is wrong and the fix.
- ``"skip"``: bad files leave the splits (train pids are relabelled if an identity loses all its
  images), a one-line warning names a few; more than ``max_bad_fraction`` of a split, or all of
  it, unreadable is an error.

Example:
    >>> dataset, skipped = screen_dataset(dataset, "skip", max_bad_fraction=0.05)
    >>> skipped["train"]
    ['/data/market/bounding_box_train/0002_c1s1_000451_03.jpg']
"""

from __future__ import annotations

import dataclasses
import os

from tfreid.data.datasets.base import ReIDDataset, relabel
from tfreid.data.pipeline import BadImageError

__all__ = ["file_problem", "screen_dataset"]

SPLITS = ("train", "query", "gallery")
# magic bytes -> (format, end marker that must occur in the last _TAIL bytes, or None)
_FORMATS = {
    b"\xff\xd8\xff": ("JPEG", b"\xff\xd9"),
    b"\x89PNG\r\n\x1a\n": ("PNG", b"IEND"),
    b"GIF87a": ("GIF", b";"),
    b"GIF89a": ("GIF", b";"),
    b"BM": ("BMP", None),
}
_TAIL = 1024  # some writers append a few bytes (padding, metadata) after the end marker
_FIX = ("fix or remove it, or set data.on_bad_image=skip (train: --set data.on_bad_image=skip, "
        "evaluate: --on-bad-image skip)")


def file_problem(path: str) -> str | None:
    """What is wrong with image file `path` (``None`` if size and markers look right)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
    except FileNotFoundError:
        return "file not found" + (" (dangling symlink)" if os.path.islink(path) else "")
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if size == 0:
        return "empty file (0 bytes)"
    for magic, (fmt, end) in _FORMATS.items():
        if head.startswith(magic):
            if end is not None and end not in tail:
                return f"truncated {fmt} ({size} bytes, no {fmt} end marker)"
            return None
    return f"not a JPEG/PNG/BMP/GIF image (first bytes {head[:8]!r})"


def screen_dataset(dataset: ReIDDataset, policy: str = "error", max_bad_fraction: float = 0.05,
                   splits=SPLITS) -> tuple[ReIDDataset, dict[str, list[str]]]:
    """Check every file of the `splits` of `dataset` once (see the module docstring).

    Returns:
        ``(dataset, skipped)``: the dataset without the bad files (the same object when all are
        good) and ``{split: [bad paths]}`` for the splits that had any.

    Raises:
        BadImageError: ``policy="error"`` and a bad file.
        ValueError: ``policy="skip"`` and more than `max_bad_fraction` of a split is bad.
    """
    problems: dict[str, str] = {}
    skipped: dict[str, list[str]] = {}
    for split in splits:
        samples = getattr(dataset, split)
        bad = []
        for s in samples:
            if s.path not in problems:
                problems[s.path] = file_problem(s.path)
            if problems[s.path] is not None:
                bad.append(s.path)
        if not bad:
            continue
        if policy == "error":
            more = f" (and {len(bad) - 1} more bad {split} files)" if len(bad) > 1 else ""
            raise BadImageError(bad[0], f"{split} image {bad[0]}: {problems[bad[0]]}; expected "
                                        f"a readable JPEG/PNG/BMP/GIF file{more}; {_FIX}")
        _check_share(split, bad, len(samples), max_bad_fraction)
        skipped[split] = bad
        print(f"warning: skipping {len(bad)} unreadable {split} image(s) of {len(samples)}: "
              f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
    if not skipped:
        return dataset, skipped
    keep = lambda samples: [s for s in samples if problems.get(s.path) is None]  # noqa: E731
    return dataclasses.replace(dataset, train=relabel(keep(dataset.train)),
                               query=keep(dataset.query), gallery=keep(dataset.gallery)), skipped


def _check_share(split: str, bad: list[str], total: int, max_bad_fraction: float) -> None:
    # An unreadable split is a wrong folder or a broken copy, not a few bad files: stop.
    if len(bad) == total or len(bad) > max_bad_fraction * total:
        raise ValueError(
            f"{len(bad)} of {total} {split} images ({100 * len(bad) / total:.1f}%) are unreadable, "
            f"more than data.max_bad_fraction={max_bad_fraction}: {', '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''}; check the dataset with python -m tfreid.data.check")
