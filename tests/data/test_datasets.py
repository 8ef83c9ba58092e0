"""Dataset loaders: exact samples on hand-made trees, the real Market-1501 subset, error cases."""

import os

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from tfreid.data import available_datasets, build_dataset


def triples(samples):
    """(file name, pid, camid) per sample, in order."""
    return [(os.path.basename(s.path), s.pid, s.camid) for s in samples]


# --------------------------------------------------------------------------- Market-1501

MARKET_FILES = {
    "bounding_box_train": ["0007_c6s2_000100_01.jpg", "0002_c2s1_000200_01.jpg",
                           "0002_c1s1_000451_03.jpg", "Thumbs.db", "0009_c3s1_000001_00.png"],
    "query": ["0003_c4s1_000001_00.jpg", "0001_c1s1_001051_00.jpg"],
    "bounding_box_test": ["0001_c2s1_000100_01.jpg", "0000_c3s1_000200_02.jpg",
                          "-1_c1s1_000300_03.jpg", "0003_c5s1_000100_01.jpg", "readme.txt"],
}


def test_real_market_subset_counts(real_market_root):
    ds = build_dataset("market1501", str(real_market_root))
    assert (len(ds.train), ds.num_train_pids) == (4542, 251)
    assert (len(ds.query), len({s.pid for s in ds.query})) == (1127, 250)
    assert len(ds.gallery) == 6603 - 1273 == 5330
    assert sum(s.pid == 0 for s in ds.gallery) == 933
    assert all(s.pid != -1 for s in ds.gallery)
    assert sorted({s.pid for s in ds.train}) == list(range(251))
    assert {s.camid for s in ds.train + ds.query + ds.gallery} == set(range(6))
    assert ds.train[0] == (str(real_market_root / "bounding_box_train" / "0002_c1s1_000451_03.jpg"), 0, 0)
    assert ds.query[0].pid == 1 and ds.query[0].camid == 0


def test_market_exact_samples(tmp_path, builders):
    root = builders.make_tree(tmp_path, MARKET_FILES)
    ds = build_dataset("market1501", root)
    assert triples(ds.train) == [("0002_c1s1_000451_03.jpg", 0, 0), ("0002_c2s1_000200_01.jpg", 0, 1),
                                 ("0007_c6s2_000100_01.jpg", 1, 5), ("0009_c3s1_000001_00.png", 2, 2)]
    assert triples(ds.query) == [("0001_c1s1_001051_00.jpg", 1, 0), ("0003_c4s1_000001_00.jpg", 3, 3)]
    # junk -1 dropped, distractor 0 kept, non-images ignored
    assert triples(ds.gallery) == [("0000_c3s1_000200_02.jpg", 0, 2), ("0001_c2s1_000100_01.jpg", 1, 1),
                                   ("0003_c5s1_000100_01.jpg", 3, 4)]
    assert ds.gallery[0].path == os.path.join(root, "bounding_box_test", "0000_c3s1_000200_02.jpg")
    assert os.path.isabs(ds.train[0].path) and ds.num_train_pids == 3
    jpg_only = build_dataset("market1501", root, extensions=("jpg",))
    assert [s.pid for s in jpg_only.train] == [0, 0, 1]


def test_market_download_layout(tmp_path, builders):
    builders.make_tree(tmp_path / "Market-1501-v15.09.15", MARKET_FILES)
    ds = build_dataset("market1501", str(tmp_path))
    assert ds.root == str(tmp_path / "Market-1501-v15.09.15")
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (4, 2, 3)


@pytest.mark.parametrize("name", ["market1501", "dukemtmcreid", "cuhk03", "msmt17", "csv", "folder"])
def test_root_none_and_missing_root(name, tmp_path):
    assert {"market1501", "dukemtmcreid", "cuhk03", "msmt17", "csv", "folder"} <= set(available_datasets())
    with pytest.raises(ValueError, match="--data-root"):
        build_dataset(name)
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        build_dataset(name, str(tmp_path / "does_not_exist"))


def test_market_wrong_layout(tmp_path, builders):
    with pytest.raises(FileNotFoundError, match=r"bounding_box_train/ under .*Market-1501 layout"):
        build_dataset("market1501", str(tmp_path))
    builders.make_tree(tmp_path, {"bounding_box_train": ["0002_c1s1_000451_03.jpg"], "query": []})
    with pytest.raises(FileNotFoundError, match="bounding_box_test/"):
        build_dataset("market1501", str(tmp_path))


