"""Shared fixtures: the export tests' tiny HA-CNN run and its synthetic Market-format data."""

from tests.export.conftest import tiny_data, tiny_run  # noqa: F401  (fixtures)
