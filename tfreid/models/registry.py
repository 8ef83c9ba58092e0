"""Model registry: `build_model(name, num_classes, **overrides)` and friends (DESIGN.md §3)."""

from __future__ import annotations

from typing import Callable

import keras

from tfreid.checks import check_int

_BUILDERS: dict[str, Callable[..., keras.Model]] = {}
_SMALL: dict[str, dict] = {}


def register_model(name: str, small: dict | None = None):
    """Decorator registering a functional builder `fn(num_classes, **kw) -> keras.Model`.

    `small` holds builder overrides giving the same graph (every layer type, branch and output)
    at a fraction of the width/resolution: what tests, smoke runs and export checks build when
    the full model would cost minutes on a CPU.
    """

    def decorator(builder):
        _BUILDERS[name] = builder
        _SMALL[name] = dict(small or {})
        return builder

    return decorator


def small_overrides(name: str) -> dict:
    """The overrides registered as `small` for model `name` (see `register_model`)."""
    _import_builtin_models()
    if name not in _BUILDERS:
        raise ValueError(
            f"Unknown model {name!r}; available models: {', '.join(sorted(_BUILDERS))}"
        )
    return dict(_SMALL[name])


def available_models() -> list[str]:
    _import_builtin_models()
    return sorted(_BUILDERS)


def build_model(name: str, num_classes: int, **overrides) -> keras.Model:
    """Build model `name` with a classifier over `num_classes` identities.

    The model's outputs are a dict that always holds `"embedding"`, the inference feature as the
    paper defines it, plus the training heads under stable keys (`"logits/global"`, ...).
    """
    _import_builtin_models()
    if name not in _BUILDERS:
        raise ValueError(
            f"Unknown model {name!r}; available models: {', '.join(sorted(_BUILDERS))}"
        )
    check_int("num_classes", num_classes)
    return _BUILDERS[name](num_classes, **overrides)


def embedding_model(model: keras.Model) -> keras.Model:
    """A model mapping images to the `"embedding"` output only (shares weights with `model`)."""
    outputs = model.output
    if not isinstance(outputs, dict) or "embedding" not in outputs:
        raise ValueError(
            f"model {model.name!r} has no 'embedding' output; outputs are {outputs!r}"
        )
    return keras.Model(model.input, outputs["embedding"], name=f"{model.name}_embedding")


def _import_builtin_models():
    # Builders register themselves on import; imported lazily to keep `import tfreid` light.
    from tfreid.models import hacnn  # noqa: F401
    from tfreid.models import ccan  # noqa: F401
    from tfreid.models import can  # noqa: F401
    from tfreid.models import aanet  # noqa: F401
    from tfreid.models import adfl  # noqa: F401
