"""Stopping a run cleanly: the first Ctrl-C (SIGINT) or SIGTERM asks the run to stop after its
current chunk and save; a second one aborts at once."""

from __future__ import annotations

import logging
import signal

log = logging.getLogger("sgdip")

INTERRUPTED = 130
"""Exit status of a run stopped by SIGINT (``128 + signal number``, as shells report it)."""


class InterruptFlag:
    """While active (``with InterruptFlag() as flag``), the first SIGINT or SIGTERM (what schedulers
    send before they kill) only sets ``flag.requested``, which the engine polls after every chunk; a
    second one raises ``KeyboardInterrupt``. ``status``: the exit status of the signal received (130
    for SIGINT, 143 for SIGTERM). Outside the main thread signals cannot be caught: a no-op."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.status = INTERRUPTED
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.status = 128 + signum
        log.warning(
            "%s: stopping after the current chunk and saving (send it again to abort)", signal.Signals(signum).name
        )

    def __enter__(self):
        try:
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        except ValueError:
            self._previous = {}
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)


def terminate_as_interrupt():
    """Make SIGTERM raise ``KeyboardInterrupt`` (so staged outputs are cleaned up); returns the
    previous handler (``None`` outside the main thread)."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None
