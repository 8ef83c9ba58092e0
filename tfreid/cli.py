"""Shared exit path of the `python -m tfreid.*` commands: bad input -> one `error:` line, exit 2.

Bad input is a ``ValueError`` (wrong value or type), an ``OSError`` (missing, unreadable or
existing file) or a pipeline bad-image assertion (`tfreid.data.pipeline.as_bad_image_error`).
Anything else is a bug and keeps its traceback. ``TFREID_DEBUG=1`` re-raises bad input too.

Example:
    >>> def main(argv=None) -> int:
    ...     return run_cli(_main, parse_args(argv))
"""

from __future__ import annotations

import os
import sys
from typing import Callable

__all__ = ["run_cli"]


def run_cli(fn: Callable[..., int], *args) -> int:
    """``fn(*args)``, or 2 after one ``error: ...`` line on stderr when the input was bad."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - anything that is not bad input is re-raised
        bad = _bad_input(err)
        if bad is None or os.environ.get("TFREID_DEBUG"):
            raise
        lines = str(bad).strip().splitlines()
        print(f"error: {lines[0] if lines else type(bad).__name__}", file=sys.stderr)
        return 2


def _bad_input(err: Exception) -> Exception | None:
    if isinstance(err, (ValueError, OSError)):
        return err
    if "tensorflow" in sys.modules:  # a bad-image assertion from inside a tf.data pipeline
        from tfreid.data.pipeline import as_bad_image_error

        return as_bad_image_error(err)
    return None
