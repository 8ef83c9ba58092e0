"""on_bad_image=skip end to end: skipped training images are reported (stdout, scalar, run
directory) and evaluate's --on-bad-image flag picks the policy."""

import json

import pytest

from tests.bad_input.conftest import UNDECODABLE
from tfreid import evaluate, train
from tfreid.runs import RunDir

TINY = ["--set", "model.kwargs={widths: [16, 16, 16], feature_dim: 8}", "--set", "data.p=2",
        "--set", "data.k=2", "--set", "train.log_every=1", "--set", "train.eval_at_start=false",
        "--set", "data.eval_batch_size=16", "--no-export"]


@pytest.mark.slow
def test_skipped_images_are_reported_in_training_and_evaluation(tmp_path, market, capsys,
                                                                monkeypatch):
    monkeypatch.delenv("TFREID_DEBUG", raising=False)
    train_files = sorted((market / "bounding_box_train").glob("*.jpg"))
    train_files[0].write_bytes(b"")  # found by the up-front screening
    train_files[5].write_bytes(UNDECODABLE)  # found only when TensorFlow decodes it
    run = tmp_path / "run"
    argv = ["--model", "hacnn", "--dataset", "market1501", "--data-root", str(market),
            "--output", str(run), "--max-steps", "6", "--set", "data.on_bad_image=skip",
            "--set", "data.max_bad_fraction=0.2", *TINY]
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert f"warning: skipping 1 unreadable train image(s) of 16: {train_files[0]}" in out
    assert str(train_files[5]) in out  # the run-time warning line
    files = RunDir(run)
    assert files.read_bad_images() == [str(train_files[0]), str(train_files[5])]
    assert files.read_scalars()["num_bad_images"][-1] == (6, 2.0)
    assert files.read_metrics()["num_bad_images"] == 2

    gallery = sorted((market / "bounding_box_test").glob("*.jpg"))[2]
    gallery.write_bytes(b"GIF89a not really")
    assert evaluate.main(["--run", str(run), "--on-bad-image", "error"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: gallery image {gallery}: truncated GIF") and "\n" not in err
    assert evaluate.main(["--run", str(run), "--on-bad-image", "skip",
                          "--output", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["num_bad_images"] == 1
    assert "warning: skipping 1 unreadable gallery image(s) of 16" in capsys.readouterr().out


@pytest.mark.slow
def test_run_time_bound_on_unreadable_training_images(tmp_path, market, capsys, monkeypatch):
    monkeypatch.delenv("TFREID_DEBUG", raising=False)
    for f in sorted((market / "bounding_box_train").glob("*.jpg"))[:3]:
        f.write_bytes(UNDECODABLE)  # 3 of 16 pass the screening, fail to decode
    argv = ["--model", "hacnn", "--dataset", "market1501", "--data-root", str(market),
            "--output", str(tmp_path / "run"), "--max-steps", "8",
            "--set", "data.on_bad_image=skip", *TINY]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "of 16 training images are unreadable, more than data.max_bad_fraction=0.05" in err
    assert len(err.splitlines()) == 1 and RunDir(tmp_path / "run").read_bad_images()