@pytest.mark.parametrize("bad", ["img_0001.jpg", "0002_c0s1_000451_03.jpg"])
def test_market_bad_file_name(tmp_path, builders, bad):
    files = dict(MARKET_FILES, bounding_box_train=["0002_c1s1_000451_03.jpg", bad])
    builders.make_tree(tmp_path, files)
    with pytest.raises(ValueError, match=bad.replace(".", r"\.") + r"'?.*expected .*<pid>_c<camera>"):
        build_dataset("market1501", str(tmp_path))


# --------------------------------------------------------------------------- DukeMTMC-reID

def test_duke_exact_samples(tmp_path, builders):
    builders.make_tree(tmp_path / "DukeMTMC-reID", {
        "bounding_box_train": ["0012_c1_f0000002.jpg", "0005_c8_f0000001.jpg", "0005_c2_f0046985.jpg"],
        "query": ["0020_c3_f0000003.jpg"],
        "bounding_box_test": ["0021_c4_f0000005.jpg", "0020_c7_f0000004.jpg"],
    })
    ds = build_dataset("dukemtmcreid", str(tmp_path))
    assert triples(ds.train) == [("0005_c2_f0046985.jpg", 0, 1), ("0005_c8_f0000001.jpg", 0, 7),
                                 ("0012_c1_f0000002.jpg", 1, 0)]
    assert triples(ds.query) == [("0020_c3_f0000003.jpg", 20, 2)]
    assert triples(ds.gallery) == [("0020_c7_f0000004.jpg", 20, 6), ("0021_c4_f0000005.jpg", 21, 3)]
    with pytest.raises(FileNotFoundError, match="DukeMTMC-reID layout"):
        build_dataset("dukemtmcreid", str(tmp_path / "DukeMTMC-reID" / "query"))


# --------------------------------------------------------------------------- CUHK03

def test_cuhk03_np_folders(tmp_path, builders):
    builders.make_tree(tmp_path / "cuhk03-np" / "labeled", {
        "bounding_box_train": ["0004_c1_2.png", "0001_c2_6.png", "0001_c1_1.png"],
        "query": ["0010_c1_1.png"], "bounding_box_test": ["0010_c2_6.png", "0011_c2_7.png"]})
    builders.make_tree(tmp_path / "cuhk03-np" / "detected", {
        "bounding_box_train": ["0002_c1_01.png"], "query": ["0010_c2_06.png"],
        "bounding_box_test": ["0010_c1_01.png"]})
    lab = build_dataset("cuhk03", str(tmp_path))
    assert triples(lab.train) == [("0001_c1_1.png", 0, 0), ("0001_c2_6.png", 0, 1), ("0004_c1_2.png", 1, 0)]
    assert triples(lab.query) == [("0010_c1_1.png", 10, 0)]
    assert triples(lab.gallery) == [("0010_c2_6.png", 10, 1), ("0011_c2_7.png", 11, 1)]
    det = build_dataset("cuhk03", str(tmp_path), labeled=False)
    assert triples(det.train) == [("0002_c1_01.png", 0, 0)]
    assert triples(det.query) == [("0010_c2_06.png", 10, 1)]


PIDS_PER_PAIR = [3, 2, 2]
PRESENT = {
    "labeled": {(1, 1): [0, 1, 5], (1, 2): [0, 6], (1, 3): [2, 7], (2, 1): [0, 5], (2, 2): [1, 9],
                (3, 1): [0, 5], (3, 2): [3, 8]},
    "detected": {(1, 1): [0, 5], (1, 2): [0, 5], (1, 3): [0, 5], (2, 1): [0, 5], (2, 2): [0, 5],
                 (3, 1): [0, 5], (3, 2): [4]},
}
TESTSETS = [[[1, 2], [3, 1]], [[2, 2], [1, 1]]]
LABELED_FILES = ["1_001_1_01.png", "1_001_1_02.png", "1_001_2_06.png", "1_002_1_01.png", "1_002_2_07.png",
                 "1_003_1_03.png", "1_003_2_08.png", "2_001_1_01.png", "2_001_2_06.png", "2_002_1_02.png",
                 "2_002_2_10.png", "3_001_1_01.png", "3_001_2_06.png", "3_002_1_04.png", "3_002_2_09.png"]


@pytest.fixture
def cuhk03_mat_root(tmp_path, builders):
    os.makedirs(tmp_path / "cuhk03_release")
    images = builders.make_cuhk03_mat(tmp_path / "cuhk03_release" / "cuhk-03.mat", PIDS_PER_PAIR, PRESENT, TESTSETS)
    col = lambda xs: np.asarray(xs, dtype=np.float64).reshape(-1, 1)  # noqa: E731
    savemat(tmp_path / "cuhk03_new_protocol_config_labeled.mat", {
        "filelist": np.array(LABELED_FILES, dtype=object).reshape(-1, 1),
        "labels": col([10, 10, 10, 20, 20, 30, 30, 40, 40, 50, 50, 60, 60, 70, 70]),
        "train_idx": col([7, 1, 2, 3, 6]), "query_idx": col([14, 8]), "gallery_idx": col([9, 15, 10, 11]),
    })
    return tmp_path, images


