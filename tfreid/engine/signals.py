"""SIGINT/SIGTERM handling for the training loop: a signal sets a flag instead of killing.

The loop polls the flag after each step, so a stop request finishes the current step, saves a
checkpoint and returns (``TrainResult.stopped_early == "signal SIGTERM"``) — what a cluster
scheduler's pre-emption (SIGTERM, then SIGKILL after a grace period) needs.

Example:
    >>> stop = StopSignals()
    >>> stop.install()
    >>> try:
    ...     while stop.name is None:
    ...         train_one_step()
    ... finally:
    ...     stop.uninstall()
"""

from __future__ import annotations

import signal
import threading

__all__ = ["StopSignals"]


class StopSignals:
    """SIGINT/SIGTERM -> ``self.name`` (e.g. ``"SIGTERM"``); ``None`` while no signal arrived.

    ``install()`` only acts in the main thread (Python only delivers signals there); from other
    threads the loop simply runs without signal handling. ``uninstall()`` puts the previous
    handlers back. A second signal while the first is pending aborts at once with
    ``KeyboardInterrupt`` (no checkpoint), for a user who really wants out.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.name, self._previous = None, {}

    def _handle(self, signum, frame):
        if self.name is not None:
            raise KeyboardInterrupt(f"second signal ({signal.Signals(signum).name}) - aborting")
        self.name = signal.Signals(signum).name

    def install(self) -> None:
        """Routes SIGINT/SIGTERM to this flag (main thread only), remembering the old handlers."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self._SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Restores the handlers that were active before :meth:`install` (idempotent)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
