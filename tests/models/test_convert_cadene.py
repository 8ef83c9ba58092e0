"""Cadene's BN-Inception checkpoint -> the Inception-v2 backbone and CCAN's `backbone="inception_v2"`,
and the input-space folds of both converters checked against a NumPy conv + BN; no network, no
PyTorch (generated state dicts)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pytorch_state_dicts import (IMAGENET_MEAN, IMAGENET_STD, cadene_convs, cadene_state_dict, conv_bn,
                                 googlenet_state_dict, interior, randomize)
from tfreid.models import build_model, convert
from tfreid.models import pytorch_layouts as layouts
from tfreid.models.backbones import build_bn_inception, build_inception_v2
from tfreid.models.backbones import weights as weights_lib

SHAPE = (64, 32, 3)
WIDTH = 0.25
BN = ("weight", "bias", "running_mean", "running_var")


@pytest.fixture(scope="module")
def state():
    return cadene_state_dict(WIDTH, seed=4)


@pytest.fixture
def converted(state, tmp_path, monkeypatch, capsys):
    """The CLI's output for an .npz of `state`, written to a patched Keras cache."""
    checkpoint = tmp_path / "bn_inception.npz"
    np.savez(checkpoint, **{f"module.{k}": v for k, v in state.items()})
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert convert.main([str(checkpoint), "--no-check"]) == 0
    out = tmp_path / "keras" / "models" / weights_lib.INCEPTION_V2_FILE
    assert f"wrote {out}: Inception-v2 (Cadene's BN-Inception), 138 layers" in capsys.readouterr().out
    return out


def _images(seed, shape=SHAPE):
    return np.random.default_rng(seed).normal(size=(2, *shape)).astype("float32")


def test_every_layer_gets_cadenes_values_with_the_bias_folded(state, converted):
    model = build_inception_v2(SHAPE, width_multiplier=WIDTH, weights="imagenet")
    for name, _, _, _ in cadene_convs(WIDTH)[1:]:
        kernel, = model.get_layer(f"{name}_conv").get_weights()
        np.testing.assert_array_equal(kernel, state[f"{name}.weight"].transpose(2, 3, 1, 0), err_msg=name)
        gamma, beta, mean, var = model.get_layer(f"{name}_bn").get_weights()
        want = [state[f"{name}_bn.{k}"] for k in BN]
        want[2] = want[2] - state[f"{name}.bias"]  # BN(Wx + b) = BN with moving mean mu - b
        for got, ref in zip((gamma, beta, mean, var), want):
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-7, err_msg=name)
    assert convert.check_loads(converted, "inception_v2", width_multiplier=WIDTH) == 138


def test_cadene_input_space_is_folded_into_conv1(state, converted):
    """conv1 + BN on tfreid's input (RGB, ImageNet mean/std) equals Cadene's conv1 (with bias) +
    BN on its own input (BGR, 0..255 minus [104, 117, 128]) wherever the 7x7 window is inside
    the image; at the border the two pad different spaces with zeros."""
    model = build_inception_v2(SHAPE, width_multiplier=WIDTH, weights="imagenet")
    x = _images(5)
    got = np.asarray(keras.Model(model.input, model.get_layer("conv1_7x7_s2_bn").output)(x, training=False))
    bgr = (255.0 * (x * IMAGENET_STD + IMAGENET_MEAN))[..., ::-1] - np.array([104.0, 117.0, 128.0])
    want = conv_bn(bgr, state["conv1_7x7_s2.weight"], [state[f"conv1_7x7_s2_bn.{k}"] for k in BN],
                   stride=2, pad=3, eps=1e-5, bias=state["conv1_7x7_s2.bias"])
    rows, cols = interior(SHAPE[0]), interior(SHAPE[1])
    np.testing.assert_allclose(got[:, rows, cols], want[:, rows, cols], rtol=1e-4, atol=2e-3)
    assert np.abs(got[:, 0] - want[:, 0]).max() > 1.0  # border rows: not the same, as documented


def test_torchvision_transform_input_is_folded_into_conv1():
    keras.utils.set_random_seed(6)
    reference = randomize(build_bn_inception(SHAPE, width_multiplier=WIDTH), 6)
    state = googlenet_state_dict(reference)
    layers = layouts.googlenet_to_layers(state)
    model = build_bn_inception(SHAPE, width_multiplier=WIDTH)
    for name in ("conv1_conv", "conv1_bn"):
        model.get_layer(name).set_weights(layers[name])
    x = _images(7)
    got = np.asarray(keras.Model(model.input, model.get_layer("conv1_bn").output)(x, training=False))
    transformed = x * (IMAGENET_STD / 0.5) + (IMAGENET_MEAN - 0.5) / 0.5  # torchvision's transform_input
    want = conv_bn(transformed, state["conv1.conv.weight"], [state[f"conv1.bn.{k}"] for k in BN],
                   stride=2, pad=3, eps=1e-3)
    rows, cols = interior(SHAPE[0]), interior(SHAPE[1])
    np.testing.assert_allclose(got[:, rows, cols], want[:, rows, cols], rtol=1e-4, atol=1e-4)


