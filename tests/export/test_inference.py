"""`tfreid.inference.FeatureExtractor`: every export format and input kind, same numbers."""

import importlib.util

import numpy as np
import pytest
import tensorflow as tf

from tests.export.conftest import EMBEDDING_SIZE, cosine
from tfreid.inference import FeatureExtractor


FORMATS = ["savedmodel", "keras", "tflite-float32"]


@pytest.mark.slow  # shares the session export (~60 s once)
@pytest.mark.parametrize("fmt", FORMATS)
def test_formats_agree_with_keras_checkpoint(exports, test_images, keras_reference, fmt):
    extractor = FeatureExtractor(exports[fmt])
    assert extractor.image_size == (160, 64) and extractor.embedding_size == EMBEDDING_SIZE
    assert extractor.format == fmt.split("-")[0]
    np.testing.assert_allclose(extractor(test_images), keras_reference, atol=2e-5)


@pytest.mark.slow  # shares the session export (~60 s once)
def test_input_kinds_give_the_same_numbers(exports, test_images, pixels):
    extractor = FeatureExtractor(exports["savedmodel"], batch_size=4)
    from_paths = extractor([str(p) for p in test_images])
    from_bytes = extractor([p.read_bytes() for p in test_images])
    from_float = extractor(pixels)
    np.testing.assert_allclose(from_bytes, from_paths, atol=1e-6)
    np.testing.assert_allclose(from_float, from_paths, atol=1e-5)
    # uint8 arrays are cast, not rescaled: equal to the float path on the rounded pixels
    rounded = np.round(pixels).astype(np.uint8)
    np.testing.assert_allclose(extractor(rounded), extractor(rounded.astype(np.float32)), atol=1e-6)
    # a single image, and an array at another size resized like the serving graph does
    np.testing.assert_allclose(extractor(str(test_images[0])), from_paths[:1], atol=1e-6)
    big = tf.image.resize(pixels[:1], (320, 128)).numpy()[0]
    expected = extractor(tf.image.resize(big[None], (160, 64)).numpy())
    np.testing.assert_allclose(extractor([big]), expected, atol=1e-6)


@pytest.mark.slow  # shares the session export (~60 s once)
def test_int8_is_close_and_labelled(exports, test_images, keras_reference):
    extractor = FeatureExtractor(exports["tflite-int8"])
    assert extractor.metadata["quantize"] == "int8"
    assert cosine(extractor(test_images), keras_reference).mean() >= 0.98


@pytest.mark.slow  # shares the session export (~60 s once)
def test_bad_inputs(exports, tmp_path):
    extractor = FeatureExtractor(exports["keras"])
    with pytest.raises(FileNotFoundError, match=r"inputs\[1\]: image file .*missing.jpg"):
        extractor([np.zeros((160, 64, 3), np.uint8), str(tmp_path / "missing.jpg")])
    with pytest.raises(ValueError, match=r"inputs\[0\]: bytes is not a decodable JPEG/PNG/BMP/GIF"):
        extractor([b"not an image"])
    with pytest.raises(ValueError, match=r"inputs\[0\]: expected an RGB array \[H, W, 3\].*\(160, 64\)"):
        extractor([np.zeros((160, 64))])
    with pytest.raises(ValueError, match=r"pixel values must lie in 0..255, got range \[-1.0"):
        extractor(np.full((1, 160, 64, 3), -1.0))
    with pytest.raises(ValueError, match="inputs is empty"):
        extractor([])


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.tflite"):
        FeatureExtractor(tmp_path / "nothing.tflite")
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="is not a tfreid export"):
        FeatureExtractor(tmp_path / "model.pt")
    if importlib.util.find_spec("onnxruntime"):
        (tmp_path / "model.onnx").write_bytes(b"x")
        with pytest.raises(ValueError, match="model.onnx' is not a readable ONNX model"):
            FeatureExtractor(tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="is not a tfreid export"):
        FeatureExtractor(tmp_path)  # a folder without saved_model.pb
