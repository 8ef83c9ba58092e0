"""Image paths outside the dataset folder: one rule for every loader; data.check lists bad links."""

import os

import pytest

from tests.bad_input.conftest import jpeg_bytes, make_market
from tfreid.data import build_dataset
from tfreid.data import check as check_cli


def _csv(tmp_path, rel):
    root = tmp_path / "csvset"
    (root / "imgs").mkdir(parents=True)
    for i in range(2):
        (root / "imgs" / f"{i}.jpg").write_bytes(jpeg_bytes(i))
    rows = ["path,pid,camid,split", "imgs/0.jpg,1,0,train", "imgs/1.jpg,1,1,query",
            f"{rel},2,0,train"]
    (root / "dataset.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "secret" / "x.jpg"
    path.parent.mkdir()
    path.write_bytes(jpeg_bytes(9))
    return path


@pytest.mark.parametrize("how", ["csv_dotdot", "csv_absolute", "market_symlink", "csv_symlink"])
def test_paths_outside_the_root_are_rejected_unless_allowed(tmp_path, outside, how):
    if how.startswith("csv"):
        rel = {"csv_dotdot": "../secret/x.jpg", "csv_absolute": str(outside),
               "csv_symlink": "imgs/link.jpg"}[how]
        root = _csv(tmp_path, rel)
        if how == "csv_symlink":
            os.symlink(outside, root / "imgs" / "link.jpg")
        name = "csv"
    else:
        root = make_market(tmp_path / "market", ids=2, per_id=2)
        os.symlink(outside, root / "bounding_box_train" / "0009_c1s1_000001_00.jpg")
        name = "market1501"
    with pytest.raises(ValueError) as info:
        build_dataset(name, str(root))
    message = str(info.value)
    assert f"resolves to {outside}, outside the dataset folder" in message
    assert "allow_outside_root=True" in message
    dataset = build_dataset(name, str(root), allow_outside_root=True)
    assert any(os.path.realpath(s.path) == str(outside) for s in dataset.train)


def test_check_reports_dangling_and_outside_links(tmp_path, outside, capsys):
    root = make_market(tmp_path / "market", ids=2, per_id=2)
    os.symlink(outside, root / "query" / "0001_c2s1_000009_00.jpg")
    os.symlink(tmp_path / "gone.jpg", root / "query" / "0002_c2s1_000009_00.jpg")
    assert check_cli.main(["--dataset", "market1501", "--data-root", str(root),
                           "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "BAD LINKS (2)" in out
    assert f"0001_c2s1_000009_00.jpg: symlink leading outside the dataset folder (-> {outside})" in out
    assert "0002_c2s1_000009_00.jpg: dangling symlink" in out
