"""`backbone_weights: imagenet` and the BN-Inception converter, without the network: weight files
are generated here, Keras's download is patched, and every backbone weight is compared by value."""

import urllib.error

import keras
import numpy as np
import pytest

from tfreid.models import build_model
from tfreid.models.backbones import build_bn_inception, load_backbone_weights
from tfreid.models.backbones import weights as weights_lib
from tfreid.models import convert

SHAPE = (64, 32, 3)


def _randomize(model, seed):
    rng = np.random.default_rng(seed)
    for var in model.weights:
        low = 0.5 if "variance" in var.path or "gamma" in var.path else -0.5
        var.assign(rng.uniform(low, 1.0, var.shape).astype("float32"))
    return model


def _assert_same(model, reference, layer_names, prefix=""):
    for name in layer_names:
        want = reference.get_layer(name).get_weights()
        got = model.get_layer(prefix + name).get_weights()
        assert len(got) == len(want) > 0, name
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w, err_msg=prefix + name)


def test_url_and_hash_are_keras_applications():
    from keras.src.applications import resnet

    assert weights_lib.RESNET50_URL == resnet.BASE_WEIGHTS_PATH + weights_lib.RESNET50_FILE
    assert weights_lib.RESNET50_HASH == resnet.WEIGHTS_HASHES["resnet50"][1]


@pytest.fixture(scope="module")
def keras_imagenet_file(tmp_path_factory):
    """A Keras legacy-HDF5 ResNet-50 notop file (as Keras's ImageNet file), random values."""
    keras.utils.set_random_seed(5)
    app = _randomize(keras.applications.ResNet50(weights=None, include_top=False, input_shape=SHAPE), 5)
    path = tmp_path_factory.mktemp("keras-cache") / weights_lib.RESNET50_FILE
    app.save(str(path))
    return app, str(path)


@pytest.mark.slow  # a full-width ResNet-50 built twice (~15 s)
def test_imagenet_resnet50_fetched_through_keras_and_loaded_by_name(keras_imagenet_file, monkeypatch):
    app, path = keras_imagenet_file
    calls = []

    def fake_get_file(fname, origin, **kwargs):
        calls.append((fname, origin, kwargs))
        return path

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    model = build_model("baseline", 4, input_shape=SHAPE, backbone_weights="imagenet")
    assert calls == [(weights_lib.RESNET50_FILE, weights_lib.RESNET50_URL,
                      {"cache_subdir": "models", "file_hash": weights_lib.RESNET50_HASH})]
    backbone = [layer.name for layer in app.layers if layer.weights]
    assert len(backbone) == 106  # 53 convs + 53 BNs: every one of them compared
    _assert_same(model, app, backbone)


def test_imagenet_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(file_utils, "urlretrieve", offline)  # Keras's real get_file runs
    with pytest.raises(FileNotFoundError) as info:
        weights_lib.resolve_backbone_weights("imagenet", "resnet50")
    message = str(info.value)
    assert str(tmp_path / "models" / weights_lib.RESNET50_FILE) in message
    assert weights_lib.RESNET50_URL in message and "model.backbone_weights" in message


