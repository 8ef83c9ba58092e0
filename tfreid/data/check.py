"""Decode every image of a dataset and report counts, sizes and problem files.

    python -m tfreid.data.check --dataset market1501 --data-root /data/Market-1501-v15.09.15
    python -m tfreid.data.check --dataset cuhk03 --data-root /data/cuhk03 --set labeled=false

Prints images / ids / cameras per split, images per camera, the most common image sizes, and
lists unreadable files and symlinks that dangle or lead outside the dataset folder (exit code 1)
and odd ones: grayscale, palette or alpha PNGs, CMYK, BMP,
tiny images, content that does not match the extension. Odd files are still usable: the input
pipeline converts every image to 3-channel RGB (Pillow `Image.convert("RGB")` semantics).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tfreid.cli import HelpFormatter, add_quiet
from tfreid.data.datasets import available_datasets, build_dataset
from tfreid.data.datasets.base import ReIDDataset, find_bad_links
from tfreid.progress import Progress

SPLITS = ("train", "query", "gallery")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_EXT_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP"}


@dataclasses.dataclass
class CheckReport:
    """What `check_dataset` found.

    Attributes:
        dataset / root: the dataset's name and folder.
        splits: per split, {"images", "ids", "cams", "per_camera": {camid: count}}.
        sizes: Counter of (width, height) over the unique files that decoded.
        modes / formats: Counters of Pillow modes and file formats.
        unreadable: (path, error) for files that could not be decoded.
        odd: (path, reason) for files that decode but are not plain RGB images of a sane size.
        num_files: unique files decoded (a file in two splits is decoded once).
        seconds: wall time of the decoding.
    """

    dataset: str
    root: str
    splits: dict
    sizes: collections.Counter
    modes: collections.Counter
    formats: collections.Counter
    unreadable: list
    odd: list
    num_files: int
    seconds: float = 0.0
    links: list = dataclasses.field(default_factory=list)  # (path, reason): dangling/outside

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.links


def inspect_image(path: str, min_side: int = 16):
    """Decode one file like the pipeline does and describe it.

    Returns:
        (size, format, mode, error, reasons): `error` is None when the file decodes; `reasons`
        lists why the file is odd (empty for a plain RGB image).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            fmt, mode, size = im.format, im.mode, im.size
            transparent = "transparency" in im.info
            im.convert("RGB").load()  # forces a full decode: truncated files fail here
    except Exception as err:  # noqa: BLE001 -- any decoder failure means "unreadable"
        return None, None, None, f"{type(err).__name__}: {err}", []
    reasons = []
    if mode in _GRAY_MODES:
        reasons.append(f"grayscale (mode {mode})")
    if mode in _ALPHA_MODES or transparent:
        reasons.append(f"alpha/transparency (mode {mode}), dropped")
    if mode in ("P", "PA"):
        reasons.append("palette image")
    if mode == "CMYK":
        reasons.append("CMYK colour")
    if mode not in _GRAY_MODES | _ALPHA_MODES | {"RGB", "P", "CMYK"}:
        reasons.append(f"unusual mode {mode}")
    if fmt == "BMP":
        reasons.append("BMP file")
    expected = _EXT_FORMATS.get(os.path.splitext(path)[1].lower().lstrip("."))
    if expected and fmt != expected:
        reasons.append(f"{fmt} data in a .{os.path.splitext(path)[1].lstrip('.')} file")
    if min(size) < min_side:
        reasons.append(f"tiny ({size[0]}x{size[1]} px, side < {min_side})")
    return size, fmt, mode, None, reasons


def check_dataset(dataset: ReIDDataset, workers: int | None = None, min_side: int = 16,
                  progress: bool = False) -> CheckReport:
    """Decode every image of `dataset` (threaded) and collect statistics and problem files.

    Args:
        dataset: a loaded `ReIDDataset`.
        workers: decoding threads (default: 2 x CPU count, at most 16); Pillow releases the GIL
            while decoding.
        min_side: images with width or height below this are reported as tiny.
        progress: show a progress bar on stderr.

    Returns:
        `CheckReport`.

    Example:
        >>> report = check_dataset(build_dataset("market1501", root))  # doctest: +SKIP
        >>> print(format_report(report))  # doctest: +SKIP
    """
    splits = {}
    for split in SPLITS:
        samples = getattr(dataset, split)
        camids = np.array([s.camid for s in samples], dtype=np.int64)
        counts = np.bincount(camids) if camids.size else np.zeros(0, np.int64)
        splits[split] = {
            "images": len(samples),
            "ids": len({s.pid for s in samples}),
            "cams": int(np.count_nonzero(counts)),
            "per_camera": {int(c): int(n) for c, n in enumerate(counts) if n},
        }
    paths = sorted({s.path for split in SPLITS for s in getattr(dataset, split)})
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    results = []
    start = time.perf_counter()
    bar = Progress(len(paths), "decoding", unit="image", quiet=not progress, stream=sys.stderr)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, res in enumerate(pool.map(lambda p: inspect_image(p, min_side), paths), 1):
            results.append(res)
            if i % 64 == 0 or i == len(paths):
                bar.update(i)
    sizes, modes, formats = collections.Counter(), collections.Counter(), collections.Counter()
    unreadable, odd = [], []
    for path, (size, fmt, mode, error, reasons) in zip(paths, results):
        if error is not None:
            unreadable.append((path, error))
            continue
        sizes[size] += 1
        modes[mode] += 1
        formats[fmt] += 1
        if reasons:
            odd.append((path, "; ".join(reasons)))
    return CheckReport(dataset.name, dataset.root, splits, sizes, modes, formats, unreadable, odd,
                       len(paths), time.perf_counter() - start, find_bad_links(dataset.root))


