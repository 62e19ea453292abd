"""Helpers shared by the command-line tests: a crash after the first batch of slices, and a real
``sgdip`` process that receives a signal while it computes."""

import os
import signal
import subprocess
import sys
import time

import pytest

from sgdip_jax import reconstruct

ENDLESS_DIP = ["--method", "dip", "--iters", "1000000", "--network", "unet1", "--width", "4", "--set", "chunk=10"]
"""Options of a tiny DIP run that lasts until it is signalled."""


@pytest.fixture
def crash_after_first_batch(monkeypatch):
    """While active, ``reconstruct.reconstruct_batch`` computes its first batch and then raises
    ``KeyboardInterrupt``; calling the fixture's value restores the real function."""
    real = reconstruct.reconstruct_batch
    calls = []

    def first_only(problems, *args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append([p.meta["slice"] for p in problems])
        return real(problems, *args, **kwargs)

    monkeypatch.setattr(reconstruct, "reconstruct_batch", first_only)
    return lambda: monkeypatch.setattr(reconstruct, "reconstruct_batch", real)


def signal_during_run(argv, started: str, signum: int, delay: float, timeout: float = 300):
    """Run ``python -m sgdip_jax.cli *argv``, send ``signum`` ``delay`` seconds after the log line
    containing ``started``; ``(process, stderr after that line, seconds from the signal to exit)``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sgdip_jax.cli", *map(str, argv)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    for line in proc.stderr:
        if started in line:
            break
    time.sleep(delay)
    sent = time.monotonic()
    proc.send_signal(signum)
    err = proc.communicate(timeout=timeout)[1]
    return proc, err, time.monotonic() - sent


SIGINT, SIGTERM = signal.SIGINT, signal.SIGTERM
