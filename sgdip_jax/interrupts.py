"""Stopping a run cleanly: the first Ctrl-C (SIGINT) or SIGTERM asks the run to stop after its
current chunk and save; a second one aborts at once: the cleanups registered with
:func:`on_abort` (unfinished output folders) run and the process exits, without unwinding through
JAX's threads."""

from __future__ import annotations

import logging
import os
import signal
import sys

log = logging.getLogger("sgdip")

_CLEANUPS: list = []


def on_abort(cleanup) -> None:
    """Run ``cleanup()`` if the process is aborted by a second signal (see :func:`forget`)."""
    _CLEANUPS.append(cleanup)


def forget(cleanup) -> None:
    """No longer run ``cleanup`` on an abort (its work is committed or discarded)."""
    if cleanup in _CLEANUPS:
        _CLEANUPS.remove(cleanup)


def abort(status: int) -> None:
    """Run the registered cleanups and exit with ``status`` at once."""
    for cleanup in list(_CLEANUPS):
        try:
            cleanup()
        except Exception:  # noqa: BLE001 (exit regardless)
            pass
    print(f"sgdip: aborted (exit status {status})", file=sys.stderr, flush=True)
    os._exit(status)


INTERRUPTED = 130
"""Exit status of a run stopped by SIGINT (``128 + signal number``, as shells report it)."""


class InterruptFlag:
    """While active (``with InterruptFlag() as flag``), the first SIGINT or SIGTERM (what schedulers
    send before they kill) only sets ``flag.requested``, which the engine polls after every chunk; a
    second one aborts (:func:`abort`). ``status``: the exit status of the signal received (130
    for SIGINT, 143 for SIGTERM). Outside the main thread signals cannot be caught: a no-op."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.status = INTERRUPTED
        self._previous = {}

    def _handler(self, signum, frame):
        if self.requested:
            abort(128 + signum)
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
