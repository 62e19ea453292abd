"""Volume runs over several processes (machines): who computes which slice, where finished slices
wait, and how they reach process 0.

* :func:`process_share`: each process takes a contiguous block of the slices.
* :class:`SliceStore`: each process keeps its finished slices on disk (``OUT.partial``), one file
  each, written atomically, so an interrupted or failed run resumes with the slices that are missing.
* :class:`SliceExchange`: finished slices travel to process 0 through the key-value store of the
  ``jax.distributed`` coordination service (plain gRPC between processes, no device collective, so
  it works for any number and kind of local devices). Every process publishes a heartbeat; a process
  whose peer's heartbeat stops for ``peer_timeout`` seconds exits with one line instead of hanging,
  and the finished slices stay in the stores for the rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write

CHUNK = 1 << 20  # bytes per key-value entry; slices larger than this travel in several entries


def process_share(items: Sequence, index: int | None = None, count: int | None = None) -> list:
    """The contiguous block of ``items`` owned by process ``index`` of ``count`` (default: this
    process of ``jax.process_count()``); blocks differ in length by at most one."""
    import jax

    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    bounds = np.linspace(0, len(items), count + 1).round().astype(int)
    return list(items[bounds[index] : bounds[index + 1]])


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "sha256"}`` of a file: what a resumed run must find unchanged."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": digest.hexdigest()}


class SliceStore:
    """Finished slices of one volume run, ``slice_NNNN.bin`` each (and ``slice_NNNN.warm``, the weights
    a warm-started neighbour starts from), in a directory.

    ``fingerprint`` (JSON-able: the input file's identity and content hash, options, method config)
    is written to ``run.json`` when the store is created. Reopening a store that holds finished
    slices of another fingerprint raises ``ValueError`` (so a resumed run never mixes inputs or
    settings) unless ``force`` clears it; a store without finished slices is simply taken over.
    """

    def __init__(self, path: str | os.PathLike, fingerprint: dict[str, Any], force: bool = False):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        record = self.path / "run.json"
        text = json.dumps(fingerprint, indent=2, sort_keys=True, default=str)
        if record.exists() and record.read_text() != text:
            if self.done() and not force:
                raise ValueError(
                    f"{self.path}: holds {len(self.done())} finished slices of a run with another input or other "
                    f"settings (see its run.json); rerun that command to resume it, or pass --force to discard them"
                )
            for stale in self.path.glob("slice_*"):
                stale.unlink()
        atomic_write(record, lambda f: f.write(text.encode()))
        self.key = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.damaged = self._drop_damaged()

    def _drop_damaged(self) -> list[int]:
        """Delete stored slices whose file is not a complete archive (checked before any work, so
        they are recomputed instead of failing the run at the end); their indices."""
        damaged = []
        for index in sorted(self.done()):
            try:
                with zipfile.ZipFile(self._file(index)) as z:
                    if z.testzip() is None:
                        continue
            except (zipfile.BadZipFile, OSError, EOFError):
                pass
            self._file(index).unlink()
            damaged.append(index)
        return damaged

    def _file(self, index: int) -> Path:
        return self.path / f"slice_{index:04d}.bin"

    def done(self) -> set[int]:
        """Indices of the slices already stored."""
        return {int(p.stem.split("_")[1]) for p in self.path.glob("slice_*.bin")}

    def save(self, index: int, blob: bytes) -> None:
        atomic_write(self._file(index), lambda f: f.write(blob))

    def load(self, index: int) -> bytes:
        return self._file(index).read_bytes()

    def save_warm(self, index: int, start) -> None:
        """Keep the :class:`~sgdip_jax.methods.common.WarmStart` of slice ``index`` (its neighbours start from it)."""
        atomic_write(self._file(index).with_suffix(".warm"), lambda f: f.write(start.to_bytes()))

    def load_warm(self, index: int):
        """The :class:`~sgdip_jax.methods.common.WarmStart` of slice ``index``, ``None`` if missing or damaged."""
        from .methods.common import WarmStart

        try:
            return WarmStart.from_bytes(self._file(index).with_suffix(".warm").read_bytes())
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def start_distributed(
    coordinator: str | None, num_processes: int | None, process_id: int | None, peer_timeout: float
) -> None:
    """``jax.distributed.initialize`` for a volume run. :class:`SliceExchange` reports a lost peer
    after ``peer_timeout`` seconds; the coordination service's own heartbeat timeout (which aborts the
    survivors) is set 30 s later, as a backstop."""
    import jax

    jax.distributed.initialize(coordinator, num_processes, process_id, heartbeat_timeout_seconds=int(peer_timeout) + 30)


class SliceExchange:
    """Finished slices of one volume run, passed to process 0 through the coordination service's
    key-value store; a context manager that, while open, keeps this process's heartbeat going and
    watches its peers'.

    Keys live under ``sgdip/<run key>/``: ``alive/<process>`` (a counter raised every
    ``peer_timeout / 10`` seconds), ``slice/<index>/<part>`` and ``slice/<index>/parts`` (written
    last, so a slice is visible only when complete), ``written`` (process 0 has written the volume).
    A peer whose counter stays unchanged for ``peer_timeout`` seconds, or a lost coordination service,
    ends this process at once with exit status 1 and one line saying which process, what this one was
    doing, and that a rerun resumes from the stores (a blocked collective could not be interrupted
    otherwise). ``client`` defaults to the one ``jax.distributed.initialize`` made.
    """

    def __init__(
        self,
        run_key: str,
        peer_timeout: float = 120.0,
        client=None,
        process: int | None = None,
        processes: int | None = None,
    ):
        import jax
        from jax._src import distributed

        self.client = client if client is not None else distributed.global_state.client
        self.process = jax.process_index() if process is None else process
        self.processes = jax.process_count() if processes is None else processes
        self.prefix = f"sgdip/{run_key}"
        self.peer_timeout = float(peer_timeout)
        self.doing = "computing its slices"
        self.watching = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)

    def __enter__(self) -> SliceExchange:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _lost(self, what: str) -> None:
        sys.stderr.write(
            f"sgdip: error: {what} while process {self.process} was {self.doing}; finished slices are kept "
            f"in each process's OUT.partial: rerun the same command on every process to resume\n"
        )
        sys.stderr.flush()
        os._exit(1)

    def _heartbeat(self) -> None:
        peers = [p for p in range(self.processes) if p != self.process]
        seen = {p: (None, time.monotonic()) for p in peers}
        count = 0
        while not self._stop.is_set():
            count += 1
            try:
                self._set(f"alive/{self.process}", str(count).encode())
                beats = {p: self._get(f"alive/{p}") for p in peers} if self.watching else {}
            except Exception as err:  # the service lives in process 0
                self._lost(f"the coordination service (process 0) is gone ({' '.join(str(err).split())[:200]})")
            now = time.monotonic()
            for p, beat in beats.items():
                last, since = seen[p]
                if beat != last:
                    seen[p] = (beat, now)
                elif now - since > self.peer_timeout:
                    self._lost(
                        f"process {p} stopped responding (no heartbeat for {now - since:.0f} s, "
                        f"--peer-timeout {self.peer_timeout:g})"
                    )
            self._stop.wait(self.peer_timeout / 10)

    def _set(self, key: str, value: bytes) -> None:
        self.client.key_value_set_bytes(f"{self.prefix}/{key}", value, allow_overwrite=True)

    def _get(self, key: str) -> bytes | None:
        """The value of ``key``, ``None`` while no process has written it."""
        try:
            return self.client.key_value_try_get_bytes(f"{self.prefix}/{key}")
        except Exception as err:
            if "NOT_FOUND" in str(err):
                return None
            raise

    def _wait(self, key: str, poll: float) -> bytes:
        while (value := self._get(key)) is None:
            time.sleep(poll)
        return value

    def publish(self, index: int, blob: bytes) -> None:
        """Make slice ``index`` available to process 0."""
        parts = [blob[i : i + CHUNK] for i in range(0, len(blob), CHUNK)] or [b""]
        for k, part in enumerate(parts):
            self._set(f"slice/{index}/{k}", part)
        self._set(f"slice/{index}/parts", str(len(parts)).encode())

    def collect(self, indices: Sequence[int], poll: float = 0.2) -> dict[int, bytes]:
        """Process 0: slices ``indices`` of the other processes, waiting for each. Once all are
        here, a peer that stops no longer matters, and is no longer watched."""
        blobs = {}
        for index in indices:
            self.doing = f"waiting for slice {index}"
            count = int(self._wait(f"slice/{index}/parts", poll))
            blobs[index] = b"".join(self._get(f"slice/{index}/{k}") or b"" for k in range(count))
        self.watching = False
        self.doing = "writing the volume"
        return blobs

    def announce_written(self) -> None:
        """Process 0: the volume is written, peers may remove their stores."""
        self._set("written", b"1")

    def wait_written(self, poll: float = 0.2) -> None:
        """Other processes: return once process 0 has written the volume."""
        self.doing = "waiting for process 0 to write the volume"
        self._wait("written", poll)
