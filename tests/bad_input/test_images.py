"""Bad image files: every kind x policy x split gets one clear outcome (never a hang or silence)."""

import os

import pytest

from tests.bad_input.conftest import BAD_KINDS, UNDECODABLE, jpeg_bytes
from tfreid.data import build_dataset
from tfreid.data.pipeline import BadImageError
from tfreid.data.screen import file_problem, screen_dataset

SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def _spoil(market, split, kind, count=1):
    files = sorted((market / SPLIT_DIRS[split]).glob("*.jpg"))[:count]
    for f in files:
        f.write_bytes(BAD_KINDS[kind]())
    return [str(f) for f in files]


@pytest.mark.parametrize("split", list(SPLIT_DIRS))
@pytest.mark.parametrize("kind", list(BAD_KINDS))
@pytest.mark.parametrize("policy", ["error", "skip"])
def test_bad_file_matrix(market, split, kind, policy, capsys):
    [bad] = _spoil(market, split, kind)
    dataset = build_dataset("market1501", str(market))
    if policy == "error":
        with pytest.raises(BadImageError) as info:
            screen_dataset(dataset, "error")
        message = str(info.value)
        assert bad in message and message.startswith(f"{split} image ")
        assert "on_bad_image=skip" in message and "\n" not in message
        return
    kept, skipped = screen_dataset(dataset, "skip", max_bad_fraction=0.1)
    assert skipped == {split: [bad]}
    assert bad not in [s.path for s in getattr(kept, split)]
    assert len(getattr(kept, split)) == len(getattr(dataset, split)) - 1
    assert kept.num_train_pids == dataset.num_train_pids
    out = capsys.readouterr().out
    assert out.startswith(f"warning: skipping 1 unreadable {split} image(s) of 16: {bad}")


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_too_many_or_all_bad_files_stop_with_one_line(market, policy):
    bad = _spoil(market, "train", "empty", count=16)
    dataset = build_dataset("market1501", str(market))
    with pytest.raises(ValueError) as info:
        screen_dataset(dataset, policy, max_bad_fraction=1.0 if policy == "skip" else 0.05)
    assert bad[0] in str(info.value)
    if policy == "skip":  # even with the bound at 100%, an unreadable split is an error
        assert str(info.value).startswith("16 of 16 train images (100.0%) are unreadable")


def test_skip_bound_is_configurable(market):
    _spoil(market, "train", "not_an_image", count=2)  # 2 of 16 = 12.5%
    dataset = build_dataset("market1501", str(market))
    with pytest.raises(ValueError, match=r"2 of 16 train images \(12.5%\).*max_bad_fraction=0.05"):
        screen_dataset(dataset, "skip")
    kept, skipped = screen_dataset(dataset, "skip", max_bad_fraction=0.2)
    assert len(skipped["train"]) == 2 and len(kept.train) == 14


def test_an_identity_losing_every_image_is_relabelled(market):
    for f in sorted((market / "bounding_box_train").glob("0002_*.jpg")):
        f.write_bytes(b"")
    dataset = build_dataset("market1501", str(market))
    kept, _ = screen_dataset(dataset, "skip", max_bad_fraction=0.5)
    assert sorted({s.pid for s in kept.train}) == [0, 1, 2]  # labels stay 0..N-1


def test_file_problem_names_each_kind(tmp_path):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes())
    assert file_problem(str(good)) is None
    assert file_problem(str(tmp_path / "missing.jpg")) == "file not found"
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "link.jpg")
    assert file_problem(str(tmp_path / "link.jpg")) == "file not found (dangling symlink)"
    reasons = {}
    for kind, make in BAD_KINDS.items():
        (tmp_path / kind).write_bytes(make())
        reasons[kind] = file_problem(str(tmp_path / kind))
    assert reasons["empty"] == "empty file (0 bytes)"
    assert reasons["truncated_jpeg"].startswith("truncated JPEG (60 bytes")
    assert reasons["not_an_image"].startswith("not a JPEG/PNG/BMP/GIF image (first bytes b'this is ")
    assert reasons["header_then_garbage"].startswith("truncated JPEG")


def test_all_bad_training_batch_stops_instead_of_spinning(tmp_path):
    """Files that pass the screening but do not decode: skip mode used to drop every batch and
    spin forever at 'Epoch 1'; now the first such batch stops with an error naming a file."""
    from tfreid.data.datasets.base import Sample
    from tfreid.data.pipeline import build_train_dataset, iterate_checked

    samples = []
    for pid in range(2):
        for i in range(2):
            path = tmp_path / f"{pid}_{i}.jpg"
            path.write_bytes(UNDECODABLE)
            samples.append(Sample(str(path), pid, 0))
    assert file_problem(samples[0].path) is None  # the screening cannot see it
    ds = build_train_dataset(samples, (16, 8), p=2, k=2, augment=None, on_bad_image="skip")
    with pytest.raises(BadImageError, match=r"every image of training batch \d+ is unreadable") as info:
        next(iter(iterate_checked(ds)))
    assert info.value.path in {s.path for s in samples}
    assert ds.bad_image_report.count == 4  # and each one is recorded
