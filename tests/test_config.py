import pathlib

import pytest

from tfreid import config as config_lib


def test_defaults_resolve_to_hacnn_recipe():
    cfg = config_lib.resolve("hacnn", None, {}, [])
    assert cfg.model.name == "hacnn"
    assert (cfg.data.height, cfg.data.width) == (160, 64)
    assert [t.output for t in cfg.losses] == ["logits/global", "logits/local"]
    assert (cfg.data.p, cfg.data.k, cfg.batch_size) == (16, 4, 64)
    assert config_lib.resolve("hacnn", None, {}, ["data.p=3", "data.k=5"]).batch_size == 15


def test_default_recipes_are_the_packaged_yaml_files():
    """Each model's defaults are its YAML file in tfreid/recipes (shipped as package data), over
    the schema's defaults; a model without a recipe has no loss terms and is rejected."""
    import configparser

    from tfreid.models import available_models

    for name in available_models():
        path = config_lib.recipe_path(name)
        assert path == config_lib.RECIPES_DIR / f"{name}.yaml", name
        recipe = config_lib.load_yaml(path)
        resolved = config_lib.resolve(name, None, {}, []).to_dict()
        assert resolved["model"]["name"] == name
        for section, values in recipe.items():
            if isinstance(values, dict):
                assert {k: resolved[section][k] for k in values} == values, (name, section)
        assert [t["output"] for t in resolved["losses"]] == [t["output"] for t in recipe["losses"]]
    assert config_lib.recipe_path("nope") is None
    with pytest.raises(ValueError, match="no loss terms"):
        config_lib.resolve("nope", None, {}, [])
    setup = configparser.ConfigParser()
    setup.read(pathlib.Path(__file__).parents[1] / "setup.cfg")
    assert "recipes/*.yaml" in setup["options.package_data"]["tfreid"]


def test_resolution_order_yaml_then_flags_then_set(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("optim: {lr: 0.1, name: sgd}\ndata: {p: 4, k: 2}\ntrain: {epochs: 7}\n")
    cfg = config_lib.resolve("hacnn", str(path), {"train": {"epochs": 9}}, ["optim.lr=0.5", "data.k=8"])
    assert cfg.optim.name == "sgd"
    assert cfg.optim.lr == 0.5  # --set beats the file
    assert cfg.train.epochs == 9  # flags beat the file
    assert (cfg.data.p, cfg.data.k) == (4, 8)


def test_round_trip_through_yaml(tmp_path):
    cfg = config_lib.resolve("hacnn", None, {}, ["optim.milestones=[2, 4]"])
    cfg.dump(tmp_path / "c.yaml")
    again = config_lib.from_dict(config_lib.load_yaml(tmp_path / "c.yaml"))
    assert again == cfg


@pytest.mark.parametrize("override, message", [
    (["data.batch_size=30"], r"is not P\*K"),
    (["optim.name=rmsprop"], "optim.name must be one of"),
    (["data.p=0"], "`data.p` must be a positive integer"),
    (["train.replicas=3"], "must divide evenly"),
    (["data.on_bad_image=ignore"], "data.on_bad_image"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        config_lib.resolve("hacnn", None, {}, override)


def test_unknown_key_is_rejected_with_its_path(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("optim: {learning_rate: 0.1}\n")
    with pytest.raises(ValueError, match=r"unknown key 'optim.learning_rate'.*typo.yaml|typo.yaml.*'optim.learning_rate'"):
        config_lib.resolve("hacnn", str(path), {}, [])


def test_override_syntax_errors():
    with pytest.raises(ValueError, match="key=value"):
        config_lib.parse_overrides(["optim.lr"])
    assert config_lib.parse_overrides(["a.b=[1, 2]", "c=null"]) == {"a": {"b": [1, 2]}, "c": None}


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        config_lib.resolve("hacnn", "nope.yaml", {}, [])