def test_cuhk03_mat_classic_labeled(cuhk03_mat_root):
    root, images = cuhk03_mat_root
    ds = build_dataset("cuhk03", str(root), protocol="classic", split_id=0)
    # test ids (pair 1, pid 2) and (pair 3, pid 1) -> global ids 2 and 3 + 2 + 1 = 6, camid = view - 1
    expected_test = [("1_002_1_01.png", 2, 0), ("1_002_2_07.png", 2, 1), ("3_001_1_01.png", 6, 0),
                     ("3_001_2_06.png", 6, 1)]
    assert triples(ds.query) == triples(ds.gallery) == expected_test
    assert triples(ds.train) == [
        ("1_001_1_01.png", 0, 0), ("1_001_1_02.png", 0, 0), ("1_001_2_06.png", 0, 1),
        ("1_003_1_03.png", 1, 0), ("1_003_2_08.png", 1, 1), ("2_001_1_01.png", 2, 0),
        ("2_001_2_06.png", 2, 1), ("2_002_1_02.png", 3, 0), ("2_002_2_10.png", 3, 1),
        ("3_002_1_04.png", 4, 0), ("3_002_2_09.png", 4, 1)]
    # the extracted PNG holds the original H x W x 3 pixels (HDF5 stores them transposed)
    png = np.asarray(Image.open(root / "images_labeled" / "1_002_2_07.png"))
    np.testing.assert_array_equal(png, images[("labeled", 1, 2, 6)])
    assert png.shape == (6, 4, 3)


def test_cuhk03_mat_classic_detected_split1(cuhk03_mat_root):
    root, images = cuhk03_mat_root
    ds = build_dataset("cuhk03", str(root), labeled=False, protocol="classic", split_id=1,
                       cache_dir=str(root / "cache"))
    assert triples(ds.query) == [("1_001_1_01.png", 1, 0), ("1_001_2_06.png", 1, 1),
                                 ("2_002_1_01.png", 5, 0), ("2_002_2_06.png", 5, 1)]
    assert len(ds.train) == 9 and ds.num_train_pids == 5
    assert [s.pid for s in ds.train] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert os.path.dirname(ds.train[0].path) == str(root / "cache" / "images_detected")
    png = np.asarray(Image.open(root / "cache" / "images_detected" / "3_002_1_05.png"))
    np.testing.assert_array_equal(png, images[("detected", 3, 2, 4)])
    with pytest.raises(ValueError, match="split_id must be in 0..1"):
        build_dataset("cuhk03", str(root), protocol="classic", split_id=2)


def test_cuhk03_mat_new_protocol_and_cache(cuhk03_mat_root):
    root, _ = cuhk03_mat_root
    ds = build_dataset("cuhk03", str(root), labeled=True, protocol="new")
    assert triples(ds.train) == [("1_001_1_01.png", 0, 0), ("1_001_1_02.png", 0, 0), ("1_001_2_06.png", 0, 1),
                                 ("1_003_1_03.png", 1, 0), ("1_003_2_08.png", 1, 1)]
    assert triples(ds.query) == [("2_001_1_01.png", 40, 0), ("3_002_1_04.png", 70, 0)]
    assert triples(ds.gallery) == [("2_001_2_06.png", 40, 1), ("2_002_1_02.png", 50, 0),
                                   ("2_002_2_10.png", 50, 1), ("3_002_2_09.png", 70, 1)]
    assert sorted(f for f in os.listdir(root / "images_labeled") if f.endswith(".png")) == LABELED_FILES
    # A second load reuses the cache: a file changed on disk is not re-extracted.
    marked = root / "images_labeled" / "1_001_1_01.png"
    Image.fromarray(np.zeros((6, 4, 3), np.uint8)).save(marked)
    build_dataset("cuhk03", str(root), labeled=True, protocol="new")
    assert np.asarray(Image.open(marked)).max() == 0
    with pytest.raises(ValueError, match="split_id must be 0"):
        build_dataset("cuhk03", str(root), split_id=3)
    with pytest.raises(ValueError, match="protocol must be"):
        build_dataset("cuhk03", str(root), protocol="old")
    with pytest.raises(FileNotFoundError, match="cuhk03_new_protocol_config_detected.mat"):
        build_dataset("cuhk03", str(root), labeled=False)


