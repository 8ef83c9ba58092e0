"""Models, one module per paper, behind one registry (`build_model`, `available_models`)."""

from tfreid.models.registry import (
    available_models,
    build_model,
    embedding_model,
    register_model,
    small_overrides,
)

__all__ = ["available_models", "build_model", "embedding_model", "register_model", "small_overrides"]
