"""`python -m tfreid.search`: index with a run, query with its SavedModel export, bad input.

End to end on the export tests' tiny HA-CNN run (small widths, random weights) and its synthetic
Market-format folders; the expected neighbours come from `FeatureExtractor` on the export and a
SciPy distance matrix with a stable argsort.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from tfreid.search.__main__ import build_parser, main

pytestmark = pytest.mark.slow  # one SavedModel export and two model loads (~1 min)


@pytest.fixture(scope="module")
def export(tiny_run, tmp_path_factory):
    from tfreid.export.run_export import export_run

    root = tmp_path_factory.mktemp("search-export")
    return export_run(tiny_run, ["savedmodel"], output=root)["savedmodel"]


@pytest.fixture(scope="module")
def index_dir(tiny_run, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("search-index") / "gallery.index"
    assert main(["index", "--model", str(tiny_run), "--images", str(tiny_data / "bounding_box_test"),
                 "--dataset", "market1501", "--out", str(out), "--quiet"]) == 0
    return out


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "tfreid.search", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_index_with_run_then_query_with_its_export(index_dir, export, tiny_data, tmp_path):
    from tfreid.inference import FeatureExtractor

    meta = json.loads((index_dir / "index.json").read_text())
    assert meta["model"]["format"] == "run" and meta["model"]["version"] == "checkpoints/ckpt-1"
    assert meta["metric"] == "euclidean" and meta["images"]["dataset"] == "market1501"
    gallery_paths = [tiny_data / "bounding_box_test" / p
                     for p in (index_dir / "paths.txt").read_text().split("\n")]
    queries = sorted((tiny_data / "query").glob("*.jpg"))
    extractor = FeatureExtractor(export)
    g_ref, q_ref = extractor(gallery_paths), extractor(queries)
    embeddings = np.load(index_dir / "embeddings.npy")
    np.testing.assert_allclose(embeddings, g_ref, atol=2e-5)  # the run and its export agree

    proc = run_cli("query", "--index", index_dir, "--images", tiny_data / "query", "--model",
                   export, "--topk", 5, "--out", tmp_path / "res")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"{len(queries)} queries x {len(gallery_paths)} gallery images, top-5" in proc.stdout
    results = json.loads((tmp_path / "res" / "results.json").read_text())
    full = cdist(q_ref.astype(np.float64), embeddings.astype(np.float64))
    order = np.argsort(full, axis=1, kind="stable")[:, :5]
    for i, record in enumerate(results["queries"]):
        assert record["path"] == str(queries[i]) and record["pid"] == int(queries[i].name[:4])
        assert [r["gallery_index"] for r in record["results"]] == order[i].tolist()
        np.testing.assert_allclose([r["distance"] for r in record["results"]],
                                   full[i, order[i]], atol=1e-4)
        assert (tmp_path / "res" / record["picture"]).is_file()
    assert results["model"]["format"] == "run" and results["method"] == "numpy (exact)"


def exit_code(argv) -> int:
    """`main`'s exit status, whether it returns it or argparse exits."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exit:
        return exit.code


def one_error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_bad_arguments_and_files(index_dir, tiny_data, tmp_path, capsys, monkeypatch):
    q = str(next((tiny_data / "query").glob("*.jpg")))
    empty = tmp_path / "empty"
    empty.mkdir()
    not_an_image = tmp_path / "list.txt"
    not_an_image.write_text("notes.doc\n")
    wrong_dim = tmp_path / "wrong-dim.index"
    shutil.copytree(index_dir, wrong_dim)
    np.save(wrong_dim / "embeddings.npy", np.zeros((len(np.load(index_dir / "embeddings.npy")), 7),
                                                   np.float32))
    cases = [
        (["query", "--index", tmp_path / "nope", "--images", q], "nope: not found"),
        (["query", "--index", tiny_data, "--images", q], "not a tfreid search index"),
        (["query", "--index", wrong_dim, "--images", q], "says float32 (12, 128)"),
        (["query", "--index", index_dir, "--images", q, "--topk", "0"],
         "argument --topk: expected an integer >= 1, got '0'"),
        (["query", "--index", index_dir, "--images", tmp_path / "q.jpg"], "q.jpg: not found"),
        (["query", "--index", index_dir, "--images", not_an_image], "'notes.doc' is not an image"),
        (["query", "--index", index_dir, "--images", q, "--approx", "--backend", "numpy"],
         "numpy is exact only"),
        (["query", "--index", index_dir, "--images", q, "--model", tiny_data],
         "not a tfreid run directory"),
        (["index", "--model", tiny_data, "--images", empty], "no image files"),
        (["index", "--model", tiny_data, "--images", q, "--out", index_dir], "already exists"),
        (["index", "--model", tiny_data, "--images", q, "--dataset", "viper"],
         "argument --dataset: invalid choice: 'viper'"),
        (["index", "--model", tiny_data, "--images", q, "--batch-size", "x"],
         "argument --batch-size: expected an integer >= 1, got 'x'"),
    ]
    for argv, expected in cases:
        assert exit_code(argv) == 2, argv
        assert expected in one_error_line(capsys), argv
    monkeypatch.setitem(sys.modules, "faiss", None)
    assert exit_code(["query", "--index", index_dir, "--images", q, "--backend", "faiss"]) == 2
    assert "pip install 'tfreid[search]'" in one_error_line(capsys)


def test_bad_image_and_other_model_are_refused(index_dir, tiny_run, tiny_data, tmp_path, capsys):
    import keras
    import tensorflow as tf

    from tfreid.engine.checkpoint import model_variables
    from tfreid.models import build_model

    folder = tmp_path / "crops"
    shutil.copytree(tiny_data / "query", folder)
    bad = folder / "0001_c1s1_000001_00.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert main(["index", "--model", str(tiny_run), "--images", str(folder), "--out",
                 str(tmp_path / "x.index"), "--quiet"]) == 2
    assert f"image file {bad} cannot be read or decoded" in one_error_line(capsys)
    # the same architecture with other weights (a retrained or another run) is refused
    other = tmp_path / "other-run"
    shutil.copytree(tiny_run, other, ignore=shutil.ignore_patterns("checkpoints"))
    keras.utils.set_random_seed(7)
    model = build_model("hacnn", 6, **json.loads((tiny_run / "run.json").read_text())["model_kwargs"])
    tf.train.Checkpoint(model=model_variables(model)).save(str(other / "checkpoints" / "ckpt"))
    assert main(["query", "--index", str(index_dir), "--images", str(tiny_data / "query"),
                 "--model", str(other), "--quiet"]) == 2
    line = one_error_line(capsys)
    assert f"model {other} (hacnn, run checkpoints/ckpt-1): other weights" in line
    assert "probe embeddings differ" in line


def test_every_flag_documents_its_default():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert "default" in action.help or "required" in action.help, (name, action.dest)
                assert action.option_strings[-1] in text


def test_bad_arguments_fail_fast_without_tensorflow(tmp_path):
    code = ("import sys; from tfreid.search.__main__ import main; "
            "code = main(['query', '--index', sys.argv[1], '--images', 'q.jpg']); "
            "print(code, 'tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "none")], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.split() == ["2", "False"]
    assert proc.stderr.strip().splitlines() == [f"error: index {tmp_path / 'none'}: not found "
                                                "(expected a folder written by python -m "
                                                "tfreid.search index)"]
