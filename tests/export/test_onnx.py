"""ONNX export (`--format onnx`, tf2onnx) of every registered model, run by ONNX Runtime on unseen
images against the Keras checkpoint with the TFLite float32 bounds (cosine >= 0.9999 on every
image). Models at their registry `small` size as in test_all_models.py; HA-CNN is the shared
tiny run of conftest.py. Skipped without the [onnx] extra (the README's test command has it)."""

import json

import numpy as np
import pytest

pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

from tests.export.conftest import cosine  # noqa: E402
from tests.export.test_all_models import _make_run, _pixels  # noqa: E402
from tfreid.models import available_models  # noqa: E402

FLOAT32_BOUND = 0.9999  # = test_all_models.BOUNDS["tflite-float32"], per image and mean
MODELS = [name for name in available_models() if name != "hacnn"]


def _check_parity(path, pixels, reference, size):
    from tfreid.inference import FeatureExtractor

    extractor = FeatureExtractor(path)
    assert extractor.format == "onnx" and extractor.kernels == "onnxruntime"
    assert extractor.image_size == tuple(size)
    cos = cosine(extractor(pixels), reference)
    assert cos.min() >= FLOAT32_BOUND and cos.mean() >= FLOAT32_BOUND, cos
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["format"] == "onnx" and info["embedding_size"] == reference.shape[1]
    return extractor


@pytest.mark.slow  # one tf2onnx conversion (~10-25 s)
def test_hacnn_cli_onnx_matches_keras(tiny_run, pixels, keras_reference, tmp_path, capsys):
    from tfreid.export.__main__ import main

    out = tmp_path / "saved_models"
    assert main(["--run", str(tiny_run), "--format", "onnx", "--output", str(out)]) == 0
    path = out / "hacnn-onnx" / "1" / "hacnn.onnx"
    assert f"onnx: {path}" in capsys.readouterr().out
    extractor = _check_parity(path, pixels, keras_reference, (160, 64))
    import onnx

    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}  # standard ONNX ops only
    batch = extractor.embed_pixels(np.concatenate([pixels] * 6))  # dynamic batch, 36 images
    np.testing.assert_allclose(batch[:len(pixels)], batch[-len(pixels):], atol=1e-6)


@pytest.mark.slow  # ~10-60 s per model (tf2onnx on the small variants)
@pytest.mark.parametrize("name", MODELS)
def test_every_model_onnx_matches_keras(name, tiny_data, test_images, tmp_path):
    from tfreid.export.run_export import export_run
    from tfreid.models import embedding_model
    from tfreid.preprocessing import normalize

    run, model, size = _make_run(name, tiny_data, tmp_path)
    written = export_run(run, ["onnx"], output=tmp_path / "saved_models")
    pixels = _pixels(test_images, size)
    reference = embedding_model(model)(normalize(pixels), training=False).numpy()
    _check_parity(tmp_path / "saved_models" / f"{name}-onnx" / "1" / f"{name}.onnx",
                  pixels, reference, size)
    assert set(written) == {"onnx"}


def test_unsupported_op_is_named():
    import keras
    import tensorflow as tf

    from tfreid.export.onnx_export import convert_onnx

    class LogGamma(keras.layers.Layer):
        def call(self, x):
            return tf.math.lgamma(x + 2.0)  # no ONNX mapping in tf2onnx

    inputs = keras.Input((8, 4, 3))
    model = keras.Model(inputs, keras.layers.Flatten()(LogGamma(name="lgamma_layer")(inputs)))
    with pytest.raises(ValueError, match=r"cannot convert the TensorFlow op\(s\) Lgamma \(nodes .*lgamma_layer"):
        convert_onnx(model, (8, 4))


def test_missing_extra_is_one_error_line(tiny_run, tmp_path, capsys, monkeypatch):
    import sys

    from tfreid.export.__main__ import main

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # as if not installed
    assert main(["--run", str(tiny_run), "--format", "savedmodel,onnx", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: ONNX export needs tf2onnx: pip install 'tfreid[onnx]'"]
    assert not any(tmp_path.iterdir())  # nothing written
