"""Write a synthetic set to disk in the Market-1501 layout (optionally with a process pool)."""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import sys
import time

from tfreid.checks import check_int
from tfreid.data.synthetic.cameras import encode_jpeg
from tfreid.data.synthetic.config import Difficulty, SyntheticConfig
from tfreid.data.synthetic.layout import SPLIT_DIRS, ImageSpec, plan
from tfreid.data.synthetic.scene import render_image

PARAMS_FILE = "synthetic.json"
BOXES_FILE = "boxes.csv"
# Written last: its presence (with the matching hash) means the set is complete.
MARKER_FILE = ".synthetic_complete"
GENERATOR_TAG = "tfreid.data.synthetic"


def is_synthetic_set(root) -> bool:
    """True if `root` holds (possibly partial) output of this generator."""
    path = pathlib.Path(root) / PARAMS_FILE
    try:
        return json.loads(path.read_text()).get("generator") == GENERATOR_TAG
    except (OSError, ValueError, AttributeError):
        return False


def is_complete(root, config: SyntheticConfig) -> bool:
    """True if `root` holds a finished set generated with exactly `config`."""
    marker = pathlib.Path(root) / MARKER_FILE
    try:
        return marker.read_text().strip() == config.short_hash()
    except OSError:
        return False


def _render_chunk(out: str, seed: int, difficulty: Difficulty, specs: list[ImageSpec]):
    boxes = []
    for spec in specs:
        image, quality, box = render_image(seed, spec.pid, spec.cam, spec.index, difficulty)
        (pathlib.Path(out) / spec.split / spec.filename).write_bytes(encode_jpeg(image, quality))
        boxes.append(box)
    return boxes


def check_out(out, overwrite: bool = False) -> None:
    """Raise ValueError unless `out` may receive a synthetic set (see `generate`)."""
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a directory; {str(out)!r} is an existing file")
    if out.is_dir() and any(out.iterdir()) and not is_synthetic_set(out) and not overwrite:
        raise ValueError(
            f"out {str(out)!r} is a non-empty folder that is not a synthetic ReID set; "
            f"pass overwrite=True (--overwrite) to replace its Market-1501 split folders"
        )


def _prepare(out: pathlib.Path, overwrite: bool):
    check_out(out, overwrite)
    # Stale pieces of an earlier set go first, the marker before anything else.
    (out / MARKER_FILE).unlink(missing_ok=True)
    for name in (BOXES_FILE, PARAMS_FILE):
        (out / name).unlink(missing_ok=True)
    for split in SPLIT_DIRS:
        folder = out / split
        if folder.is_dir():
            for f in folder.glob("*.jpg"):
                f.unlink()
        folder.mkdir(parents=True, exist_ok=True)


def generate(out, config: SyntheticConfig | None = None, *, workers: int | None = None,
             overwrite: bool = False, verbose: bool = True) -> dict:
    """Generate a synthetic ReID set in the exact Market-1501 format.

    Writes `bounding_box_train/`, `query/`, `bounding_box_test/` (128x64 JPEGs named like
    `0002_c1s1_000451_03.jpg`, with `0000_*` distractors and `-1_*` junk in the gallery),
    `boxes.csv` (`filename,x0,y0,x1,y1`: the true person box in the crop, end-exclusive pixel
    bounds clipped to the image, filename relative to `out`), `synthetic.json` (parameters
    and counts) and, last, the completion marker. The bytes depend only on `config`.

    Args:
        out: output folder (created). An existing synthetic set there is replaced.
        config: generator parameters (default: the ~5k-image default set).
        workers: processes to render with (default: CPU count, max 8; 1 = in this process).
        overwrite: allow replacing the split folders of a non-empty non-synthetic folder.
        verbose: print progress to stderr.

    Returns:
        A dict of counts per split plus `seconds`.

    Example:
        >>> generate("/tmp/syn", SyntheticConfig(train_ids=6, test_ids=4, cameras=3))  # doctest: +SKIP
    """
    config = config or SyntheticConfig()
    check_int("workers", workers, allow_none=True)
    start = time.perf_counter()
    out = pathlib.Path(out)
    _prepare(out, overwrite)
    specs = plan(config)
    counts = {split: sum(s.split == split for s in specs) for split in SPLIT_DIRS}
    params = {"generator": GENERATOR_TAG, "params": config.to_dict(),
              "hash": config.short_hash(), "counts": counts, "image_size": [128, 64]}
    # Written first so that a half-written folder is still recognised as ours.
    (out / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")

    workers = workers or min(os.cpu_count() or 1, 8)
    # ~4 chunks per worker at least (load balance), at most 48 images each (progress).
    chunk = int(min(48, max(1, len(specs) // (4 * workers))))
    chunks = [specs[i:i + chunk] for i in range(0, len(specs), chunk)]
    boxes: list = [None] * len(chunks)
    if workers == 1 or len(chunks) == 1:
        for i, c in enumerate(chunks):
            boxes[i] = _render_chunk(str(out), config.seed, config.difficulty, c)
            _progress(verbose, i + 1, len(chunks), start)
    else:
        # spawn, not fork: the caller may have TensorFlow's threads running.
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = {pool.submit(_render_chunk, str(out), config.seed, config.difficulty, c): i
                       for i, c in enumerate(chunks)}
            for done, fut in enumerate(concurrent.futures.as_completed(futures), 1):
                boxes[futures[fut]] = fut.result()
                _progress(verbose, done, len(chunks), start)
    rows = ["filename,x0,y0,x1,y1"]
    for spec, box in zip(specs, (b for c in boxes for b in c)):
        rows.append(f"{spec.relpath},{box[0]},{box[1]},{box[2]},{box[3]}")
    (out / BOXES_FILE).write_text("\n".join(rows) + "\n")
    (out / MARKER_FILE).write_text(config.short_hash() + "\n")
    seconds = time.perf_counter() - start
    if verbose:
        print(f"synthetic: wrote {len(specs)} images to {out} in {seconds:.1f} s "
              f"(train {counts['bounding_box_train']}, query {counts['query']}, "
              f"gallery {counts['bounding_box_test']})", file=sys.stderr)
    return {**counts, "seconds": seconds}


def _progress(verbose, done, total, start):
    step = max(1, total // 10)
    if verbose and (done % step == 0 or done == total):
        print(f"synthetic: {done}/{total} chunks, {time.perf_counter() - start:.1f} s",
              file=sys.stderr)
