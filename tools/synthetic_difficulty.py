"""How hard is a synthetic (or any Market-format) set for raw-colour matching?

Prints mAP / rank-1 on the test split for two feature-free baselines:
  (a) raw pixels: the crop downsampled to 16x8x3, flattened, L2-normalised;
  (b) colour histogram: 8x8x8 RGB bins, L2-normalised.
Both use Euclidean distance and the Market protocol (same id + same camera gallery items are
dropped, junk is absent). On a well-calibrated synthetic set both stay well below 0.5 mAP: colour
alone is unreliable, while a trained network should do much better.

Usage:
    python tools/synthetic_difficulty.py --root /tmp/syn
    python tools/synthetic_difficulty.py --root /tmp/syn --generate --difficulty 0.6
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

_NAME = re.compile(r"^([-\d]+)_c(\d)")


def _load_split(root: pathlib.Path, folder: str):
    """(paths, pids, camids) of one Market split folder; junk (-1) dropped."""
    paths, pids, cams = [], [], []
    for path in sorted((root / folder).glob("*.jpg")):
        m = _NAME.match(path.name)
        if m and int(m.group(1)) >= 0:
            paths.append(path)
            pids.append(int(m.group(1)))
            cams.append(int(m.group(2)) - 1)
    return paths, np.array(pids), np.array(cams)


def raw_pixel_features(images: np.ndarray) -> np.ndarray:
    """(N, 128, 64, 3) uint8 -> (N, 384) L2-normalised 16x8 box-downsampled pixels."""
    n, h, w, c = images.shape
    small = images.reshape(n, 16, h // 16, 8, w // 8, c).mean(axis=(2, 4), dtype=np.float32)
    feats = small.reshape(n, -1)
    return feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(1e-12)


def colour_histogram_features(images: np.ndarray, bins: int = 8) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, bins^3) L2-normalised joint RGB histograms."""
    n = images.shape[0]
    q = (images.astype(np.int64) * bins) // 256
    code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    offsets = (np.arange(n) * bins**3)[:, None]
    hist = np.bincount((code.reshape(n, -1) + offsets).ravel(), minlength=n * bins**3)
    hist = hist.reshape(n, bins**3).astype(np.float32)
    return hist / np.linalg.norm(hist, axis=1, keepdims=True).clip(1e-12)


def local_map(distmat, q_pids, g_pids, q_cams, g_cams):
    """Vectorised Market-protocol mAP and rank-1 (fallback when tfreid.metrics is absent)."""
    order = np.argsort(distmat, axis=1, kind="stable")
    match = g_pids[order] == q_pids[:, None]
    keep = ~((g_pids[order] == q_pids[:, None]) & (g_cams[order] == q_cams[:, None]))
    aps, r1 = [], []
    for m, k in zip(match, keep):  # one row per query; NumPy inside
        m = m[k]
        if not m.any():
            continue
        hits = np.cumsum(m)
        aps.append(float((hits[m] / (np.flatnonzero(m) + 1)).mean()))
        r1.append(float(m[0]))
    return float(np.mean(aps)), float(np.mean(r1))


def evaluate(distmat, q_pids, g_pids, q_cams, g_cams):
    """(mAP, rank-1) via tfreid.metrics.evaluate_rank when available."""
    try:
        from tfreid.metrics import evaluate_rank
    except ImportError:
        return local_map(distmat, q_pids, g_pids, q_cams, g_cams)
    result = evaluate_rank(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    return float(result.mAP), float(result.cmc[0])


def _distances(qf, gf):
    sq = (qf**2).sum(1)[:, None] + (gf**2).sum(1)[None, :] - 2.0 * qf @ gf.T
    return np.sqrt(np.maximum(sq, 0.0))


def baselines(root) -> dict[str, tuple[float, float]]:
    """{"raw_pixels": (mAP, rank1), "colour_histogram": (mAP, rank1)} on root's test split."""
    root = pathlib.Path(root)
    for folder in ("query", "bounding_box_test"):
        if not (root / folder).is_dir():
            raise FileNotFoundError(
                f"--root {str(root)!r} has no {folder}/ folder; expected a Market-1501 layout")
    qp, q_pids, q_cams = _load_split(root, "query")
    gp, g_pids, g_cams = _load_split(root, "bounding_box_test")
    if not qp or not gp:
        raise FileNotFoundError(f"--root {str(root)!r}: no query or gallery images found")

    def load(paths):
        return np.stack([np.asarray(Image.open(p).convert("RGB").resize((64, 128))) for p in paths])

    q_img, g_img = load(qp), load(gp)
    out = {}
    for name, fn in (("raw_pixels", raw_pixel_features), ("colour_histogram",
                                                          colour_histogram_features)):
        out[name] = evaluate(_distances(fn(q_img), fn(g_img)), q_pids, g_pids, q_cams, g_cams)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="Market-format dataset folder")
    parser.add_argument("--generate", action="store_true",
                        help="first (re)generate the default synthetic set into --root")
    parser.add_argument("--difficulty", default="medium", help="with --generate: level or preset")
    parser.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                        help="with --generate: difficulty knob override (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="with --generate")
    args = parser.parse_args(argv)
    if args.generate:
        from tfreid.data.synthetic.__main__ import main as synth_main

        synth_args = ["--out", args.root, "--difficulty", args.difficulty, "--seed",
                      str(args.seed), "--quiet"]
        for knob in args.knob:
            synth_args += ["--knob", knob]
        synth_main(synth_args)
    try:
        results = baselines(args.root)
    except FileNotFoundError as err:
        parser.error(str(err))
    print(f"{'baseline':<18} {'mAP':>6} {'rank-1':>7}   ({os.path.abspath(args.root)})")
    for name, (m_ap, r1) in results.items():
        print(f"{name:<18} {m_ap:6.3f} {r1:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