def test_train_cli_offline_imagenet_is_one_error_line(tmp_path, monkeypatch, capsys):
    from keras.src.utils import file_utils

    from tfreid.train import main

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "urlretrieve", lambda *a, **k: (_ for _ in ()).throw(
        urllib.error.URLError("offline")))
    code = main(["--config", "configs/adfl_market1501.yaml", "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: cannot fetch the ImageNet ResNet-50 weights")
    code = main(["--model", "hacnn", "--backbone-weights", "imagenet", "--output", str(tmp_path / "r2")])
    assert code == 2 and "has no ImageNet backbone" in capsys.readouterr().err


def test_bn_inception_imagenet_without_converted_file_names_the_converter(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="python -m tfreid.models.convert"):
        build_bn_inception(SHAPE, width_multiplier=0.25, weights="imagenet")


# ----------------------------------------------------------------------------- converter
def _torch_state_dict(backbone) -> dict[str, np.ndarray]:
    """`backbone`'s weights as torchvision's GoogLeNet state dict ([out, in, kh, kw] kernels),
    plus the auxiliary classifiers and fc a real checkpoint carries."""
    state = {}
    for layer in convert.expected_layers():
        prefix = convert._torch_prefix(layer)
        arrays = backbone.get_layer(layer).get_weights()
        if layer.endswith("_conv"):
            state[prefix + "weight"] = arrays[0].transpose(3, 2, 0, 1).copy()
        else:
            for name, array in zip(("weight", "bias", "running_mean", "running_var"), arrays):
                state[prefix + name] = array
            state[prefix + "num_batches_tracked"] = np.array(7)
    state["aux1.fc1.weight"] = np.zeros((4, 4), np.float32)
    state["fc.weight"], state["fc.bias"] = np.zeros((10, 8), np.float32), np.zeros(10, np.float32)
    return state


@pytest.fixture(scope="module")
def small_googlenet():
    keras.utils.set_random_seed(2)
    return _randomize(build_bn_inception(SHAPE, width_multiplier=0.25), 2)


def test_converter_maps_every_layer_and_the_ccan_imagenet_option_loads_it(
        small_googlenet, tmp_path, monkeypatch, capsys):
    checkpoint = tmp_path / "googlenet.npz"
    np.savez(checkpoint, **{f"module.{k}": v for k, v in _torch_state_dict(small_googlenet).items()})
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    assert convert.main([str(checkpoint), "--no-check"]) == 0  # default: Keras's cache
    out = tmp_path / "keras" / "models" / weights_lib.BN_INCEPTION_FILE
    assert f"wrote {out}: {len(convert.expected_layers())} layers" in capsys.readouterr().out
    fresh = build_bn_inception(SHAPE, width_multiplier=0.25, weights="imagenet")
    _assert_same(fresh, small_googlenet, convert.expected_layers())
    assert convert.check_loads(out, width_multiplier=0.25) == len(convert.expected_layers())


@pytest.mark.slow  # a small CCAN with two part streams (~20 s)
def test_ccan_imagenet_fills_global_and_part_copies(small_googlenet, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    convert.write_layer_weights(convert.googlenet_to_layers(_torch_state_dict(small_googlenet)),
                                tmp_path / "models" / weights_lib.BN_INCEPTION_FILE)
    model = build_model("ccan", 4, input_shape=SHAPE, width_multiplier=0.25, feature_dim=16,
                        num_parts=2, backbone_weights="imagenet")
    names = convert.expected_layers()
    _assert_same(model, small_googlenet, names)
    for part in ("part1_", "part2_"):
        _assert_same(model, small_googlenet, [n for n in names if n.startswith(("inception4", "inception5"))], part)


def test_converter_errors_name_the_layer(small_googlenet, tmp_path, capsys):
    state = _torch_state_dict(small_googlenet)
    broken = dict(state)
    del broken["inception4c.branch3.1.bn.running_var"]
    with pytest.raises(ValueError, match=r"inception4c\.branch3\.1\.bn\.running_var.*inception4c_branch3_1_bn"):
        convert.googlenet_to_layers(broken)
    with pytest.raises(ValueError, match="Cadene's BN-Inception.*googlenet-1378be20.pth"):
        convert.googlenet_to_layers({"conv1_7x7_s2.weight": np.zeros((64, 3, 7, 7)), **state})
    with pytest.raises(ValueError, match="no backbone layer takes.*extra.layer.weight"):
        convert.googlenet_to_layers({**state, "extra.layer.weight": np.zeros(3)})
    assert convert.main([str(tmp_path / "missing.pth")]) == 2
    assert capsys.readouterr().err.startswith("error: checkpoint ")


def test_loading_a_file_of_other_widths_or_missing_layers_names_the_layer(small_googlenet, tmp_path):
    layers = convert.googlenet_to_layers(_torch_state_dict(small_googlenet))
    path = convert.write_layer_weights(layers, tmp_path / "small.h5")
    wider = build_bn_inception(SHAPE, width_multiplier=0.5)
    with pytest.raises(ValueError, match=r"layer 'conv1_conv' expects weight shapes"):
        load_backbone_weights(wider, str(path), backbone="bn_inception")
    del layers["inception5a_branch2_0_bn"]
    partial = convert.write_layer_weights(layers, tmp_path / "partial.h5")
    with pytest.raises(ValueError, match=r"no weights for backbone layer 'inception5a_branch2_0_bn'"):
        load_backbone_weights(build_bn_inception(SHAPE, width_multiplier=0.25), str(partial),
                              backbone="bn_inception")


def test_pth_checkpoint_through_torch(small_googlenet, tmp_path):
    torch = pytest.importorskip("torch")  # the optional [torch] extra
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _torch_state_dict(small_googlenet).items()}
    torch.save({"state_dict": state}, tmp_path / "googlenet.pth")
    out = tmp_path / "bn.h5"
    assert convert.main([str(tmp_path / "googlenet.pth"), "--out", str(out), "--no-check"]) == 0
    fresh = build_bn_inception(SHAPE, width_multiplier=0.25, weights=str(out))
    _assert_same(fresh, small_googlenet, convert.expected_layers())


def test_paper_recipes_start_from_imagenet_where_the_paper_does():
    import pathlib

    from tfreid.config import resolve

    repo = pathlib.Path(__file__).resolve().parents[2]
    got = {p.stem: resolve(None, str(p), {}, []).model.backbone_weights
           for p in sorted((repo / "configs").glob("*.yaml"))}
    assert got == {"aanet_market1501": "imagenet", "adfl_market1501": "imagenet",
                   "baseline_market1501": "imagenet", "can_market1501": None,  # paper silent
                   "ccan_cuhk03": "imagenet", "ccan_market1501": "imagenet",
                   "hacnn_market1501": None, "hacnn_market1501_sgd": None}  # from scratch
