"""Model registry: `build_model(name, num_classes, **overrides)` and friends.

A model is one module in `tfreid/models/` whose builder is decorated with `register_model`, plus
its default recipe `tfreid/recipes/<name>.yaml`; every module of this package is imported on
first use, so nothing else lists the models.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Callable

import keras

from tfreid import config as config_lib
from tfreid.checks import check_int

_BUILDERS: dict[str, Callable[..., keras.Model]] = {}
_SMALL: dict[str, dict] = {}


def register_model(name: str, small: dict | None = None, recipe=None):
    """Decorator registering a functional builder `fn(num_classes, **kw) -> keras.Model`.

    Args:
        name: the model's name (`build_model(name, ...)`, `--model name`).
        small: builder overrides giving the same graph (every layer type, branch and output)
            at a fraction of the width/resolution: what tests, smoke runs and export checks
            build when the full model would cost minutes on a CPU.
        recipe: the default recipe's YAML file, for a model registered outside tfreid (built-in
            models use `tfreid/recipes/<name>.yaml`).
    """

    def decorator(builder):
        if recipe is not None:
            config_lib.register_recipe(name, recipe)
        _BUILDERS[name] = builder
        _SMALL[name] = dict(small or {})
        return builder

    return decorator


def _check_name(name: str) -> None:
    _import_builtin_models()
    if name not in _BUILDERS:
        raise ValueError(
            f"Unknown model {name!r}; available models: {', '.join(sorted(_BUILDERS))}"
        )


def small_overrides(name: str) -> dict:
    """The overrides registered as `small` for model `name` (see `register_model`)."""
    _check_name(name)
    return dict(_SMALL[name])


def available_models() -> list[str]:
    _import_builtin_models()
    return sorted(_BUILDERS)


def build_model(name: str, num_classes: int, **overrides) -> keras.Model:
    """Build model `name` with a classifier over `num_classes` identities.

    The model's outputs are a dict that always holds `"embedding"`, the inference feature as the
    paper defines it, plus the training heads under stable keys (`"logits/global"`, ...).
    """
    check_overrides(name, overrides)
    check_int("num_classes", num_classes)
    return _BUILDERS[name](num_classes, **overrides)


def check_overrides(name: str, overrides: dict) -> None:
    """ValueError unless model `name` exists and its builder takes every key of `overrides`
    (cheap: configs are checked before any model is built)."""
    _check_name(name)
    params = inspect.signature(_BUILDERS[name]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(overrides) - set(params) - {"num_classes"})
    if unknown:
        accepted = [p for p in params if p != "num_classes"]
        raise ValueError(f"model {name!r} has no option {unknown[0]!r} (model.kwargs); its "
                         f"options: {', '.join(accepted)}")


def embedding_model(model: keras.Model) -> keras.Model:
    """A model mapping images to the `"embedding"` output only (shares weights with `model`)."""
    outputs = model.output
    if not isinstance(outputs, dict) or "embedding" not in outputs:
        raise ValueError(
            f"model {model.name!r} has no 'embedding' output; outputs are {outputs!r}"
        )
    return keras.Model(model.input, outputs["embedding"], name=f"{model.name}_embedding")


_imported = False


def _import_builtin_models():
    # Builders register themselves on import; imported lazily to keep `import tfreid` light.
    global _imported
    if _imported:
        return
    import tfreid.models as package

    for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
        importlib.import_module(module.name)
    _imported = True
