"""CUHK03 loader: the new 767/700 protocol (CUHK03-NP) and the classic 20 x 1367/100 splits.

Two on-disk sources are understood:

* the CUHK03-NP folder release (`cuhk03-np/{labeled,detected}/bounding_box_train/`, `query/`,
  `bounding_box_test/`, names like `0001_c1_1.png`) -- parsed like Market-1501;
* the original `cuhk-03.mat` (MATLAB v7.3, i.e. HDF5) plus
  `cuhk03_new_protocol_config_{labeled,detected}.mat`. Images are extracted once into
  `images_{labeled,detected}/` next to the .mat (or under `cache_dir`) as PNGs named
  `<pair>_<pid:03d>_<view>_<img:02d>.png` (torchreid's names); a marker file makes later loads
  skip the extraction.

Semantics follow torchreid's `CUHK03`: camid = view within the camera pair (0 or 1); images
0-4 of a person come from view 1 and 5-9 from view 2; the new protocol takes pids from the
config's `labels`. One deliberate difference: in the classic protocol the test identities keep
a global 1-based id (`offset of the camera pair + pid`) instead of being relabelled 0..99, so
pid 0 never appears in query/gallery (it marks distractors elsewhere). Rankings are unchanged.

Reference:
    Li et al. "DeepReID: Deep Filter Pairing Neural Network for Person Re-identification",
    CVPR 2014. Zhong et al. "Re-ranking Person Re-identification with k-reciprocal Encoding",
    CVPR 2017 (the 767/700 protocol).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Iterable

import numpy as np

from tfreid.data.datasets import register_dataset
from tfreid.data.datasets.base import ReIDDataset, Sample, relabel
from tfreid.data.datasets.market1501 import (
    IMAGE_EXTENSIONS,
    load_market_layout,
    require_root,
)

MARKER = ".tfreid_extracted.json"
_CACHE_NAME = re.compile(r"^\d+_\d+_\d+_\d+\.png$")
CUHK03_LAYOUT = (
    "CUHK03 layout: either the CUHK03-NP folders cuhk03-np/{labeled,detected}/"
    "{bounding_box_train,query,bounding_box_test}/ (protocol='new' only), or "
    "cuhk03_release/cuhk-03.mat (or cuhk-03.mat) plus "
    "cuhk03_new_protocol_config_{labeled,detected}.mat"
)


@register_dataset("cuhk03")
def load(
    root,
    labeled: bool = True,
    protocol: str = "new",
    split_id: int = 0,
    extensions: Iterable[str] | str = IMAGE_EXTENSIONS,
    cache_dir: str | None = None,
) -> ReIDDataset:
    """Load CUHK03.

    Args:
        root: folder holding `cuhk03-np/` and/or `cuhk03_release/cuhk-03.mat` with the protocol
            .mat files (a folder containing `cuhk03/` also works).
        labeled: True for the hand-labelled boxes, False for the DPM-detected ones.
        protocol: "new" (767 train / 700 test ids, one split) or "classic" (1367 / 100,
            20 splits, query = gallery = the test images, as torchreid).
        split_id: 0 for "new"; 0..19 for "classic".
        extensions: image extensions accepted in the CUHK03-NP folders.
        cache_dir: where to extract the .mat images (default: next to the protocol files).

    Returns:
        `ReIDDataset` with camids 0/1 (view within the camera pair).

    Example:
        >>> ds = build_dataset("cuhk03", "/data/cuhk03", labeled=False)  # doctest: +SKIP
        >>> ds.num_train_pids  # doctest: +SKIP
        767
    """
    root = require_root(root, "cuhk03")
    if not isinstance(labeled, (bool, np.bool_)):
        raise ValueError(f"labeled must be True or False; received {labeled!r}")
    if protocol not in ("new", "classic"):
        raise ValueError(f"protocol must be 'new' or 'classic'; received {protocol!r}")
    if isinstance(split_id, bool) or not isinstance(split_id, (int, np.integer)):
        raise ValueError(f"split_id must be an integer; received {split_id!r}")
    kind = "labeled" if labeled else "detected"
    bases = [root, os.path.join(root, "cuhk03")]

    if protocol == "new":
        if split_id != 0:
            raise ValueError(f"The new CUHK03 protocol has one split: split_id must be 0; received {split_id}")
        for base in bases:
            for np_dir in (os.path.join(base, "cuhk03-np", kind), os.path.join(base, kind)):
                if os.path.isdir(os.path.join(np_dir, "bounding_box_train")):
                    return load_market_layout(np_dir, "cuhk03", extensions=extensions)

    mat_path, data_dir = _find_raw_mat(root, bases)
    img_dir = extract_images(mat_path, kind, os.path.join(cache_dir or data_dir, f"images_{kind}"))
    if protocol == "new":
        config = os.path.join(data_dir, f"cuhk03_new_protocol_config_{kind}.mat")
        if not os.path.isfile(config):
            alt = os.path.join(os.path.dirname(mat_path), os.path.basename(config))
            if not os.path.isfile(alt):
                raise FileNotFoundError(
                    f"Dataset 'cuhk03': expected {config} for protocol='new' ({CUHK03_LAYOUT})"
                )
            config = alt
        return _new_split(config, img_dir, data_dir)
    return _classic_split(mat_path, img_dir, data_dir, split_id)


def _find_raw_mat(root: str, bases: list[str]) -> tuple[str, str]:
    candidates = []
    for base in bases:
        for rel in ("cuhk03_release/cuhk-03.mat", "cuhk-03.mat"):
            path = os.path.join(base, rel)
            candidates.append(path)
            if os.path.isfile(path):
                return path, base
    raise FileNotFoundError(
        f"Dataset 'cuhk03': no usable data under {root} (looked for {', '.join(candidates)} and "
        f"cuhk03-np/ folders). Expected {CUHK03_LAYOUT}"
    )


def extract_images(mat_path: str, kind: str, out_dir: str) -> str:
    """Write the `kind` ("labeled"/"detected") images of `cuhk-03.mat` as PNGs, once.

    The .mat is MATLAB v7.3: `mat[kind]` holds 5 references (camera pairs); each dereferences
    to a [10 x num_pids] array of image references (MATLAB's num_pids x 10 cell, transposed by
    HDF5); each image is stored transposed (3 x W x H). Empty cells are skipped.

    Args:
        mat_path: path of cuhk-03.mat.
        kind: "labeled" or "detected".
        out_dir: output folder; a marker file in it records a finished extraction.

    Returns:
        `out_dir`.
    """
    marker = os.path.join(out_dir, MARKER)
    if os.path.isfile(marker):
        return out_dir
    import h5py
    from PIL import Image

    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"Cannot create the CUHK03 image cache {out_dir} ({err}); pass cache_dir=... "
            "pointing to a writable folder"
        ) from err
    pids_per_pair, count = [], 0
    with h5py.File(mat_path, "r") as mat:
        if kind not in mat:
            raise ValueError(f"{mat_path} has no {kind!r} field; expected the CUHK03 cuhk-03.mat")
        pair_refs = np.asarray(mat[kind]).ravel()
        for pair, pair_ref in enumerate(pair_refs):
            print(
                f"Extracting CUHK03 {kind} images: camera pair {pair + 1}/{len(pair_refs)} -> {out_dir}",
                file=sys.stderr,
            )
            img_refs = np.asarray(mat[pair_ref]).T  # (num_pids, 10)
            pids_per_pair.append(int(img_refs.shape[0]))
            for pid in range(img_refs.shape[0]):
                for img_idx, ref in enumerate(img_refs[pid]):
                    img = np.asarray(mat[ref]).T
                    if img.size == 0 or img.ndim < 3:
                        continue  # empty cell: some persons have fewer than 10 images
                    view = 1 if img_idx < 5 else 2
                    name = f"{pair + 1}_{pid + 1:03d}_{view}_{img_idx + 1:02d}.png"
                    Image.fromarray(np.ascontiguousarray(img.astype(np.uint8))).save(
                        os.path.join(out_dir, name)
                    )
                    count += 1
    # Written last so that an interrupted extraction is redone.
    with open(marker, "w") as f:
        json.dump({"source": mat_path, "kind": kind, "num_images": count,
                   "pids_per_pair": pids_per_pair}, f)
    return out_dir


def _parse_cache(img_dir: str) -> tuple[list[str], np.ndarray]:
    names = sorted(n for n in os.listdir(img_dir) if _CACHE_NAME.match(n))
    parts = np.array([n[:-4].split("_") for n in names], dtype=np.int64).reshape(-1, 4)
    return names, parts  # columns: pair, pid, view, image index (all 1-based)


def _classic_split(mat_path: str, img_dir: str, data_dir: str, split_id: int) -> ReIDDataset:
    import h5py

    with h5py.File(mat_path, "r") as mat:
        if "testsets" not in mat:
            raise ValueError(f"{mat_path} has no 'testsets' field needed by protocol='classic'")
        test_refs = np.asarray(mat["testsets"]).ravel()
        if not 0 <= split_id < len(test_refs):
            raise ValueError(
                f"split_id must be in 0..{len(test_refs) - 1} for protocol='classic'; received {split_id}"
            )
        test = np.asarray(mat[test_refs[split_id]]).T.astype(np.int64).reshape(-1, 2)
    with open(os.path.join(img_dir, MARKER)) as f:
        pids_per_pair = json.load(f)["pids_per_pair"]
    names, parts = _parse_cache(img_dir)
    offsets = np.concatenate([[0], np.cumsum(pids_per_pair)])
    gids = offsets[parts[:, 0] - 1] + parts[:, 1]
    is_test = np.isin(gids, offsets[test[:, 0] - 1] + test[:, 1])
    samples = [
        Sample(os.path.join(img_dir, n), int(g), int(v) - 1)
        for n, g, v in zip(names, gids, parts[:, 2])
    ]
    train = [s for s, t in zip(samples, is_test) if not t]
    test_samples = [s for s, t in zip(samples, is_test) if t]
    return ReIDDataset("cuhk03", data_dir, relabel(train), test_samples, list(test_samples))


def _new_split(config_path: str, img_dir: str, data_dir: str) -> ReIDDataset:
    from scipy.io import loadmat

    cfg = loadmat(config_path)
    for key in ("train_idx", "query_idx", "gallery_idx", "labels", "filelist"):
        if key not in cfg:
            raise ValueError(f"{config_path} has no {key!r} field; expected a CUHK03-NP protocol config")
    files = np.array([str(np.asarray(x).ravel()[0]) for x in cfg["filelist"].ravel()])
    labels = cfg["labels"].ravel().astype(np.int64)
    existing = set(os.listdir(img_dir))
    missing = [f for f in files if f not in existing]
    if missing:
        raise FileNotFoundError(
            f"{config_path} lists {len(missing)} image(s) absent from {img_dir}, e.g. {missing[0]!r}; "
            f"delete {img_dir} to re-extract from cuhk-03.mat"
        )
    cams = np.array([int(f.split("_")[2]) - 1 for f in files], dtype=np.int64)
    splits = {}
    for key in ("train_idx", "query_idx", "gallery_idx"):
        idx = cfg[key].ravel().astype(np.int64) - 1  # MATLAB indices are 1-based
        if idx.size and (idx.min() < 0 or idx.max() >= len(files)):
            raise ValueError(
                f"{config_path}: {key} holds indices outside 1..{len(files)} "
                f"(min {idx.min() + 1}, max {idx.max() + 1})"
            )
        idx = idx[np.argsort(files[idx], kind="stable")]
        splits[key] = [Sample(os.path.join(img_dir, files[i]), int(labels[i]), int(cams[i])) for i in idx]
    return ReIDDataset(
        "cuhk03", data_dir, relabel(splits["train_idx"]), splits["query_idx"], splits["gallery_idx"]
    )
