"""Models, one module per paper, behind one registry (DESIGN.md §3)."""

from tfreid.models.registry import (
    available_models,
    build_model,
    embedding_model,
    register_model,
    small_overrides,
)

__all__ = ["available_models", "build_model", "embedding_model", "register_model", "small_overrides"]
