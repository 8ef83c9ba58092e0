"""Tests of the synthetic ReID generator (`tfreid.data.synthetic`) and the "synthetic" dataset."""

import collections
import csv
import itertools
import json
import re

import numpy as np
import pytest
from PIL import Image

from tfreid.data import available_datasets, build_dataset
from tfreid.data.synthetic import Difficulty, SyntheticConfig, generate
from tfreid.data.synthetic.__main__ import main as cli_main
from tfreid.data.synthetic import person as person_mod
from tfreid.data.synthetic.identity import identity_rng, sample_identity
from tfreid.data.synthetic.scene import render_image

# Written out independently of the generator: pid (4 digits or -1), c<cam>s<seq>, 6-digit
# frame, 2-digit box index.
NAME = re.compile(r"^(-1|\d{4})_c([1-9])s([1-9])_(\d{6})_(\d{2})\.jpg$")
PREFIX = re.compile(r"([-\d]+)_c(\d)")  # the minimal Market parse
SMALL = dict(train_ids=6, test_ids=4, cameras=3, images_per_id=6, distractors=5, junk=5, seed=0)
SPLITS = ("bounding_box_train", "query", "bounding_box_test")


def _config(**overrides):
    return SyntheticConfig(**{**SMALL, **overrides})


def _files(root):
    """{split: [(name, pid, cam)]} parsed with the minimal Market regex."""
    out = {}
    for split in SPLITS:
        out[split] = []
        for path in sorted((root / split).iterdir()):
            m = PREFIX.match(path.name)
            out[split].append((path.name, int(m.group(1)), int(m.group(2))))
    return out


def _all_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "set"
    generate(root, _config(), workers=1, verbose=False)
    return root


def test_folder_and_file_name_format(small_set):
    assert sorted(p.name for p in small_set.iterdir()) == sorted(
        [".synthetic_complete", "boxes.csv", "synthetic.json", *SPLITS])
    for split in SPLITS:
        names = [p.name for p in (small_set / split).iterdir()]
        assert names, split
        bad = [n for n in names if not NAME.match(n)]
        assert not bad, bad[:5]
        if split == "query":  # Market query boxes are hand-drawn: box index 00
            assert all(n.endswith("_00.jpg") for n in names)
    img = Image.open(next((small_set / "query").iterdir()))
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (64, 128)


def test_counts_ids_and_cameras_as_requested(small_set):
    files = _files(small_set)
    train_ids = collections.Counter(pid for _, pid, _ in files["bounding_box_train"])
    assert len(train_ids) == 6 and set(train_ids.values()) == {6}  # images_per_id each
    gallery = collections.Counter(pid for _, pid, _ in files["bounding_box_test"])
    test_ids = {pid for _, pid, _ in files["query"]}
    assert len(test_ids) == 4 and test_ids == set(gallery) - {0, -1}
    assert all(gallery[pid] == 6 for pid in test_ids)
    assert gallery[0] == 5 and gallery[-1] == 5
    cams = {cam for split in files.values() for _, _, cam in split}
    assert cams <= {1, 2, 3} and len(cams) == 3
    params = json.loads((small_set / "synthetic.json").read_text())
    assert params["params"]["train_ids"] == 6 and params["params"]["seed"] == 0
    assert params["counts"] == {s: len(files[s]) for s in SPLITS}
    # synthetic.json holds everything needed to regenerate the same set.
    assert SyntheticConfig.from_dict(params["params"]) == _config()
    assert params["hash"] == _config().short_hash()
    # One query per (test id, camera), and only for some of each id's cameras (<= its cameras).
    q_pairs = [(pid, cam) for _, pid, cam in files["query"]]
    assert len(q_pairs) == len(set(q_pairs))


def test_train_and_test_ids_disjoint(small_set):
    files = _files(small_set)
    train = {pid for _, pid, _ in files["bounding_box_train"]}
    test = {pid for split in ("query", "bounding_box_test") for _, pid, _ in files[split]}
    assert not train & test
    assert min(train) > 0


def test_junk_and_distractors_only_in_gallery(small_set):
    files = _files(small_set)
    for split in ("bounding_box_train", "query"):
        assert all(pid > 0 for _, pid, _ in files[split]), split
    names = [n for n, _, _ in files["bounding_box_test"]]
    assert any(n.startswith("-1_c") for n in names) and any(n.startswith("0000_c") for n in names)


