"""Dataset registry: `build_dataset(name, root=None, **kw)`, `available_datasets()`,
`register_dataset(name)`.

A loader is a callable `loader(root, **kw) -> ReIDDataset`. Loaders live in sibling modules
and register themselves on import.
"""

from __future__ import annotations

from typing import Callable

from tfreid.data.datasets.base import ReIDDataset, Sample, check_inside_root, relabel

_LOADERS: dict[str, Callable[..., ReIDDataset]] = {}


def register_dataset(name: str):
    """Decorator registering `loader(root, **kw) -> ReIDDataset` under `name`."""

    def decorator(loader):
        _LOADERS[name] = loader
        return loader

    return decorator


def available_datasets() -> list[str]:
    _import_builtin_loaders()
    return sorted(_LOADERS)


def build_dataset(name: str, root: str | None = None, allow_outside_root: bool = False,
                  **kwargs) -> ReIDDataset:
    """Load dataset `name` from `root` (see each loader for its layout and options).

    Every image path must resolve inside the dataset folder (``..`` in a list file or a symlink
    leading elsewhere is an error) unless `allow_outside_root` is True.
    """
    _import_builtin_loaders()
    if name not in _LOADERS:
        raise ValueError(
            f"Unknown dataset {name!r}; available datasets: {', '.join(sorted(_LOADERS))}"
        )
    if not isinstance(allow_outside_root, bool):
        raise ValueError(f"allow_outside_root must be true or false, got {allow_outside_root!r}")
    dataset = _LOADERS[name](root, **kwargs)
    if not allow_outside_root:
        check_inside_root(dataset)
    return dataset


def _import_builtin_loaders():
    # Imported lazily so that `tfreid.data.datasets.base` stays importable on its own.
    from tfreid.data.datasets import (  # noqa: F401
        cuhk03,
        dukemtmc,
        market1501,
        msmt17,
        custom,
        synthetic,
    )


__all__ = [
    "ReIDDataset",
    "Sample",
    "available_datasets",
    "build_dataset",
    "register_dataset",
    "relabel",
]
