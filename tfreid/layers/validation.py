"""Argument checks shared by tfreid layers and model builders (DESIGN.md §6: a bad argument
raises ValueError naming the argument and the received value)."""

from __future__ import annotations

import numbers


def check_positive_int(name: str, value) -> int:
    """`value` as an int if it is an integer >= 1 (bools rejected), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, received {name}={value!r}.")
    return int(value)


def check_bool(name: str, value) -> bool:
    """`value` if it is a Python bool, else ValueError."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a bool, received {name}={value!r}.")
    return value
