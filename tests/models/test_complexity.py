"""Parameter and MAC counters on tiny models with hand-computed counts."""

import keras
import numpy as np
import pytest

from tfreid.layers import RegionSampler
from tfreid.models.complexity import count_flops, count_params


def _tiny():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inp)  # 3*3*3*4 = 108
    x = keras.layers.BatchNormalization(name="bn")(x)  # gamma, beta 8 (+ 8 statistics)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)  # 3*3*4 + 4 = 40
    x = keras.layers.GlobalAveragePooling2D()(x)
    shared = keras.layers.Dense(4, name="shared")  # 4*4 + 4 = 20, used twice
    f = shared(shared(x))
    logits = keras.layers.Dense(5, name="classifier")(f)  # 4*5 + 5 = 25
    return keras.Model(inp, {"logits": logits, "features": f})


def test_count_params_by_hand():
    m = _tiny()
    assert count_params(m) == 108 + 8 + 40 + 20
    assert count_params(m, exclude_classifiers=False) == 108 + 8 + 40 + 20 + 25
    assert count_params(m, exclude_classifiers=False, include_statistics=True) == m.count_params() == 201 + 8


def test_frozen_layers_still_count():
    m = _tiny()
    m.get_layer("conv").trainable = False
    assert count_params(m) == 176


def test_count_flops_by_hand():
    macs, per_type = count_flops(_tiny(), (8, 8, 3), by_op_type=True)
    conv = 8 * 8 * 4 * (3 * 3 * 3)  # outputs x kernel volume
    depthwise = 4 * 4 * 4 * (3 * 3)  # stride 2: 4x4 outputs, one 3x3 filter per channel
    dense = 2 * 4 * 4 + 4 * 5  # shared Dense applied twice, classifier
    assert per_type == {"Conv2D": conv, "DepthwiseConv2dNative": depthwise, "MatMul": dense}
    assert macs == conv + depthwise + dense == 7540


def test_count_flops_scales_with_input_size():
    m = keras.Sequential([keras.Input((None, None, 2)), keras.layers.Conv2D(3, 1)])
    assert count_flops(m, (4, 6, 2)) == 4 * 6 * 3 * 2
    assert count_flops(m, (8, 6, 2)) == 2 * count_flops(m, (4, 6, 2))


def test_count_flops_counts_batched_matmuls_of_the_sampler():
    feats, theta = keras.Input((20, 8, 16)), keras.Input((4, 2))
    out = RegionSampler((6, 7))([feats, theta])
    m = keras.Model([feats, theta], out)
    # count_flops takes single-input models: predict theta from the features instead.
    with pytest.raises(ValueError, match="one input"):
        count_flops(m, (20, 8, 16))
    inp = keras.Input((20, 8, 16))
    th = keras.layers.Reshape((4, 2))(keras.layers.Dense(8)(keras.layers.GlobalAveragePooling2D()(inp)))
    m = keras.Model(inp, RegionSampler((6, 7))([inp, th]))
    _, per_type = count_flops(m, (20, 8, 16), by_op_type=True)
    rows = 4 * 6 * 20 * (8 * 16)  # [T*oh, H] @ [H, W*C]
    cols = 4 * 7 * 8 * (6 * 16)  # per region [ow, W] @ [W, oh*C]
    assert per_type == {"MatMul": 16 * 8, "BatchMatMulV2": rows + cols}


def test_bad_arguments():
    m = _tiny()
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(m, (8, 8))
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(m, (8, 0, 3))
    with pytest.raises(ValueError, match="keras.Model"):
        count_params(np.zeros(3))
