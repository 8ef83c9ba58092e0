"""TFLite/LiteRT export: builtin ops only, preprocessing in the graph, parity with Keras."""

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from tests.export.conftest import EMBEDDING_SIZE, cosine
from tfreid.export.tflite import QUANTIZATIONS, convert_tflite, tflite_op_names
from tfreid.inference import FeatureExtractor


BUILTIN_NAMES = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")} - {"CUSTOM"}
# (variant, minimum per-image cosine, minimum mean cosine) vs the Keras float32 checkpoint. The
# issue's int8 bound is a mean >= 0.98 on the trained run (measured there: see docs/export.md); this
# random-init tiny network passes the same bound.
PARITY = [("float32", 0.9999, 0.9999), ("float16", 0.999, 0.999), ("dynamic", 0.999, 0.999),
          ("int8", 0.95, 0.98)]


@pytest.mark.slow  # shares the session export (~60 s once)
@pytest.mark.parametrize("variant", ["float32", "float16", "dynamic", "int8"])
def test_builtin_ops_only(exports, variant):
    ops = tflite_op_names(exports[f"tflite-{variant}"])
    assert ops <= BUILTIN_NAMES, ops - BUILTIN_NAMES  # no Flex / custom op
    assert not any(op.startswith(("Flex", "CUSTOM")) for op in ops)
    # the in-graph normalisation + network: convolutions, and quantize ops only when quantised
    assert "CONV_2D" in ops
    assert ("QUANTIZE" in ops) == (variant == "int8")


@pytest.mark.slow  # shares the session export (~60 s once)
@pytest.mark.parametrize("variant,per_image,mean", PARITY)
def test_parity_with_keras(exports, pixels, keras_reference, variant, per_image, mean):
    features = FeatureExtractor(exports[f"tflite-{variant}"])(pixels)
    cos = cosine(features, keras_reference)
    assert cos.min() >= per_image and cos.mean() >= mean, cos
    if variant == "float32":
        np.testing.assert_allclose(features, keras_reference, atol=2e-5)


@pytest.mark.slow  # shares the session export (~60 s once)
def test_file_sizes_follow_quantisation(exports):
    size = {v: exports[f"tflite-{v}"].stat().st_size for v in ("float32", "float16", "dynamic", "int8")}
    # float16 halves every weight. Dynamic-range quantisation stores only tensors of >= 1024
    # elements as int8, and the narrow test HA-CNN has many smaller ones (measured 0.59; the
    # full-width model: 0.28); full int8 quantises every weight (measured 0.39 here).
    assert 0.45 < size["float16"] / size["float32"] < 0.6
    assert size["dynamic"] < size["float16"] and size["dynamic"] / size["float32"] < 0.65
    assert size["int8"] / size["float32"] < 0.45 and size["int8"] == min(size.values())


@pytest.mark.slow  # shares the session export (~60 s once)
def test_dynamic_batch_gives_per_image_results(exports, pixels):
    extractor = FeatureExtractor(exports["tflite-float32"], batch_size=4)
    together = extractor(pixels)                       # batches of 4 + 2
    alone = np.concatenate([extractor(p) for p in pixels])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.slow  # shares the session export (~60 s once)
def test_sidecar_describes_the_model(exports):
    import json

    info = json.loads(exports["tflite-int8"].with_suffix(".json").read_text())
    assert info["quantize"] == "int8" and info["calibration_images"] == 24
    assert info["input_size"] == [160, 64] and info["embedding_size"] == EMBEDDING_SIZE


def test_bad_arguments():
    import keras

    tiny = keras.Sequential([keras.Input((8, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="quantize must be one of"):
        convert_tflite(tiny, (8, 4), "int4")
    with pytest.raises(ValueError, match=r"calibration images float32 \[M, 8, 4, 3\]"):
        convert_tflite(tiny, (8, 4), "int8", calibration=None)
    with pytest.raises(ValueError, match="got shape"):
        convert_tflite(tiny, (8, 4), "int8", calibration=np.zeros((2, 9, 4, 3)))
    assert set(QUANTIZATIONS) == {"none", "float16", "dynamic", "int8"}
