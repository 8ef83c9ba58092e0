"""A tiny Market-format dataset and bad image files of every kind, for the bad-input matrix."""

import io
import pathlib

import numpy as np
import pytest
from PIL import Image


def jpeg_bytes(seed: int = 0, size=(8, 16)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


# Every kind of bad file the probe used; all but the last are caught by the up-front screening
# (size, magic bytes, end marker), the last only when TensorFlow decodes it.
BAD_KINDS = {
    "empty": lambda: b"",
    "truncated_jpeg": lambda: jpeg_bytes()[:60],
    "not_an_image": lambda: b"this is a text file, not an image\n",
    "header_then_garbage": lambda: jpeg_bytes()[:20] + b"\x00garbage" * 20,
}
UNDECODABLE = jpeg_bytes()[:30] + b"\x13" * 60 + b"\xff\xd9"  # right markers, corrupt data


def make_market(root: pathlib.Path, ids: int = 4, per_id: int = 4) -> pathlib.Path:
    """Market-1501 folders with `ids` identities x `per_id` JPEGs (2 cameras) per split."""
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for pid in range(1, ids + 1):
            for i in range(per_id):
                name = f"{pid:04d}_c{i % 2 + 1}s1_{i:06d}_00.jpg"
                (root / folder / name).write_bytes(jpeg_bytes(pid * 100 + i))
    return root


@pytest.fixture
def market(tmp_path) -> pathlib.Path:
    return make_market(tmp_path / "market")
