"""The float32 islands of int8 exports that ADFL needs (tfreid/export/int8_ranges.py):
the embedding head and self-attention's softmax. Each is checked for the ops it selects and for
beating the converter's fully integer model on a network built to exercise it."""

import keras
import numpy as np
import pytest

from tests.export.conftest import cosine
from tests.export.test_xnnpack import _interpreter, _plain, _run
from tfreid.preprocessing import normalize
from tfreid.export.int8_ranges import embedding_head_slice, softmax_attention_slice
from tfreid.export.tflite import convert_tflite
from tfreid.inference import xnnpack_delegation

SIZE = (32, 16)


def _blocks(count, seed):
    """Images of 8 x 4 flat colour blocks: every feature-map position sees a different colour."""
    rng = np.random.default_rng(seed)
    return np.repeat(np.repeat(rng.uniform(0, 255, (count, 8, 4, 3)), 4, 1), 4, 2).astype(np.float32)


@pytest.fixture(scope="module")
def head_model():
    """Two max-pooled branches of very different ranges, concatenated, then a BNNeck-like BN
    with large gamma / sigma; plus an internal GAP -> Dense -> Reshape (like HA-CNN's theta)
    that is not part of the head."""
    keras.utils.set_random_seed(4)
    images = keras.Input((*SIZE, 3))
    f = keras.layers.Conv2D(16, 4, strides=4, activation="relu", name="trunk")(images)
    gate = keras.layers.Dense(16, activation="sigmoid", name="gate")(
        keras.layers.GlobalAveragePooling2D(name="inner_pool")(f))
    f = keras.layers.Multiply(name="gated")([f, keras.layers.Reshape((1, 1, 16))(gate)])
    wide = keras.layers.Conv2D(32, 1, activation="relu", name="wide")(f)
    small = keras.layers.Conv2D(32, 1, activation="relu", name="small")(f)
    pooled = keras.layers.Concatenate(name="fusion")(
        [keras.layers.GlobalMaxPooling2D(name="wide_pool")(wide),
         keras.layers.GlobalMaxPooling2D(name="small_pool")(small)])
    bn = keras.layers.BatchNormalization(name="bnneck")
    model = keras.Model(images, bn(pooled))
    wide_conv, small_conv = model.get_layer("wide"), model.get_layer("small")
    wide_conv.kernel.assign(wide_conv.kernel * 40.0)  # one branch reaches ~40x the other's range
    calibration = _blocks(16, 2)
    pooled_values = keras.Model(images, pooled)(normalize(calibration)).numpy()
    # BNNeck statistics from the data: each channel centred and scaled to unit variance
    bn.moving_mean.assign(pooled_values.mean(0))
    bn.moving_variance.assign(pooled_values.var(0) + 1e-4)
    return model, calibration


def test_head_slice_is_pools_to_output_and_the_pooled_convs(head_model):
    model, _ = head_model
    names = embedding_head_slice(convert_tflite(model, SIZE, "none"))
    for layer in ("wide", "small", "wide_pool", "small_pool", "fusion"):
        assert any(f"/{layer}_1/" in n for n in names), (layer, names)
    # the internal pool and what it feeds reach the output through a feature map: not head
    assert not any(s in n for n in names for s in ("inner_pool", "gate", "trunk", "gated"))


def test_head_in_float32_keeps_low_range_channels(head_model):
    model, calibration = head_model
    x = _blocks(8, 3)
    reference = model(normalize(x)).numpy()
    data = convert_tflite(model, SIZE, "int8", calibration)
    ours = _run(_interpreter(data), x)
    plain = _run(_interpreter(_plain(model, SIZE, calibration), xnnpack=False), x)
    # measured: fully integer cosine 0.75-0.87 (the small branch's channels are lost in the
    # wide branch's int8 step), float head 0.998-0.999
    assert cosine(ours, reference).min() >= 0.995 and cosine(plain, reference).max() < 0.95
    interpreter = _interpreter(data)
    interpreter.allocate_tensors()
    report = xnnpack_delegation(interpreter)
    assert report["delegated"] == report["nodes"], report  # float islands run inside XNNPACK


@pytest.fixture(scope="module")
def attention_model():
    """conv -> ADFL channel self-attention (1c) with wide energies -> flatten."""
    from tfreid.layers.channel_self_attention import ChannelSelfAttention

    keras.utils.set_random_seed(6)
    images = keras.Input((*SIZE, 3))
    conv = keras.layers.Conv2D(16, 4, strides=4, name="features")
    attention = ChannelSelfAttention(name="channel")
    model = keras.Model(images, keras.layers.Flatten()(attention(conv(images))))
    attention.alpha.assign(4.0)
    conv.kernel.assign(conv.kernel * 4.0)  # energies (channel Gram matrix) 16x wider
    return model, _blocks(16, 2)


def test_softmax_slice_is_energy_softmax_and_weighted_sum(attention_model):
    model, _ = attention_model
    names = softmax_attention_slice(convert_tflite(model, SIZE, "none"))
    assert len(names) == 3, names
    assert "MatMul" in names[0] and "Softmax" in names[1] and "MatMul_1" in names[2]


def test_float_softmax_beats_fully_integer_attention(attention_model):
    model, calibration = attention_model
    x = _blocks(8, 3)
    reference = model(normalize(x)).numpy()
    ours = _run(_interpreter(convert_tflite(model, SIZE, "int8", calibration)), x)
    plain = _run(_interpreter(_plain(model, SIZE, calibration), xnnpack=False), x)
    # measured: fully integer min 0.9963, float softmax island 0.9991
    assert cosine(ours, reference).min() >= 0.999 > cosine(plain, reference).min()