def test_every_query_has_cross_camera_gallery_match(small_set):
    files = _files(small_set)
    gallery = {(pid, cam) for _, pid, cam in files["bounding_box_test"]}
    for name, pid, cam in files["query"]:
        assert any(p == pid and c != cam for p, c in gallery), name


def test_boxes_csv_one_row_per_image_inside_the_crop(small_set):
    with open(small_set / "boxes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["filename", "x0", "y0", "x1", "y1"]
    on_disk = {f"{s}/{p.name}" for s in SPLITS for p in (small_set / s).iterdir()}
    assert len(rows) == len(on_disk) and {r["filename"] for r in rows} == on_disk
    heights = []
    for r in rows:
        x0, y0, x1, y1 = (int(r[k]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 128, r
        if not r["filename"].split("/")[1].startswith("-1_"):
            heights.append(y1 - y0)
    # Real people, not slivers: most boxes span well over half the crop height.
    assert np.median(heights) > 0.7 * 128


def test_box_matches_the_rendered_person():
    # Independent check: with a flat, noise-free scene (texture 0, no clutter/occluders) the
    # background is constant along each row, so pixels that differ from their row's edge colour
    # are the person, and the box must enclose them.
    d = Difficulty.from_level(0.0, clutter=0.0, occlusion=0.0, texture=0.0, noise=0.0)
    for pid, cam in ((7, 1), (8, 2), (9, 3)):
        img, _, (x0, y0, x1, y1) = render_image(0, pid, cam, 0, d)
        img = img.astype(np.float32)
        row_bg = np.concatenate([img[:, :2], img[:, -2:]], axis=1).mean(axis=1, keepdims=True)
        ys, xs = np.nonzero(np.abs(img - row_bg).sum(-1) > 40)
        assert len(ys) > 500  # a person was drawn
        inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        assert inside.mean() > 0.97, (pid, cam)
        # ...and is tight: the detected person spans (almost) the whole box.
        assert xs.min() - x0 <= 3 and x1 - 1 - xs.max() <= 3 and ys.max() >= y1 - 4


def test_deterministic_per_seed_and_independent_of_workers(small_set, tmp_path):
    again = tmp_path / "again"
    # 2 processes and small chunks: a different rendering order, the same bytes.
    generate(again, _config(), workers=2, verbose=False)
    a, b = _all_bytes(small_set), _all_bytes(again)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_other_seed_differs_and_cli_refuses_foreign_folder(small_set, tmp_path, capsys):
    out = tmp_path / "foreign"
    out.mkdir()
    (out / "notes.txt").write_text("not a dataset")
    args = ["--out", str(out), "--train-ids", "6", "--test-ids", "4", "--cameras", "3",
            "--images-per-id", "6", "--distractors", "5", "--junk", "5", "--quiet"]
    with pytest.raises(SystemExit) as exc:
        cli_main(args + ["--seed", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not a synthetic ReID set" in err and str(out) in err and "--overwrite" in err
    assert cli_main(args + ["--seed", "1", "--overwrite", "--workers", "1"]) == 0
    assert (out / "notes.txt").exists()  # only our own outputs are replaced
    a = {p.name: p.read_bytes() for s in SPLITS for p in (small_set / s).iterdir()}
    b = {p.name: p.read_bytes() for s in SPLITS for p in (out / s).iterdir()}
    # Another seed: other ids, file names and pixels (no file identical to the seed-0 one).
    assert set(a) != set(b)
    assert not set(a.values()) & set(b.values())


def test_images_of_one_identity_differ(small_set):
    files = _files(small_set)
    by_pid = collections.defaultdict(list)
    for name, pid, _ in files["bounding_box_train"]:
        by_pid[pid].append(np.asarray(Image.open(small_set / "bounding_box_train" / name), np.float32))
    for pid, imgs in by_pid.items():
        for x, y in itertools.combinations(imgs, 2):
            assert np.abs(x - y).mean() > 8.0, pid  # 0-255 scale: visibly different crops


def test_identity_is_recognisable_across_cameras():
    # At the easiest level, raw-pixel nearest neighbours across cameras find the same person far
    # more often than chance (1/8): the set carries identity, not just camera, information.
    d = Difficulty.from_level(0.0)
    feats, pids, cams = [], [], []
    for pid, cam, idx in itertools.product(range(1, 9), (1, 2, 3), (0, 1)):
        img = render_image(3, pid, cam, idx, d)[0].astype(np.float32)
        f = img.reshape(16, 8, 8, 8, 3).mean((1, 3)).ravel()
        feats.append(f / np.linalg.norm(f))
        pids.append(pid)
        cams.append(cam)
    feats, pids, cams = np.array(feats), np.array(pids), np.array(cams)
    dist = ((feats[:, None] - feats[None]) ** 2).sum(-1)
    dist[cams[:, None] == cams[None, :]] = np.inf  # cross-camera matching only
    hits = (pids[dist.argmin(1)] == pids).mean()
    assert hits > 0.4


def test_view_dependent_parts():
    p = sample_identity(identity_rng(0, 1), 16, 10.0)
    p = p.__class__(**{**p.__dict__, "upper_pattern": "logo", "bag": "backpack"})

    def area(view, label):
        lab = person_mod.draw_labels(p, view, 0.3, 32.0, 5.0, 115.0, (128, 64), 2)
        return int((lab == label).sum())

    assert area("front", person_mod.LOGO) > 50 and area("back", person_mod.LOGO) == 0
    assert area("left", person_mod.LOGO) == 0
    # A backpack is a block from the back, only straps from the front.
    assert area("back", person_mod.BAG) > 3 * area("front", person_mod.BAG) > 0
    # The face shows from the front, not from the back.
    assert area("front", person_mod.SKIN) > area("back", person_mod.SKIN)


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"cameras.*cross-camera.*got 1"):
        SyntheticConfig(cameras=1)
    with pytest.raises(ValueError, match=r"images_per_id.*got 1"):
        SyntheticConfig(images_per_id=1)
    with pytest.raises(ValueError, match=r"unknown difficulty knob.*'fog'"):
        Difficulty.from_level(0.5, fog=1.0)
    with pytest.raises(ValueError, match=r"difficulty must lie in \[0, 1\]; got 1.5"):
        Difficulty.from_level(1.5)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is an existing file"):
        generate(a_file, _config(), workers=1, verbose=False)
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['colour'\]"):
        build_dataset("synthetic", tmp_path / "x", colour=1)


@pytest.mark.skipif("market1501" not in available_datasets(), reason="market1501 loader absent")
def test_market1501_loader_reads_the_set(small_set):
    files = _files(small_set)
    ds = build_dataset("market1501", str(small_set))
    assert len(ds.train) == 36 and ds.num_train_pids == 6
    assert {s.pid for s in ds.train} == set(range(6))
    assert len(ds.query) == len(files["query"])
    assert len(ds.gallery) == len(files["bounding_box_test"]) - 5  # junk dropped
    assert {s.camid for s in ds.gallery} <= {0, 1, 2}


def test_registered_dataset_caches_and_redoes_interrupted_generation(tmp_path, monkeypatch):
    monkeypatch.setenv("TFREID_CACHE", str(tmp_path / "cache"))
    kw = dict(SMALL, workers=1, verbose=False)
    ds = build_dataset("synthetic", **kw)
    folders = list((tmp_path / "cache").iterdir())
    assert len(folders) == 1 and re.fullmatch(r"synthetic-v1-[0-9a-f]{10}", folders[0].name)
    root = folders[0]
    assert ds.name == "synthetic" and ds.num_train_pids == 6 and len(ds.train) == 36
    marker = root / ".synthetic_complete"
    stamp = marker.stat().st_mtime_ns
    build_dataset("synthetic", **kw)  # complete: read, not regenerated
    assert marker.stat().st_mtime_ns == stamp
    # Simulate an interruption: marker gone and a file missing -> regenerated on the next call.
    marker.unlink()
    victim = next((root / "query").iterdir())
    victim.unlink()
    ds2 = build_dataset("synthetic", **kw)
    assert victim.exists() and marker.exists() and len(ds2.query) == len(ds.query)
    # Other parameters -> another cache folder.
    build_dataset("synthetic", **{**kw, "seed": 5})
    assert len(list((tmp_path / "cache").iterdir())) == 2