def test_cuhk03_wrong_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cuhk-03\.mat.*CUHK03 layout"):
        build_dataset("cuhk03", str(tmp_path))


# --------------------------------------------------------------------------- MSMT17

def make_msmt(root, builders, train_dir="train", test_dir="test", query_lines=None):
    files = {
        "train": ["0008/0008_000_15_0304morning_0100_0.jpg 8", "0003/0003_000_01_0303morning_0015_0.jpg 3",
                  "0003/0003_001_05_0303noon_0020_1.jpg 3"],
        "val": ["0005/0005_000_03_0305morning_0001_0.jpg 5"],
        "query": ["0000/0000_000_02_0303morning_0001_0.jpg 0"],
        "gallery": ["0005/0005_000_11_0303noon_0002_0.jpg 5", "0000/0000_001_07_0303noon_0001_0.jpg 0"],
    }
    for split, lines in files.items():
        folder = train_dir if split in ("train", "val") else test_dir
        for line in lines:
            builders.write_image(root / folder / line.split()[0])
    if query_lines is not None:
        files["query"] = query_lines
    for split, lines in files.items():
        (root / f"list_{split}.txt").write_text("\n".join(lines) + "\n")


def test_msmt17_exact_samples(tmp_path, builders):
    make_msmt(tmp_path / "MSMT17_V1", builders)
    ds = build_dataset("msmt17", str(tmp_path))
    assert triples(ds.train) == [("0003_000_01_0303morning_0015_0.jpg", 0, 0),
                                 ("0003_001_05_0303noon_0020_1.jpg", 0, 4),
                                 ("0008_000_15_0304morning_0100_0.jpg", 1, 14)]
    assert ds.train[0].path == str(tmp_path / "MSMT17_V1" / "train" / "0003" / "0003_000_01_0303morning_0015_0.jpg")
    assert triples(ds.query) == [("0000_000_02_0303morning_0001_0.jpg", 0, 1)]
    assert triples(ds.gallery) == [("0000_001_07_0303noon_0001_0.jpg", 0, 6),
                                   ("0005_000_11_0303noon_0002_0.jpg", 5, 10)]
    combined = build_dataset("msmt17", str(tmp_path), combine_val=True)
    assert [(s.pid, s.camid) for s in combined.train] == [(0, 0), (0, 4), (1, 2), (2, 14)]


def test_msmt17_v2_folders(tmp_path, builders):
    make_msmt(tmp_path / "MSMT17_V2", builders, "mask_train_v2", "mask_test_v2")
    ds = build_dataset("msmt17", str(tmp_path / "MSMT17_V2"))
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (3, 1, 2)
    assert "mask_test_v2" in ds.query[0].path


@pytest.mark.parametrize("line, error, pattern", [
    ("../../outside.jpg 0", ValueError, r"list_query\.txt, line 2: path '\.\./\.\./outside\.jpg' escapes"),
    ("/tmp/abs_0000_000_02_x_0001_0.jpg 0", ValueError, r"list_query\.txt, line 2: path '/tmp/abs.*escapes"),
    ("0000/0000_009_02_0303morning_0001_0.jpg 0", FileNotFoundError, r"list_query\.txt, line 2: listed image"),
    ("0000/badname.jpg 0", ValueError, r"list_query\.txt, line 2: cannot read the camera"),
    ("0000/0000_000_02_0303morning_0001_0.jpg", ValueError, r"list_query\.txt, line 2: expected"),
])
def test_msmt17_bad_lists(tmp_path, builders, line, error, pattern):
    builders.write_image(tmp_path / "outside.jpg")  # exists, but outside the dataset folder
    root = tmp_path / "ds" / "MSMT17_V1"
    builders.write_image(root / "test" / "0000" / "badname.jpg")
    make_msmt(root, builders, query_lines=["0000/0000_000_02_0303morning_0001_0.jpg 0", line])
    with pytest.raises(error, match=pattern):
        build_dataset("msmt17", str(tmp_path / "ds"))


def test_msmt17_wrong_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"list_train\.txt under .*MSMT17 layout"):
        build_dataset("msmt17", str(tmp_path))


# --------------------------------------------------------------------------- csv / folder

