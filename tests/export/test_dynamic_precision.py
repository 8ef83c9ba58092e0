"""Dynamic-range export keeps the embedding head's and the first layers' weights float32 until
the embedding is close (tfreid/export/dynamic_precision.py)."""

import keras
import numpy as np
import pytest

from tfreid.export.dynamic_precision import MIN_GAIN, _cosines, _embed, _quantized_weights, \
    _restore, keep_weights_float
from tfreid.export.tflite import convert_tflite, frozen_function
from tfreid.export.flatbuffer import FLOAT32, INT8, read_model

SIZE = (32, 16)


@pytest.fixture(scope="module")
def converted():
    keras.utils.set_random_seed(3)
    inputs = keras.Input((*SIZE, 3))
    conv = lambda width, name: keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                                                   name=name)
    x = conv(48, "conv2")(conv(32, "conv1")(inputs))
    # two branches reading the same activation: one group (kernels >= 1024 weights are quantised;
    # conv1's 3x3x3x32 = 864 stay float)
    x = keras.layers.Concatenate()([conv(32, "branch_a")(x), conv(32, "branch_b")(x)])
    x = keras.layers.GlobalAveragePooling2D()(conv(64, "conv4")(x))
    embed = keras.Model(inputs, keras.layers.Dense(64, name="fc")(x))
    frozen = frozen_function(embed, SIZE)
    images = np.random.default_rng(0).uniform(0, 255, (8, *SIZE, 3)).astype(np.float32)
    return (convert_tflite(embed, SIZE, "none", frozen=frozen),
            convert_tflite(embed, SIZE, "dynamic", frozen=frozen), images)


def _min_cosine(a, b):
    return float(_cosines(a, b).min())


def _mean_error(a, b):
    return float(np.mean(1.0 - _cosines(a, b)))


def _names(data, indices):
    graph = read_model(data).subgraphs[0]
    return [graph.tensors[i].name.decode() for i in indices]


def _layer(name):
    return name.split("/")[1].removesuffix("_1")


def test_head_weights_then_groups_in_execution_order(converted):
    float32, dynamic, images = converted
    head, groups = _quantized_weights(read_model(dynamic))
    # the head: the conv whose map the global pool reads, and the FC after the pool; the others
    # grouped by the activation they read
    assert [_layer(n) for n in _names(dynamic, head)] == ["conv4", "fc"]
    assert [sorted(_layer(n) for n in _names(dynamic, g)) for g in groups] == \
        [["conv2"], ["branch_a", "branch_b"]]
    rest = [t for g in groups for t in g]
    graph = read_model(_restore(dynamic, float32, rest[:1])).subgraphs[0]
    assert [graph.tensors[i].type for i in head + rest] == [INT8, INT8, FLOAT32, INT8, INT8]
    everything = _restore(dynamic, float32, head + rest)
    np.testing.assert_allclose(_embed(everything, images), _embed(float32, images), rtol=1e-5, atol=1e-5)


def test_search_stops_at_the_target_without_gain_or_at_the_float_share(converted):
    float32, dynamic, images = converted
    reference = _embed(float32, images)
    head, groups = _quantized_weights(read_model(dynamic))
    plain = _min_cosine(_embed(dynamic, images), reference)
    assert plain < 0.99999  # int8 weights do change the embedding
    same, count = keep_weights_float(dynamic, float32, images, min_cosine=plain - 1e-6)
    assert count == 0 and same == dynamic  # already close enough: every weight stays int8
    # an unreachable target with no gain asked for and no share limit restores everything
    model, count = keep_weights_float(dynamic, float32, images, min_cosine=1.1, min_gain=-1.0,
                                      max_float_share=1.0)
    assert count == 5
    np.testing.assert_allclose(_embed(model, images), reference, rtol=1e-5, atol=1e-5)
    # ... stops at once when no step gains enough
    same, count = keep_weights_float(dynamic, float32, images, min_cosine=1.1, min_gain=1.0)
    assert count == 0 and same == dynamic
    # ... and restores no more than the share: head 3x3x64x64 + 64x64 = 40,960 of 82,432
    # quantised weights, conv2 13,824, the branches 2 x 13,824
    model, count = keep_weights_float(dynamic, float32, images, min_cosine=1.1, min_gain=-1.0,
                                      max_float_share=0.3)
    assert count == 1  # conv2 only: the head (49.7%) and conv2 + branches (50.3%) exceed 30%
    graph = read_model(model).subgraphs[0]
    assert [_layer(graph.tensors[t].name.decode()) for t in head + groups[0] + groups[1]
            if graph.tensors[t].type == FLOAT32] == ["conv2"]
    # the head is tried first: a target it reaches restores exactly the head
    head_only = _embed(_restore(dynamic, float32, head), images)
    with_head = _min_cosine(head_only, reference)
    assert with_head > plain
    assert _mean_error(head_only, reference) < (1 - MIN_GAIN) * _mean_error(_embed(dynamic, images), reference)
    model, count = keep_weights_float(dynamic, float32, images, min_cosine=with_head)
    assert count == len(head) and _min_cosine(_embed(model, images), reference) >= with_head
