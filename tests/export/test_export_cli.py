"""`python -m tfreid.export`: TF Serving layout, signatures, fresh-process loading, bad input."""

import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests.export.conftest import EMBEDDING_SIZE
from tfreid.export.__main__ import main


# Ops a stock TF Serving build cannot run (Python callbacks) or that indicate Python in the graph.
DENYLIST = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def _graph_ops(saved_model_dir) -> set[str]:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    ops = set()
    for meta in proto.meta_graphs:
        ops |= {n.op for n in meta.graph_def.node}
        for fn in meta.graph_def.library.function:
            ops |= {n.op for n in fn.node_def}
    return ops


@pytest.mark.slow  # shares the session export (~60 s once)
def test_layout(exports):
    root = exports["root"]
    sm = root / "hacnn" / "1"
    assert exports["savedmodel"] == sm
    assert (sm / "saved_model.pb").is_file() and (sm / "variables" / "variables.index").is_file()
    info = json.loads((sm / "assets" / "tfreid.json").read_text())
    assert info["model"] == "hacnn" and info["input_size"] == [160, 64]
    assert info["embedding_size"] == EMBEDDING_SIZE and info["distance"] == "euclidean"
    assert info["checkpoint"].endswith("ckpt-1")
    # TF Serving's base path holds numeric versions only; other formats live beside it
    assert [p.name for p in (root / "hacnn").iterdir()] == ["1"]
    assert sorted(p.name for p in (root / "hacnn-tflite" / "1").glob("*.tflite")) == [
        "hacnn-dynamic.tflite", "hacnn-float16.tflite", "hacnn-float32.tflite", "hacnn-int8.tflite"]
    assert (root / "hacnn-keras" / "1" / "hacnn.keras").is_file()


@pytest.mark.slow  # shares the session export (~60 s once)
def test_no_python_ops_in_savedmodel(exports):
    ops = _graph_ops(exports["savedmodel"])
    assert not ops & DENYLIST, ops & DENYLIST
    assert {"Conv2D", "DecodeJpeg"} <= ops or {"Conv2D", "DecodeImage"} <= ops