def test_csv(tmp_path, builders):
    mine = tmp_path / "mine"
    for n in "abdef":
        builders.write_image(mine / "imgs" / f"{n}.jpg")
    other = builders.write_image(tmp_path / "other" / "c.jpg")
    (mine / "dataset.csv").write_text(
        "path,pid,camid,split\nimgs/b.jpg,7,1,train\nimgs/a.jpg,4,0,train\n"
        f"{other},10,2,query\nimgs/d.jpg,10,0,gallery\nimgs/e.jpg,-1,0,gallery\nimgs/f.jpg,0,3,gallery\n")
    with pytest.raises(ValueError, match="outside the dataset folder"):  # absolute path elsewhere
        build_dataset("csv", str(mine))
    for root in (mine, mine / "dataset.csv"):
        ds = build_dataset("csv", str(root), allow_outside_root=True)
        assert triples(ds.train) == [("a.jpg", 0, 0), ("b.jpg", 1, 1)]
        assert ds.query == [(other, 10, 2)]
        assert triples(ds.gallery) == [("d.jpg", 10, 0), ("f.jpg", 0, 3)]
        assert ds.gallery[0].path == str(mine / "imgs" / "d.jpg")


@pytest.mark.parametrize("body, error, pattern", [
    ("path,pid,split\nimgs/a.jpg,1,train\n", ValueError, r"missing column\(s\) \['camid'\]"),
    ("path,pid,camid,split\nimgs/a.jpg,1,0,train\nimgs/a.jpg,1,0,test\n", ValueError, r"line 3: split must be"),
    ("path,pid,camid,split\nimgs/zz.jpg,1,0,train\n", FileNotFoundError, r"line 2: image .*zz\.jpg does not exist"),
    ("path,pid,camid,split\nimgs/a.jpg,x1,0,train\n", ValueError, r"line 2: pid must be an integer; received 'x1'"),
])
def test_csv_errors(tmp_path, builders, body, error, pattern):
    builders.write_image(tmp_path / "imgs" / "a.jpg")
    (tmp_path / "dataset.csv").write_text(body)
    with pytest.raises(error, match=pattern):
        build_dataset("csv", str(tmp_path))


def test_folder_integer_ids(tmp_path, builders):
    builders.make_tree(tmp_path, {
        "train/0011": ["0011_c4_000.jpg", "Thumbs.db"], "train/0003": ["c2_0002.jpg", "c1_0001.jpg"],
        "query/0003": ["c5_q.jpg"], "gallery/0003": ["c6_g.jpg"], "gallery/0000": ["c1_d.jpg"],
        "gallery/-1": ["c1_j.jpg"]})
    ds = build_dataset("folder", str(tmp_path))
    assert triples(ds.train) == [("c1_0001.jpg", 0, 0), ("c2_0002.jpg", 0, 1), ("0011_c4_000.jpg", 1, 3)]
    assert triples(ds.query) == [("c5_q.jpg", 3, 4)]
    assert triples(ds.gallery) == [("c1_d.jpg", 0, 0), ("c6_g.jpg", 3, 5)]


def test_folder_string_ids_and_camera_regex(tmp_path, builders):
    builders.make_tree(tmp_path, {
        "train/bob": ["c2_b.jpg"], "train/alice": ["c1_a.jpg", "photo.jpg"], "query/carol": ["c1_q.jpg"],
        "gallery/alice": ["c3_g.jpg"], "gallery/carol": ["c2_g.jpg"]})
    with pytest.raises(ValueError, match=r"alice/photo\.jpg.*camera_regex 'c\(\\\\d\+\)' does not match"):
        build_dataset("folder", str(tmp_path))
    ds = build_dataset("folder", str(tmp_path), default_camid=2)
    assert triples(ds.train) == [("c1_a.jpg", 0, 0), ("photo.jpg", 0, 2), ("c2_b.jpg", 1, 1)]
    assert triples(ds.query) == [("c1_q.jpg", 3, 0)]  # alice=1, bob=2, carol=3 over all splits
    assert triples(ds.gallery) == [("c3_g.jpg", 1, 2), ("c2_g.jpg", 3, 1)]
    cam_first = build_dataset("folder", str(tmp_path), camera_regex=r"^c(\d+)_[a-z]\.jpg$", default_camid=5)
    assert [s.camid for s in cam_first.train] == [0, 5, 1]


def test_folder_wrong_layout(tmp_path, builders):
    builders.make_tree(tmp_path, {"train/0001": ["c1_a.jpg"], "query/0002": ["c1_b.jpg"]})
    with pytest.raises(FileNotFoundError, match=r"expected gallery/ under .*folder layout"):
        build_dataset("folder", str(tmp_path))
    builders.make_tree(tmp_path, {"gallery": ["c1_stray.jpg"]})
    with pytest.raises(ValueError, match=r"c1_stray\.jpg is not inside an identity folder"):
        build_dataset("folder", str(tmp_path))
