"""Serving inputs: the SavedModel signatures reject bad requests with a message naming the fault."""

import numpy as np
import pytest
import tensorflow as tf

from tests.bad_input.conftest import BAD_KINDS, UNDECODABLE, jpeg_bytes

H, W = 16, 8


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import keras

    from tfreid.export.savedmodel import export_savedmodel

    inputs = keras.Input((H, W, 3))
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(inputs))
    return export_savedmodel(keras.Model(inputs, outputs), tmp_path_factory.mktemp("sm"), "tiny",
                             (H, W))


def _session_run(path, images):
    """Feeds `serving_default` through the C++ Session::Run path TF Serving takes, which does
    not check the declared shape (the Python signature call would)."""
    with tf.Graph().as_default() as graph, tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(path))
        sig = meta.signature_def["serving_default"]
        feed = graph.get_tensor_by_name(sig.inputs["images"].name)
        fetch = graph.get_tensor_by_name(sig.outputs["embedding"].name)
        return sess._call_tf_sessionrun(None, {feed._as_tf_output(): images},
                                        [fetch._as_tf_output()], [], None)[0]


def _with(value, index=(0, 0, 0, 0)):
    images = np.full((2, H, W, 3), 100, np.float32)
    images[index] = value
    return images


@pytest.mark.parametrize("images, message", [
    (np.full((1, H, W, 1), 5, np.float32), f"got shape] [1 {H} {W} 1]"),
    (np.full((1, H, W + 1, 3), 5, np.float32), f"got shape] [1 {H} {W + 1} 3]"),
    (np.full((1, H + 2, W, 3), 5, np.float32), f"got shape] [1 {H + 2} {W} 3]"),
    (np.full((H, W, 3), 5, np.float32), f"got shape] [{H} {W} 3]"),
    (np.full((1, 1, H, W, 3), 5, np.float32), f"got shape] [1 1 {H} {W} 3]"),
    (_with(np.nan), "images hold NaN or Inf pixel values"),
    (_with(np.inf), "images hold NaN or Inf pixel values"),
])
def test_serving_default_rejects_bad_pixels(exported, images, message):
    assert _session_run(exported, _with(1.0)).shape == (2, 4)
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        _session_run(exported, images)
    assert "serving_default: images" in str(info.value) and message in str(info.value)


@pytest.mark.parametrize("kind", [*BAD_KINDS, "undecodable"])
def test_serve_bytes_names_every_failing_index(exported, kind):
    sig = tf.saved_model.load(str(exported)).signatures["serve_bytes"]
    good = jpeg_bytes(1, (H, W))
    bad = UNDECODABLE if kind == "undecodable" else BAD_KINDS[kind]()
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        sig(image_bytes=tf.constant([good, bad, good, bad]))
    message = str(info.value)
    assert "serve_bytes: image_bytes" in message and "[1 3]" in message
    assert sig(image_bytes=tf.constant([good]))["embedding"].shape == (1, 4)
