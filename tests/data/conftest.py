"""Builders for small on-disk dataset trees with correctly formed file names (tiny images)."""

import os
import types
import zlib

import h5py
import numpy as np
import pytest
from PIL import Image


def write_image(path, size=(4, 8), mode="RGB", value=None, fmt=None):
    """Write a tiny image (size = W x H) and return its path as str."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    w, h = size
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "CMYK": 4}[mode]
    rng = np.random.default_rng(zlib.crc32(os.path.basename(path).encode()))
    arr = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8) if value is None else value
    img = Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode=mode)
    img.save(path, format=fmt)
    return path


def make_tree(root, folders):
    """`folders`: {relative folder: [file names]}; images for image names, text otherwise."""
    for folder, names in folders.items():
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for name in names:
            path = os.path.join(root, folder, name)
            if name.lower().endswith((".jpg", ".jpeg", ".png", ".bmp")):
                write_image(path)
            else:
                with open(path, "w") as f:
                    f.write("not an image")
    return str(root)


def make_cuhk03_mat(path, pids_per_pair, present, testsets, shape_hw=(6, 4)):
    """Write a MATLAB-v7.3-like cuhk-03.mat (HDF5) with torchreid's structure.

    `present[kind][(pair, pid)]` = list of image indices 0..9 that exist (1-based pair/pid);
    pixel values encode (pair, pid, image index) so extraction can be verified. Returns the
    dict {(kind, pair, pid, img_idx): HxWx3 array}.
    """
    h, w = shape_hw
    images = {}
    with h5py.File(path, "w") as f:
        refs_group = f.create_group("#refs#")
        counter = [0]

        def store(data, empty=False):
            counter[0] += 1
            ds = refs_group.create_dataset(f"r{counter[0]}", data=data)
            if empty:
                ds.attrs["MATLAB_empty"] = np.uint8(1)
            return ds.ref

        for kind in ("labeled", "detected"):
            pair_refs = []
            for pair, num_pids in enumerate(pids_per_pair, 1):
                cell = np.empty((10, num_pids), dtype=h5py.ref_dtype)  # MATLAB num_pids x 10, transposed
                for pid in range(1, num_pids + 1):
                    for idx in range(10):
                        if idx in present[kind].get((pair, pid), []):
                            img = (np.arange(h * w * 3).reshape(h, w, 3) + 7 * pair + 3 * pid + 11 * idx
                                   + (100 if kind == "detected" else 0)) % 256
                            img = img.astype(np.uint8)
                            images[(kind, pair, pid, idx)] = img
                            cell[idx, pid - 1] = store(img.T)
                        else:
                            cell[idx, pid - 1] = store(np.zeros(2, np.uint64), empty=True)
                pair_refs.append(store(cell))
            f.create_dataset(kind, data=np.array([pair_refs], dtype=h5py.ref_dtype))  # (1, pairs)
        test_refs = [store(np.asarray(t, dtype=np.float64).T) for t in testsets]  # (k, 2) -> (2, k)
        f.create_dataset("testsets", data=np.array([test_refs], dtype=h5py.ref_dtype))
    return images


@pytest.fixture
def builders():
    """Access to the tree builders from tests (conftest modules cannot be imported by name)."""
    return types.SimpleNamespace(
        write_image=write_image, make_tree=make_tree, make_cuhk03_mat=make_cuhk03_mat
    )
