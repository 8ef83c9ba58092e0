"""What every `python -m tfreid.*` command shares: help with defaults, `--quiet`, a quiet
TensorFlow start-up, and one exit path for bad input (one `error:` line, exit status 2).

Bad input is a ``ValueError`` (wrong value or type), an ``OSError`` (missing, unreadable or
existing file), an ``ImportError`` (a missing optional extra) or a pipeline bad-image
assertion (`tfreid.data.pipeline.as_bad_image_error`).
Anything else is a bug and keeps its traceback; ``TFREID_DEBUG=1`` re-raises bad input too.
Imports nothing heavy (no TensorFlow), so `--help` answers at once.

Example:
    >>> def main(argv=None) -> int:
    ...     return run_cli(_main, parse_args(argv))
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
from typing import Callable

__all__ = ["HelpFormatter", "add_quiet", "error", "quiet_tensorflow", "run_cli"]

# C++ lines TensorFlow prints while it loads (absl's pre-init notice, oneDNN and CPU-feature
# notes); anything else written to stderr during the import is passed through.
_STARTUP_NOISE = ("WARNING: All log messages before absl::InitializeLog()", "port.cc:",
                  "cpu_feature_guard.cc:", "To enable the following instructions:",
                  "rebuild TensorFlow with the appropriate compiler flags")


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless the text already states its default or
    the flag is a switch or required."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.required or action.option_strings == []
                or any(action.default is v for v in (None, False, True, argparse.SUPPRESS))):
            return text
        return f"{text} (default: %(default)s)"


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """The `--quiet` flag every command has."""
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="print results and errors only: no progress bars or status lines "
                             "(default: off)")


def error(err: BaseException | str) -> int:
    """Prints ``error: <first line of the message>`` on stderr and returns exit status 2 (bad
    input); `TFREID_DEBUG=1` re-raises instead."""
    if isinstance(err, BaseException) and os.environ.get("TFREID_DEBUG"):
        raise err
    print(f"error: {_first_line(str(err)) or type(err).__name__}", file=sys.stderr)
    return 2


def _first_line(message: str) -> str:
    """The line that says what went wrong. An error raised while tracing a tf.function starts
    with "in user code:" and a stack; its own message sits after the last "...Error: " line
    (Keras then puts it on the next line)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in message.strip().splitlines()]
    lines = [line for line in lines if line]
    if not lines or lines[0] != "in user code:":
        return lines[0] if lines else ""
    last = max((i for i, line in enumerate(lines) if re.match(r"\w+(Error|Exception): ", line)),
               default=len(lines) - 1)
    if "Exception encountered when calling" in lines[last] and last + 1 < len(lines):
        return f"{lines[last].split(': ', 1)[1]} {lines[last + 1]}"
    return lines[last]


def run_cli(fn: Callable[..., int], *args) -> int:
    """``fn(*args)``, or 2 after one ``error: ...`` line on stderr when the input was bad."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - anything that is not bad input is re-raised
        bad = _bad_input(err)
        if bad is None:
            raise
        return error(bad)


def _bad_input(err: Exception) -> Exception | None:
    if isinstance(err, (ValueError, OSError, ImportError)):  # ImportError: a missing extra
        return err
    # A bad-image assertion can only come from a loaded pipeline (looked up, not imported: the
    # data package's commands import this module).
    pipeline = sys.modules.get("tfreid.data.pipeline")
    return pipeline.as_bad_image_error(err) if pipeline is not None else None


def quiet_tensorflow() -> None:
    """Hide TensorFlow's start-up logs and retracing warnings (call before importing it).

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user chose a level, silences the Python
    ``tensorflow`` logger's warnings (e.g. "triggered tf.function retracing") and imports
    TensorFlow with its known start-up lines filtered out of stderr. `TFREID_DEBUG=1` keeps
    everything.
    """
    if os.environ.get("TFREID_DEBUG"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" in sys.modules:
        return
    # The absl/oneDNN lines are written by C++ before TF_CPP_MIN_LOG_LEVEL applies, so they can
    # only be caught at the file-descriptor level.
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            kept = [line for line in lines if not any(n in line for n in _STARTUP_NOISE)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
