"""`python -m tfreid.data.check`: counts, sizes, unreadable and odd files, exit codes."""

import collections
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tfreid.data import build_dataset
from tfreid.data.check import check_dataset, format_report, main, parse_overrides


@pytest.fixture
def problem_root(tmp_path, builders):
    w = builders.write_image
    train, query, gallery = tmp_path / "bounding_box_train", tmp_path / "query", tmp_path / "bounding_box_test"
    w(train / "0002_c1s1_000001_01.jpg", (20, 40))
    w(train / "0002_c2s1_000002_01.jpg", (20, 40))
    w(train / "0005_c3s1_000003_01.png", (20, 40), mode="L")
    w(query / "0001_c1s1_000001_00.jpg", (20, 40))
    w(query / "0003_c2s1_000001_00.png", (20, 40), mode="RGBA")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 20, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=95)
    (query / "0001_c3s1_000002_00.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated
    gallery.mkdir()
    (gallery / "0001_c2s1_000010_01.jpg").write_bytes(np.random.default_rng(1).bytes(500))  # not an image
    w(gallery / "0003_c4s1_000010_01.jpg", (30, 60))
    w(gallery / "0000_c1s1_000011_01.bmp", (20, 40))
    w(gallery / "0004_c5s1_000012_01.jpg", (4, 8))
    w(gallery / "0004_c6s1_000013_01.jpg", (20, 40), fmt="PNG")  # PNG bytes behind a .jpg name
    return tmp_path


def test_check_dataset_report(problem_root):
    report = check_dataset(build_dataset("market1501", str(problem_root)), workers=2)
    assert report.splits["train"] == {"images": 3, "ids": 2, "cams": 3, "per_camera": {0: 1, 1: 1, 2: 1}}
    assert report.splits["query"] == {"images": 3, "ids": 2, "cams": 3, "per_camera": {0: 1, 1: 1, 2: 1}}
    assert report.splits["gallery"] == {"images": 5, "ids": 4, "cams": 5,
                                        "per_camera": {0: 1, 1: 1, 3: 1, 4: 1, 5: 1}}
    assert report.num_files == 11 and not report.ok
    assert [os.path.basename(p) for p, _ in report.unreadable] == [
        "0001_c2s1_000010_01.jpg", "0001_c3s1_000002_00.jpg"]
    assert "UnidentifiedImageError" in report.unreadable[0][1]
    assert "truncated" in report.unreadable[1][1]
    assert report.sizes == collections.Counter({(20, 40): 7, (30, 60): 1, (4, 8): 1})
    assert report.formats == collections.Counter({"JPEG": 5, "PNG": 3, "BMP": 1})
    assert report.modes == collections.Counter({"RGB": 7, "L": 1, "RGBA": 1})
    odd = {os.path.basename(p): reason for p, reason in report.odd}
    assert set(odd) == {"0005_c3s1_000003_01.png", "0003_c2s1_000001_00.png", "0000_c1s1_000011_01.bmp",
                        "0004_c5s1_000012_01.jpg", "0004_c6s1_000013_01.jpg"}
    assert odd["0005_c3s1_000003_01.png"] == "grayscale (mode L)"
    assert odd["0003_c2s1_000001_00.png"].startswith("alpha/transparency (mode RGBA)")
    assert odd["0000_c1s1_000011_01.bmp"] == "BMP file"
    assert odd["0004_c5s1_000012_01.jpg"] == "tiny (4x8 px, side < 16)"
    assert odd["0004_c6s1_000013_01.jpg"] == "PNG data in a .jpg file"
    text = format_report(report, max_list=2)
    assert "... and 3 more" in text and "Result: FAILED (2 unreadable)" in text
    assert "  cam  5: 0 / 0 / 1" in text


def test_main_exit_codes_and_listing(problem_root, tmp_path_factory, builders, capsys):
    code = main(["--dataset", "market1501", "--data-root", str(problem_root), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    for name in ("bounding_box_test/0001_c2s1_000010_01.jpg", "query/0001_c3s1_000002_00.jpg",
                 "bounding_box_train/0005_c3s1_000003_01.png", "query/0003_c2s1_000001_00.png"):
        assert str(problem_root / name) in out
    assert "converts every image to 3-channel RGB" in out and "20 x 40           7" in out

    clean = tmp_path_factory.mktemp("clean")
    for folder, name in (("bounding_box_train", "0002_c1s1_000001_01.jpg"), ("query", "0001_c1s1_000001_00.jpg"),
                         ("bounding_box_test", "0001_c2s1_000001_01.jpg")):
        builders.write_image(clean / folder / name, (32, 64))
    assert main(["--dataset", "market1501", "--data-root", str(clean), "--no-progress"]) == 0
    assert "Result: OK" in capsys.readouterr().out

    # --set reaches the loader: only .jpg files are loaded, the corrupt ones are still found
    code = main(["--dataset", "market1501", "--data-root", str(problem_root), "--no-progress",
                 "--set", "extensions=[jpg]"])
    out = capsys.readouterr().out
    assert code == 1 and "Odd files (2)" in out and ".png" not in out

    assert main(["--dataset", "market1501", "--data-root", str(tmp_path_factory.mktemp("empty"))]) == 2
    assert "bounding_box_train/ under" in capsys.readouterr().err


def test_parse_overrides():
    assert parse_overrides(["labeled=false", "split_id=3", "extensions=[jpg, png]", "protocol=classic"]) == {
        "labeled": False, "split_id": 3, "extensions": ["jpg", "png"], "protocol": "classic"}
    with pytest.raises(ValueError, match="key=value; received 'labeled'"):
        parse_overrides(["labeled"])


def test_module_entry_point(problem_root):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "tfreid.data.check", "--dataset", "market1501",
                           "--data-root", str(problem_root)], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert proc.returncode == 1, proc.stderr
    assert "UNREADABLE files (2)" in proc.stdout
    assert "decoding: 11/11 images (100%)" in proc.stderr and "\r" not in proc.stderr