@pytest.mark.slow  # shares the session export (~60 s once)
def test_fresh_process_savedmodel_and_keras(exports, test_images, keras_reference):
    """Both signatures and the .keras file, loaded in a new interpreter, give the checkpoint's
    embeddings (the .keras model includes the normalisation layer: 0..255 in)."""
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf, keras
        import tfreid.models
        tfreid.models.available_models()
        from tfreid.preprocessing import decode_resize
        paths = {[str(p) for p in test_images]!r}
        raw = [tf.io.read_file(p) for p in paths]
        pixels = tf.stack([decode_resize(r, (160, 64)) for r in raw])
        sig = tf.saved_model.load({str(exports["savedmodel"])!r}).signatures
        a = sig["serving_default"](images=pixels)["embedding"].numpy()
        b = sig["serve_bytes"](image_bytes=tf.stack(raw))["embedding"].numpy()
        model = keras.saving.load_model({str(exports["keras"])!r}, safe_mode=True)
        c = model.predict(pixels.numpy(), verbose=0)
        print(json.dumps({{"a": a.tolist(), "b": b.tolist(), "c": c.tolist()}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = {k: np.array(v) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    np.testing.assert_allclose(out["a"], keras_reference, atol=1e-5)
    np.testing.assert_allclose(out["b"], keras_reference, atol=1e-5)
    np.testing.assert_allclose(out["c"], keras_reference, atol=1e-5)


@pytest.mark.slow  # shares the session export (~60 s once)
def test_serve_bytes_rejects_non_images(exports, test_images):
    sig = tf.saved_model.load(str(exports["savedmodel"])).signatures["serve_bytes"]
    good = tf.io.read_file(str(test_images[0]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)serve_bytes: image_bytes must be encoded JPEG/PNG/BMP/GIF.*\[1\]"):
        sig(image_bytes=tf.stack([good, tf.constant(b"this is not an image")]))
    # the loaded model keeps serving after the bad request
    assert sig(image_bytes=tf.stack([good]))["embedding"].shape == (1, EMBEDDING_SIZE)


@pytest.mark.slow  # shares the session export (~60 s once)
def test_next_version_and_no_overwrite(tiny_run, exports, capsys):
    root = str(exports["root"])
    # (the .keras export is the cheapest one to repeat)
    assert main(["--run", str(tiny_run), "--format", "keras", "--output", root]) == 0
    assert (exports["root"] / "hacnn-keras" / "2" / "hacnn.keras").is_file()
    assert main(["--run", str(tiny_run), "--format", "savedmodel", "--output", root,
                 "--version", "1"]) == 2
    assert "hacnn/1 already exists" in capsys.readouterr().err
    assert sorted(p.name for p in (exports["root"] / "hacnn").iterdir()) == ["1"]


@pytest.mark.parametrize("argv,message", [
    (["--format", "torchscript"], "--format must be one of savedmodel, tflite, keras, onnx, all (or a "
                                  "comma-separated list); got 'torchscript'"),
    (["--format", "savedmodel,pb"], "(or a comma-separated list); got 'pb'"),
    (["--format", "tflite", "--quantize", "int4"], "--quantize must be among"),
    (["--format", "keras", "--quantize", "int8"], "--quantize applies to TFLite only"),
    (["--format", "keras", "--checkpoint", "/nonexistent/ckpt-3"],
     "checkpoint /nonexistent/ckpt-3 not found"),
])
@pytest.mark.slow  # builds the session tiny run (~10 s once)
def test_bad_arguments(tiny_run, tmp_path, capsys, argv, message):
    assert main(["--run", str(tiny_run), "--output", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.slow  # builds the session tiny run (~10 s once)
def test_run_without_checkpoints(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "run.json"):
        shutil.copy(tiny_run / name, run / name)
    assert main(["--run", str(run), "--format", "savedmodel", "--output", str(tmp_path / "o")]) == 2
    assert f"no checkpoint in {run / 'checkpoints'}" in capsys.readouterr().err
    assert main(["--run", str(tmp_path / "nope"), "--format", "keras"]) == 2
    assert "is " + str(tmp_path / "nope") + " a tfreid run directory" in capsys.readouterr().err


@pytest.mark.slow  # builds the session tiny run (~10 s once)
def test_corrupt_checkpoint(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    data = next((run / "checkpoints").glob("ckpt-1.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])  # truncated
    assert main(["--run", str(run), "--format", "keras", "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot restore checkpoint" in err and "ckpt-1" in err


def test_help_does_not_import_tensorflow():
    """`--help` answers at once: neither TensorFlow nor Keras is imported."""
    script = ("import sys, runpy\nsys.argv = ['tfreid.export', '--help']\n"
              "try:\n    runpy.run_module('tfreid.export', run_name='__main__')\n"
              "except SystemExit:\n    pass\n"
              "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "--to ROOT" in proc.stdout and "(default: 128)" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.slow  # shares the session export (~60 s once)
def test_metadata_has_no_absolute_paths(exports, tiny_run):
    """tfreid.json and the sidecars travel to other machines: no path of the build machine."""
    files = [exports["savedmodel"] / "assets" / "tfreid.json",
             *exports["root"].glob("*-tflite/1/*.json"), *exports["root"].glob("*-keras/1/*.json")]
    assert len(files) == 6
    for path in files:
        info = json.loads(path.read_text())
        assert info["run"] == tiny_run.name and info["checkpoint"] == "checkpoints/ckpt-1"
        for text in _strings(info):
            assert not text.startswith("/") and str(tiny_run.parent) not in text, (path, text)


@pytest.mark.slow  # two SavedModel exports of the tiny run (~30 s)
def test_publish_is_atomic_and_adds_the_next_version(tiny_run, tmp_path, monkeypatch, capsys):
    from tfreid.export import savedmodel

    root = tmp_path / "serving"
    for version in ("1", "2"):  # versions already served
        (root / "hacnn" / version).mkdir(parents=True)

    def disk_full(*args, **kwargs):  # after the graph and weights are written, before the assets
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(savedmodel, "write_json", disk_full)
        assert main(["--run", str(tiny_run), "--to", str(root), "--quiet"]) == 2
    assert "No space left" in capsys.readouterr().err  # one error line, no traceback
    assert sorted(p.name for p in (root / "hacnn").iterdir()) == ["1", "2"]  # nothing partial

    capsys.readouterr()
    assert main(["--run", str(tiny_run), "--to", str(root), "--quiet"]) == 0
    assert sorted(p.name for p in (root / "hacnn").iterdir()) == ["1", "2", "3"]
    assert (root / "hacnn" / "3" / "saved_model.pb").stat().st_size > 1000
    out = capsys.readouterr().out
    assert out.strip() == f"savedmodel: {root / 'hacnn' / '3'}"  # --quiet: the result only
    assert not (tiny_run / "export").exists()  # --to publishes; the run's folder is untouched
