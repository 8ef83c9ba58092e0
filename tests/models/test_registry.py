"""The model registry: which models exist, how unknown names fail, how a model is added."""

import pytest

from tfreid import config as config_lib
from tfreid.models import available_models, build_model, register_model, small_overrides


def test_the_built_in_models_are_found_without_a_list():
    """Every module of tfreid/models registers itself (baseline in its own module) and has its
    default recipe in tfreid/recipes."""
    from tfreid.models import registry

    assert available_models() == ["aanet", "adfl", "baseline", "can", "ccan", "hacnn"]
    assert {name: registry._BUILDERS[name].__module__ for name in ("adfl", "baseline")} == {
        "adfl": "tfreid.models.adfl", "baseline": "tfreid.models.baseline"}
    for name in available_models():
        assert config_lib.recipe_path(name) == config_lib.RECIPES_DIR / f"{name}.yaml"


def test_unknown_names_list_the_available_models():
    for call in (lambda: build_model("nope", 3), lambda: small_overrides("nope")):
        with pytest.raises(ValueError, match="Unknown model 'nope'; available models: aanet, adfl, "
                                             "baseline, can, ccan, hacnn"):
            call()
    with pytest.raises(ValueError, match="`num_classes` must be a positive integer"):
        build_model("hacnn", 0)


def test_small_overrides_are_copies():
    small = small_overrides("hacnn")
    small["feature_dim"] = 1
    assert small_overrides("hacnn")["feature_dim"] == 64


def test_a_recipe_passed_at_registration_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        register_model("ghost", recipe=tmp_path / "missing.yaml")(lambda num_classes: None)
    assert "ghost" not in available_models()