def test_layout_detection_and_errors_name_the_layer(state, tmp_path, capsys):
    wrong = dict(state, **{"inception_4b_3x3_bn.running_var": np.ones(7, np.float32)})
    with pytest.raises(ValueError, match=r"'inception_4b_3x3_bn.running_var' \(layer 'inception_4b_3x3_bn'\) "
                                         r"has shape \(7,\), expected \(32,\)"):
        layouts.cadene_to_layers(wrong)
    missing = {k: v for k, v in state.items() if k != "inception_5a_pool_proj.bias"}
    with pytest.raises(ValueError, match=r"no 'inception_5a_pool_proj.bias' \(layer 'inception_5a_pool_proj_conv'\)"):
        layouts.cadene_to_layers(missing)
    with pytest.raises(ValueError, match="no backbone layer takes.*inception_6a_1x1.weight"):
        layouts.cadene_to_layers({**state, "inception_6a_1x1.weight": np.zeros((1, 1, 1, 1))})
    with pytest.raises(ValueError, match="neither torchvision GoogLeNet's .* nor Cadene"):
        layouts.detect_layout({"features.0.weight": np.zeros(1)})
    # a kernel of other input width converts, and loading names the layer
    other = dict(state, **{"inception_4a_1x1.weight": np.zeros((56, 100, 1, 1), np.float32)})
    path = convert.write_layer_weights(layouts.cadene_to_layers(other), tmp_path / "other.h5")
    with pytest.raises(ValueError, match=r"layer 'inception_4a_1x1_conv' expects weight shapes"):
        convert.check_loads(path, "inception_v2", width_multiplier=WIDTH)
    np.savez(tmp_path / "wrong.npz", **wrong)
    assert convert.main([str(tmp_path / "wrong.npz"), "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "inception_4b_3x3_bn" in err[0]


def test_imagenet_without_converted_file_names_cadenes_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"Inception-v2.*tfreid_inception_v2_imagenet.weights.h5.*"
                                                r"python -m tfreid.models.convert bn_inception-52deb4733.pth"):
        build_inception_v2(SHAPE, width_multiplier=WIDTH, weights="imagenet")
    with pytest.raises(FileNotFoundError, match="convert googlenet-1378be20.pth"):
        build_model("ccan", 4, input_shape=SHAPE, backbone_weights="imagenet")  # the default backbone


def test_train_cli_resolves_imagenet_by_ccans_backbone(tmp_path, monkeypatch, capsys):
    from tfreid.train import main

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    code = main(["--model", "ccan", "--set", "model.kwargs.backbone=inception_v2", "--backbone-weights",
                 "imagenet", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "convert bn_inception-52deb4733.pth" in err[0]
    code = main(["--model", "ccan", "--set", "model.kwargs.backbone=resnet", "--output", str(tmp_path / "r2")])
    assert code == 2 and "backbone='resnet'" in capsys.readouterr().err


@pytest.mark.slow  # a small CCAN with two part streams, built and trained one step (~30 s)
def test_ccan_inception_v2_loads_imagenet_into_every_copy_and_trains(state, converted):
    model = build_model("ccan", 4, input_shape=SHAPE, width_multiplier=WIDTH, feature_dim=16, num_parts=2,
                        backbone="inception_v2", backbone_weights="imagenet")
    reference = build_inception_v2(SHAPE, width_multiplier=WIDTH, weights=str(converted))
    units = [name for name, _, _, _ in cadene_convs(WIDTH)]
    late = [u for u in units if u.startswith(("inception_3c", "inception_4", "inception_5"))]
    for prefix, names in (("", units), ("part1_", late), ("part2_", late)):
        for name in (f"{u}_{kind}" for u in names for kind in ("conv", "bn")):
            for got, want in zip(model.get_layer(prefix + name).get_weights(), reference.get_layer(name).get_weights()):
                np.testing.assert_array_equal(got, want, err_msg=prefix + name)
    assert model.get_layer("ss1").input.shape[-1] == 80  # level 1: 320 channels x 0.25
    assert model.get_layer("part1_cc").input[0].shape[-1] == 152  # level 2: 608 x 0.25

    images, labels = _images(8), np.array([0, 3])
    out = model(images, training=False)
    assert out["attention/ss_1"].shape == (2, 8, 4, 1) and out["attention/cc_1"].shape == (2, 4, 2, 1)
    assert out["embedding"].shape == (2, 32)
    before = [np.asarray(v) for v in model.trainable_variables]
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        o = model(images, training=True)
        loss = ce(labels, o["logits/global"]) + ce(labels, o["logits/local"])
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads) and np.isfinite(float(loss))
    keras.optimizers.Adam(1e-3).apply_gradients(zip(grads, model.trainable_variables))
    changed = {v.path for v, b in zip(model.trainable_variables, before) if not np.array_equal(np.asarray(v), b)}
    for layer in ("conv1_7x7_s2_conv", "part2_inception_5b_pool_proj_conv", "part1_cc", "fc_local"):
        assert any(p.startswith(f"{layer}/") for p in changed), layer


def test_ccan_backbone_option_errors():
    with pytest.raises(ValueError, match=r"`branch3_kernel`.*only to backbone='googlenet_bn', received "
                                         r"branch3_kernel=3 with backbone='inception_v2'"):
        build_model("ccan", 4, backbone="inception_v2", branch3_kernel=3)
    with pytest.raises(ValueError, match=r"`backbone` must be one of 'googlenet_bn', 'inception_v2', "
                                         r"received backbone='bn_inception'"):
        build_model("ccan", 4, backbone="bn_inception")
    assert weights_lib.model_backbone("ccan", {"backbone": "inception_v2"}) == "inception_v2"
    assert weights_lib.model_backbone("ccan", {}) == "bn_inception"
    assert weights_lib.model_backbone("hacnn", {}) is None
