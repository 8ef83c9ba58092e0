"""A progress bar for long jobs that stays readable in log files.

On a terminal it redraws one line with a carriage return; anywhere else (a file, a pipe, CI)
it prints a plain line at every tenth of the work and at the end. It never writes ANSI escape
sequences or backspaces (`keras.utils.Progbar` does both even when the output is a file).
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Counts `total` units of work and shows how far it got.

    Args:
        total: units of work (steps, batches, images).
        label: what is being done, printed before the counts (e.g. ``"Epoch 2/4"``).
        unit: name of a unit, e.g. ``"step"``.
        quiet: show nothing.
        stream: where to write (default ``sys.stdout``, looked up at each write).

    Example:
        >>> bar = Progress(100, "embedding gallery", unit="batch")
        >>> for i in range(100):
        ...     bar.update(i + 1, loss=0.5)
    """

    def __init__(self, total: int, label: str = "", unit: str = "step", quiet: bool = False,
                 stream=None):
        self.total, self.label, self.unit, self.quiet = max(int(total), 1), label, unit, quiet
        self._stream = stream
        self._start = time.perf_counter()
        self._shown_tenth = -1
        self._open_line = False
        self.done = 0

    @property
    def stream(self):
        return self._stream if self._stream is not None else sys.stdout

    def _tty(self) -> bool:
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def _line(self, values: dict) -> str:
        elapsed = time.perf_counter() - self._start
        parts = [f"{self.label}: " if self.label else "",
                 f"{self.done}/{self.total} {self.unit}{'es' if self.unit.endswith('ch') else 's'} "
                 f"({100 * self.done / self.total:.0f}%)",
                 f", {elapsed:.0f} s"]
        if 0 < self.done < self.total:
            parts.append(f", ~{elapsed * (self.total - self.done) / self.done:.0f} s left")
        parts += [f", {k} {v:.4g}" for k, v in values.items()]
        return "".join(parts)

    def update(self, done: int, **values: float) -> None:
        """Marks `done` units finished; `values` (e.g. losses) are shown after the counts."""
        self.done = min(int(done), self.total)
        if self.quiet:
            return
        if self._tty():
            self.stream.write("\r" + self._line(values) + " " * 4)
            self._open_line = True
            if self.done == self.total:
                self.close()
        else:
            tenth = 10 * self.done // self.total
            if tenth > self._shown_tenth:
                self._shown_tenth = tenth
                self.stream.write(self._line(values) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends a terminal line left open (an interrupted job)."""
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False
