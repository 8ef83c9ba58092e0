"""`backbone_weights: imagenet` and the BN-Inception converter, without the network: weight files
are generated here, Keras's download is patched, and every backbone weight is compared by value."""

import urllib.error

import keras
import numpy as np
import pytest

from pytorch_state_dicts import googlenet_state_dict as _torch_state_dict
from pytorch_state_dicts import randomize as _randomize
from tfreid.models import build_model
from tfreid.models.backbones import build_bn_inception, load_backbone_weights
from tfreid.models.backbones import weights as weights_lib
from tfreid.models import convert
from tfreid.models import pytorch_layouts as layouts
from tfreid.models.pytorch_layouts import expected_layers

SHAPE = (64, 32, 3)
# conv1 carries torchvision's transform_input folded in (test_convert_cadene.py checks it)
UNFOLDED = [name for name in expected_layers() if not name.startswith("conv1_")]


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
    assert f"wrote {out}: BN-Inception (GoogLeNet v1 + BN), {len(expected_layers())} layers" \
        in capsys.readouterr().out
    fresh = build_bn_inception(SHAPE, width_multiplier=0.25, weights="imagenet")
    _assert_same(fresh, small_googlenet, UNFOLDED)
    assert convert.check_loads(out, width_multiplier=0.25) == len(expected_layers())


@pytest.mark.slow  # a small CCAN with two part streams (~20 s)
def test_ccan_imagenet_fills_global_and_part_copies(small_googlenet, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    convert.write_layer_weights(layouts.googlenet_to_layers(_torch_state_dict(small_googlenet)),
                                tmp_path / "models" / weights_lib.BN_INCEPTION_FILE)
    model = build_model("ccan", 4, input_shape=SHAPE, width_multiplier=0.25, feature_dim=16,
                        num_parts=2, backbone_weights="imagenet")
    _assert_same(model, small_googlenet, UNFOLDED)
    for part in ("part1_", "part2_"):
        _assert_same(model, small_googlenet, [n for n in UNFOLDED if n.startswith(("inception4", "inception5"))], part)


def test_converter_errors_name_the_layer(small_googlenet, tmp_path, capsys):
    state = _torch_state_dict(small_googlenet)
    broken = dict(state)
    del broken["inception4c.branch3.1.bn.running_var"]
    with pytest.raises(ValueError, match=r"inception4c\.branch3\.1\.bn\.running_var.*inception4c_branch3_1_bn"):
        layouts.googlenet_to_layers(broken)
    with pytest.raises(ValueError, match="no backbone layer takes.*conv1_7x7_s2.weight"):
        layouts.googlenet_to_layers({"conv1_7x7_s2.weight": np.zeros((64, 3, 7, 7)), **state})
    with pytest.raises(ValueError, match="no backbone layer takes.*extra.layer.weight"):
        layouts.googlenet_to_layers({**state, "extra.layer.weight": np.zeros(3)})
    assert convert.main([str(tmp_path / "missing.pth")]) == 2
    assert capsys.readouterr().err.startswith("error: checkpoint ")


def test_loading_a_file_of_other_widths_or_missing_layers_names_the_layer(small_googlenet, tmp_path):
    layers = layouts.googlenet_to_layers(_torch_state_dict(small_googlenet))
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
    _assert_same(fresh, small_googlenet, UNFOLDED)


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
