"""Dynamic-range export keeps the first weight tensors float32 until the embedding is close
(tfreid/export/dynamic_precision.py)."""

import keras
import numpy as np
import pytest

from tfreid.export.dynamic_precision import _embed, _min_cosine, _quantized_weights, _restore, \
    keep_early_weights_float
from tfreid.export.tflite import convert_tflite, frozen_function
from tfreid.export.tflite_rewrite import read_model

SIZE = (32, 16)


@pytest.fixture(scope="module")
def converted():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((*SIZE, 3))
    x = inputs
    for width in (32, 48, 64, 64):  # big enough kernels (>= 1024 weights) to be quantised
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    embed = keras.Model(inputs, keras.layers.Dense(64)(x))
    frozen = frozen_function(embed, SIZE)
    images = np.random.default_rng(0).uniform(0, 255, (8, *SIZE, 3)).astype(np.float32)
    return (convert_tflite(embed, SIZE, "none", frozen=frozen),
            convert_tflite(embed, SIZE, "dynamic", frozen=frozen), images)


def test_weights_are_restored_in_execution_order(converted):
    float32, dynamic, images = converted
    order = _quantized_weights(read_model(dynamic))
    assert len(order) == 4  # the 3 convs after the first (3x3x3x32 = 864 < 1024 stays float) + dense
    restored = read_model(_restore(dynamic, float32, 2))
    graph = restored.subgraphs[0]
    assert [graph.tensors[i].type for i in order] == [0, 0, 9, 9]  # FLOAT32, FLOAT32, INT8, INT8
    everything = _restore(dynamic, float32, len(order))
    np.testing.assert_allclose(_embed(everything, images), _embed(float32, images), rtol=1e-5, atol=1e-5)


def test_smallest_power_of_two_prefix_that_reaches_the_bound(converted):
    float32, dynamic, images = converted
    reference = _embed(float32, images)
    plain = _min_cosine(_embed(dynamic, images), reference)
    assert plain < 0.99999  # int8 weights do change the embedding
    same, count = keep_early_weights_float(dynamic, float32, images, min_cosine=plain - 1e-6)
    assert count == 0 and same == dynamic
    model, count = keep_early_weights_float(dynamic, float32, images, min_cosine=1.0 - 1e-7)
    assert count == 4
    target = _min_cosine(_embed(_restore(dynamic, float32, 2), images), reference)
    assert target > plain  # restoring the first 2 tensors helps: the search stops at 1 or 2
    model, count = keep_early_weights_float(dynamic, float32, images, min_cosine=target)
    assert count in (1, 2) and _min_cosine(_embed(model, images), reference) >= target
    if count == 2:
        assert _min_cosine(_embed(_restore(dynamic, float32, 1), images), reference) < target
