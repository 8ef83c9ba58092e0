"""Argument checks shared by the whole package (plain Python: no TensorFlow, Keras or NumPy).

Every check returns the value in its normalised form or raises ``ValueError`` naming the
argument (a function argument such as ``units`` or a config key such as ``data.p``) and the
received value.

Example:
    >>> check_int("data.p", 16)
    16
    >>> check_input_shape([160, 64, 3])
    (160, 64, 3)
"""

from __future__ import annotations

import numbers

__all__ = ["check_bool", "check_choice", "check_input_shape", "check_int", "check_int_tuple", "check_positive_int",
           "check_worker_hosts", "math_dtype"]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value, minimum: int = 1, *, allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` if it is an integer >= ``minimum`` (bools rejected).

    Args:
        name: the argument's name, for the message.
        value: the value to check.
        minimum: the smallest accepted value. Default 1 (a positive integer).
        allow_none: accept (and return) ``None``.

    Returns:
        ``int(value)``, or ``None``.
    """
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {kind}{' or None' if allow_none else ''}, "
                         f"received {name}={value!r}.")
    return int(value)


def check_positive_int(name: str, value) -> int:
    """``value`` as an ``int`` if it is an integer >= 1 (bools rejected)."""
    return check_int(name, value)


def check_bool(name: str, value) -> bool:
    """``value`` if it is a Python ``bool``."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a bool, received {name}={value!r}.")
    return value


def check_choice(name: str, value, choices: tuple):
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{name}` must be {' or '.join(map(repr, choices))}, received {name}={value!r}.")
    return value


def check_int_tuple(name: str, value, length: int | None = None) -> tuple[int, ...]:
    """``value`` as a tuple of positive ints (of ``length`` items when given, else >= 1)."""
    try:
        items = tuple(value)
    except TypeError:
        items = None
    ok = items is not None and (length is None or len(items) == length) and len(items) > 0
    if not ok or not all(_is_int(v) and v > 0 for v in items):
        count = f"{length} " if length else ""
        raise ValueError(f"`{name}` must be a tuple of {count}positive integers, received "
                         f"{name}={value!r}.")
    return tuple(int(v) for v in items)


def check_input_shape(input_shape) -> tuple[int, int, int]:
    """A model's image input shape ``(H, W, 3)`` as a tuple of ints."""
    try:
        shape = check_int_tuple("input_shape", input_shape, 3)
    except ValueError:
        shape = None
    if shape is None or shape[-1] != 3:
        raise ValueError("`input_shape` must be (H, W, 3) with positive integers, received "
                         f"input_shape={input_shape!r}.")
    return shape


def check_worker_hosts(worker_hosts, task_index, hosts_name: str = "worker_hosts",
                       index_name: str = "task_index") -> list[str] | None:
    """A multi-worker cluster given as a ``host:port`` list and this worker's position in it.

    Args:
        worker_hosts: ``"host:port,host:port"`` or a list of ``"host:port"`` strings, or None.
        task_index: this worker's position in the list, or None.
        hosts_name, index_name: the arguments' names, for the messages.

    Returns:
        The host list (stripped), or None when both arguments are None (no cluster).

    Raises:
        ValueError: only one of the two is given, the list is empty, an entry is not
            ``host:port`` or appears twice, or ``task_index`` is not a position in the list.
    """
    if (worker_hosts is None) != (task_index is None):
        raise ValueError(f"`{hosts_name}` and `{index_name}` must be given together, received "
                         f"{hosts_name}={worker_hosts!r}, {index_name}={task_index!r}.")
    if worker_hosts is None:
        return None
    hosts = worker_hosts.split(",") if isinstance(worker_hosts, str) else worker_hosts
    if not isinstance(hosts, (list, tuple)) or not hosts:
        raise ValueError(f"`{hosts_name}` must be 'host:port,host:port,...' or a non-empty list "
                         f"of 'host:port', received {worker_hosts!r}.")
    hosts = [str(h).strip() for h in hosts]
    for entry in hosts:
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"`{hosts_name}`: {entry!r} is not of the form host:port (received "
                             f"{worker_hosts!r}).")
    if len(set(hosts)) != len(hosts):
        raise ValueError(f"`{hosts_name}` lists a host:port twice, received {worker_hosts!r}.")
    if not _is_int(task_index) or not 0 <= task_index < len(hosts):
        raise ValueError(f"`{index_name}` must be an integer in [0, {len(hosts) - 1}] (a "
                         f"position in {hosts_name}), received {task_index!r}.")
    return hosts


def math_dtype(compute_dtype) -> str:
    """The dtype sums, dot products and softmaxes run in: float32 under a mixed-precision
    policy (float16 overflows, and both half types lose all precision, over hundreds of terms),
    else the compute dtype itself (float32, or float64 in gradient checks)."""
    name = getattr(compute_dtype, "name", compute_dtype)
    return "float32" if name in ("float16", "bfloat16") else name
