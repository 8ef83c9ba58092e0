"""ResNet-50 backbone: Keras-compatible names, ImageNet-file loading by name, last stride, hooks."""

import keras
import numpy as np
import pytest

from tfreid.layers import FusedBatchNormalization
from tfreid.models.backbones import (
    STAGE_OUTPUTS,
    build_resnet50,
    load_backbone_weights,
    resnet50_stage,
    resnet50_stem,
)

SHAPE = (64, 32, 3)


@pytest.fixture(scope="module")
def keras_resnet():
    """keras.applications.ResNet50 with random weights AND random BN statistics (so a swapped
    gamma/beta or mean/variance would show in the outputs)."""
    keras.utils.set_random_seed(3)
    app = keras.applications.ResNet50(weights=None, include_top=False, input_shape=SHAPE)
    rng = np.random.default_rng(0)
    for layer in app.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = (w.shape for w in layer.get_weights())
            layer.set_weights([rng.uniform(0.5, 1.5, g), rng.normal(0, 0.1, b),
                               rng.normal(0, 0.1, m), rng.uniform(0.5, 1.5, v)])
    return app


def _stage_outputs(model_or_app, x):
    if isinstance(model_or_app.output, dict):
        out = model_or_app(x, training=False)
        return [np.asarray(out[f"stage{s}"]) for s in range(1, 5)]
    probe = keras.Model(model_or_app.input,
                        [model_or_app.get_layer(STAGE_OUTPUTS[s]).output for s in range(1, 5)])
    return [np.asarray(y) for y in probe(x, training=False)]


@pytest.mark.parametrize("fmt", ["weights.h5", "legacy.h5"])
def test_keras_file_loads_by_name_and_matches_stage_outputs(keras_resnet, tmp_path, fmt):
    path = str(tmp_path / f"resnet.{fmt}")
    if fmt == "weights.h5":
        keras_resnet.save_weights(path)  # Keras 3 layout
    else:
        keras_resnet.save(path)  # Keras's legacy HDF5 layout (as the ImageNet notop file)
    ours = build_resnet50(SHAPE, last_stride=2)
    ours_named = {layer.name for layer in ours.layers if layer.weights}
    theirs_named = {layer.name for layer in keras_resnet.layers if layer.weights}
    assert ours_named == theirs_named
    loaded = load_backbone_weights(ours, path)
    assert set(loaded) == theirs_named
    x = np.random.default_rng(1).normal(size=(2,) + SHAPE).astype("float32")
    for ref, got in zip(_stage_outputs(keras_resnet, x), _stage_outputs(ours, x)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_last_stride_one_keeps_stage3_resolution_and_widths():
    net = build_resnet50(SHAPE, last_stride=1, base_width=8)
    shapes = {k: tuple(v.shape) for k, v in net.output.items()}
    assert shapes == {"stage1": (None, 16, 8, 32), "stage2": (None, 8, 4, 64),
                      "stage3": (None, 4, 2, 128), "stage4": (None, 4, 2, 256)}
    assert tuple(build_resnet50(SHAPE, base_width=8).output["stage4"].shape) == (None, 2, 1, 256)


def test_prefixed_stage_copies_each_receive_the_file_weights(keras_resnet, tmp_path):
    path = str(tmp_path / "r.weights.h5")
    keras_resnet.save_weights(path)
    inputs = keras.Input(SHAPE)
    x = inputs
    for stage in (1, 2, 3):
        x = resnet50_stage(resnet50_stem(x) if stage == 1 else x, stage)
    a = resnet50_stage(x, 4, 1, prefix="global_")
    b = resnet50_stage(x, 4, 1, prefix="part3_")
    model = keras.Model(inputs, [a, b])
    load_backbone_weights(model, path, prefixes=("", "global_", "part3_"))
    want = keras_resnet.get_layer("conv5_block2_2_conv").get_weights()[0]
    for prefix in ("global_", "part3_"):
        np.testing.assert_array_equal(model.get_layer(f"{prefix}conv5_block2_2_conv").get_weights()[0], want)
    # unshared: distinct variables per copy
    assert model.get_layer("global_conv5_block1_1_conv").kernel is not \
        model.get_layer("part3_conv5_block1_1_conv").kernel


def test_after_block_hook_sees_every_block_in_order():
    seen = []

    def hook(name, block_in, block_out):
        seen.append((name, block_in.shape[-1], block_out.shape[-1]))
        return block_out

    x = keras.Input((32, 16, 32))
    resnet50_stage(x, 4, 2, base_width=8, after_block=hook)
    assert seen == [("conv5_block1", 32, 256), ("conv5_block2", 256, 256),
                    ("conv5_block3", 256, 256)]


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        load_backbone_weights(build_resnet50(SHAPE, base_width=8), str(tmp_path / "missing.h5"))
    path = str(tmp_path / "full.weights.h5")
    build_resnet50(SHAPE).save_weights(path)
    with pytest.raises(ValueError, match="conv1_conv.*expects weight shapes"):
        load_backbone_weights(build_resnet50(SHAPE, base_width=8), path)
    with pytest.raises(ValueError, match="stage=5"):
        resnet50_stage(keras.Input((8, 8, 4)), 5)
    with pytest.raises(ValueError, match="last_stride=3"):
        build_resnet50(SHAPE, last_stride=3)
    with pytest.raises(ValueError, match="base_width=0"):
        build_resnet50(SHAPE, base_width=0)


def test_fused_batch_norm_matches_keras_batch_norm_in_training():
    x = np.random.default_rng(2).normal(1.0, 2.0, size=(4, 6, 5, 8)).astype("float32")
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1.001e-5)
    ours = FusedBatchNormalization(momentum=0.9, epsilon=1.001e-5)
    ref.build(x.shape)
    ours.build(x.shape)
    weights = [np.linspace(0.5, 1.5, 8), np.linspace(-1, 1, 8), np.full(8, 0.3), np.full(8, 2.0)]
    ref.set_weights(weights)
    ours.set_weights(weights)
    np.testing.assert_allclose(ours(x, training=True), ref(x, training=True), atol=1e-4)
    for a, b in zip(ours.get_weights(), ref.get_weights()):  # moving statistics updated alike
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours(x, training=False), ref(x, training=False), atol=1e-5)
    clone = FusedBatchNormalization.from_config(ours.get_config())
    assert clone.get_config() == ours.get_config()