def format_report(report: CheckReport, top_sizes: int = 10, max_list: int = 100) -> str:
    """Human-readable text of a `CheckReport` (unreadable files are always all listed)."""
    lines = [f"Dataset {report.dataset} at {report.root}", "  split    | images |   ids | cams"]
    for split, st in report.splits.items():
        lines.append(f"  {split:<8} | {st['images']:6d} | {st['ids']:5d} | {st['cams']:4d}")
    cams = sorted({c for st in report.splits.values() for c in st["per_camera"]})
    lines.append("Images per camera (camid: " + " / ".join(report.splits) + "):")
    for c in cams:
        counts = " / ".join(str(st["per_camera"].get(c, 0)) for st in report.splits.values())
        lines.append(f"  cam {c:2d}: {counts}")
    rate = report.num_files / report.seconds if report.seconds > 0 else float("nan")
    lines.append(f"Decoded {report.num_files} unique files in {report.seconds:.1f} s ({rate:.0f} img/s)")
    decoded = max(sum(report.sizes.values()), 1)
    lines.append(f"Image sizes (W x H), {min(top_sizes, len(report.sizes))} most common of {len(report.sizes)}:")
    for (w, h), n in report.sizes.most_common(top_sizes):
        lines.append(f"  {w:5d} x {h:<5d} {n:8d} ({100 * n / decoded:5.1f}%)")
    lines.append("Formats: " + ", ".join(f"{k} {v}" for k, v in report.formats.most_common())
                 + "; modes: " + ", ".join(f"{k} {v}" for k, v in report.modes.most_common()))
    if report.unreadable:
        lines.append(f"UNREADABLE files ({len(report.unreadable)}) -- fix or remove them:")
        lines.extend(f"  {p}: {e}" for p, e in report.unreadable)
    if report.links:
        lines.append(f"BAD LINKS ({len(report.links)}) -- training refuses files outside the "
                     "dataset folder unless allow_outside_root=true:")
        lines.extend(f"  {p}: {r}" for p, r in report.links)
    if report.odd:
        lines.append(f"Odd files ({len(report.odd)}) -- usable: the input pipeline converts every "
                     "image to 3-channel RGB:")
        lines.extend(f"  {p}: {r}" for p, r in report.odd[:max_list])
        if len(report.odd) > max_list:
            lines.append(f"  ... and {len(report.odd) - max_list} more (raise --max-list)")
    links = f", {len(report.links)} bad links" if report.links else ""
    lines.append("Result: OK" if report.ok else
                 f"Result: FAILED ({len(report.unreadable)} unreadable{links})")
    return "\n".join(lines)


def parse_overrides(items) -> dict:
    """`["labeled=false", "split_id=3"]` -> {"labeled": False, "split_id": 3} (YAML values)."""
    import yaml

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value; received {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfreid.data.check", formatter_class=HelpFormatter,
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help=f"one of {', '.join(available_datasets())}")
    parser.add_argument("--data-root", default=None,
                        help="dataset folder (or CSV file for 'csv') (default: the synthetic "
                             "set's cache; required for the others)")
    parser.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[],
                        metavar="KEY=VALUE",
                        help="loader options, e.g. --set labeled=false split_id=0 (default: none)")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding threads (default: 2 x CPUs, at most 16)")
    parser.add_argument("--min-side", type=int, default=16, help="report images smaller than this")
    parser.add_argument("--max-list", type=int, default=100, help="odd files listed at most")
    add_quiet(parser)
    parser.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code (1 if any file is unreadable)."""
    args = build_parser().parse_args(argv)
    try:
        # Links leading outside the folder are reported below rather than refused here.
        dataset = build_dataset(args.dataset, args.data_root, **{
            "allow_outside_root": True, **parse_overrides(args.overrides)})
    except (ValueError, FileNotFoundError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = check_dataset(dataset, workers=args.workers, min_side=args.min_side,
                           progress=not args.quiet)
    print(format_report(report, max_list=args.max_list))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
