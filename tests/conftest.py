"""One JAX compilation cache for the run, programs compiled without XLA's optimisations except in
tests marked ``xla_optimized``, and helpers shared by the command-line tests: a crash after the
first batch of slices, and a real ``sgdip`` process that receives a signal while it computes."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import pytest

from sgdip_jax import reconstruct

ENDLESS_DIP = ["--method", "dip", "--iters", "1000000", "--network", "unet1", "--width", "4", "--set", "chunk=10"]
"""Options of a tiny DIP run that lasts until it is signalled."""


FAST_COMPILE = "jax_disable_most_optimizations"
OURS = "SGDIP_TESTS_FAST_COMPILE"


def _set(name, value):
    """``name`` in this process's JAX config and in the environment, which the xdist workers and the
    tests' subprocesses inherit (JAX reads it when imported)."""
    jax.config.update(name, value)
    os.environ[name.upper()] = str(int(value) if isinstance(value, bool) else value)


def pytest_configure(config):
    """A persistent JAX compilation cache in a temporary folder for the whole run, so that tests
    building the same program (same network, shapes and options) compile it once; and programs
    compiled without most of XLA's optimisations (most tests are tiny: compiling costs more than
    running), except in tests marked ``xla_optimized`` (their time is in running, or their
    tolerances were measured on optimised programs, as users run them). Settings the user made in
    the environment (``JAX_COMPILATION_CACHE_DIR``, ``JAX_DISABLE_MOST_OPTIMIZATIONS``) are kept."""
    # ours: not in the environment, or set by this run's controller (xdist workers inherit it)
    config.fast_compile = FAST_COMPILE.upper() not in os.environ or OURS in os.environ
    if config.fast_compile:
        os.environ[OURS] = "1"
        _set(FAST_COMPILE, True)
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    config.jax_cache = tempfile.mkdtemp(prefix="sgdip-tests-jax-cache-")
    _set("jax_compilation_cache_dir", config.jax_cache)
    _set("jax_persistent_cache_min_compile_time_secs", 0.0)
    _set("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Tests marked ``xla_optimized`` (and their subprocesses and module fixtures set up with them)
    compile with XLA's optimisations."""
    if item.config.fast_compile and item.get_closest_marker("xla_optimized"):
        _set(FAST_COMPILE, False)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    if item.config.fast_compile and item.get_closest_marker("xla_optimized"):
        _set(FAST_COMPILE, True)


def pytest_unconfigure(config):
    if getattr(config, "jax_cache", None):
        shutil.rmtree(config.jax_cache, ignore_errors=True)


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


def start_cli(argv):
    """``python -m sgdip_jax.cli *argv`` as a subprocess on the CPU, its stderr piped as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "sgdip_jax.cli", *map(str, argv)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def signal_during_run(argv, started: str, signum: int, delay: float, timeout: float = 300):
    """Run ``python -m sgdip_jax.cli *argv``, send ``signum`` ``delay`` seconds after the log line
    containing ``started``; ``(process, stderr after that line, seconds from the signal to exit)``."""
    proc = start_cli(argv)
    for line in proc.stderr:
        if started in line:
            break
    time.sleep(delay)
    sent = time.monotonic()
    proc.send_signal(signum)
    err = proc.communicate(timeout=timeout)[1]
    return proc, err, time.monotonic() - sent


SIGINT, SIGTERM = signal.SIGINT, signal.SIGTERM
