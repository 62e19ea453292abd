"""Many slices at once: a batch in one compiled step, sharded over devices, split over processes.

DIP fits one network per slice, so slices are independent problems:

* :func:`run_dip_batch` stacks ``B`` problems of one DIP task (their weights, inputs, optimiser
  states, keys, operators with their own maps and masks) on a leading axis and advances all of them
  with one ``jax.vmap``-ed, compiled step (:func:`sgdip_jax.engine.run` with ``batched=True``).
* :func:`slice_sharding` splits that axis over devices (``NamedSharding`` of a one-axis ``Mesh``);
  the batch is padded to a multiple of the device count with copies of its last problem.
* Across hosts (multi-controller JAX, after ``jax.distributed.initialize``) each process takes a
  contiguous block of the slices (:func:`process_share`) on its local devices, and
  :func:`allgather_bytes` brings every process's finished slices to all of them, in slice order.
* :class:`SliceStore` keeps finished slices on disk, one file each, written atomically, so an
  interrupted volume run resumes with the slices that are missing.

A problem gives the same iterates alone, in a batch, or sharded (up to floating-point reassociation
in batched kernels): its weights and input are drawn from its own key before batching, and the
per-step draws use threefry keys, which ``jax.vmap`` leaves unchanged.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import engine
from .methods.common import DIPTask, engine_options, make_result, setup
from .methods.result import Result, atomic_write

AXIS = "slices"


def slice_sharding(devices: Sequence[jax.Device] | None = None) -> jax.sharding.NamedSharding:
    """Sharding of a leading batch axis over ``devices`` (default: this process's local devices)."""
    devices = list(jax.local_devices() if devices is None else devices)
    mesh = jax.sharding.Mesh(np.array(devices), (AXIS,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))


def _stack(trees):
    """One pytree with the leaves of ``trees`` stacked on a new leading axis (structures must agree)."""
    structures = {str(jax.tree.structure(t)) for t in trees}
    shapes = {tuple(np.shape(leaf) for leaf in jax.tree.leaves(t)) for t in trees}
    if len(structures) != 1 or len(shapes) != 1:
        raise ValueError("problems batched together must have the same image size, coil count and mask shape")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def run_dip_batch(
    tasks: Sequence[DIPTask],
    operators: Sequence,
    ys: Sequence,
    keys: Sequence,
    targets: Sequence | None = None,
    *,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
    callback=None,
) -> list[Result]:
    """Run one DIP method on ``B`` problems in one compiled step; one :class:`Result` per problem.

    ``tasks[i]`` is problem ``i``'s :class:`~sgdip_jax.methods.common.DIPTask` (same method and config
    for all; they may differ in how they build their input, e.g. each slice's own reference image).
    ``keys``: a PRNG key or int seed per problem. ``devices``: shard the batch over these devices
    (``None``: no sharding, the default device). ``callback`` is the engine's, on the batched state.
    """
    n = len(tasks)
    if not n or not len(operators) == len(ys) == len(keys) == n or (targets is not None and len(targets) != n):
        raise ValueError("run_dip_batch: give one task, operator, measurement, key (and target) per problem")
    if len({(t.method, repr(t.config)) for t in tasks}) != 1:
        raise ValueError("run_dip_batch: all problems of a batch must use the same method and config")
    targets = [None] * n if targets is None else list(targets)
    if len({t is None for t in targets}) != 1:
        raise ValueError("run_dip_batch: give a target for every problem or for none")
    problems = [setup(t, op, y, k, tg) for t, op, y, k, tg in zip(tasks, operators, ys, keys, targets)]
    sharding = None
    if devices is not None:
        sharding = slice_sharding(devices)
        pad = math.ceil(n / len(sharding.mesh.devices)) * len(sharding.mesh.devices) - n
        problems_padded = problems + [problems[-1]] * pad
    else:
        problems_padded = problems
    params, net_state, z, key, data, target = _stack([p.engine_args() for p in problems_padded])
    out = engine.run(
        params=params, net_state=net_state, z=z, key=key, data=data, target=target,
        progress=progress, callback=callback, batched=True, sharding=sharding,
        **engine_options(tasks[0], operators[0]),
    )
    return [make_result(task, p, o) for task, p, o in zip(tasks, problems, out.unbatch()[:n])]


def process_share(items: Sequence, index: int | None = None, count: int | None = None) -> list:
    """The contiguous block of ``items`` owned by process ``index`` of ``count`` (default: this
    process of ``jax.process_count()``); blocks differ in length by at most one."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    bounds = np.linspace(0, len(items), count + 1).round().astype(int)
    return list(items[bounds[index]: bounds[index + 1]])


def allgather_bytes(blobs: Sequence[bytes]) -> list[bytes]:
    """Every process's ``blobs``, concatenated in process order (one process: ``blobs`` unchanged).

    Uses JAX's collectives (``multihost_utils.process_allgather``) on byte buffers padded to the
    longest one, so any file can travel; every process must call it.
    """
    if jax.process_count() == 1:
        return list(blobs)
    from jax.experimental import multihost_utils

    lengths = np.array([len(b) for b in blobs], np.int64)
    counts = multihost_utils.process_allgather(np.array([len(blobs)], np.int64))
    width = int(multihost_utils.process_allgather(np.array([lengths.max(initial=0)], np.int64)).max())
    slots = int(counts.max())
    buffer = np.zeros((slots, max(width, 1)), np.uint8)
    sizes = np.zeros(slots, np.int64)
    for i, blob in enumerate(blobs):
        buffer[i, : len(blob)] = np.frombuffer(blob, np.uint8)
        sizes[i] = len(blob)
    all_buffers = multihost_utils.process_allgather(buffer)
    all_sizes = multihost_utils.process_allgather(sizes)
    return [
        all_buffers[p, i, : all_sizes[p, i]].tobytes()
        for p in range(all_buffers.shape[0])
        for i in range(int(np.asarray(counts).ravel()[p]))
    ]


def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "size", "sha256"}`` of a file: what a resumed run must find unchanged."""
    import hashlib

    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path.resolve()), "size": path.stat().st_size, "sha256": digest.hexdigest()}


class SliceStore:
    """Finished slices of one volume run, ``slice_NNNN.bin`` each, in a directory.

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
            for stale in self.path.glob("slice_*.bin"):
                stale.unlink()
        atomic_write(record, lambda f: f.write(text.encode()))

    def _file(self, index: int) -> Path:
        return self.path / f"slice_{index:04d}.bin"

    def done(self) -> set[int]:
        """Indices of the slices already stored."""
        return {int(p.stem.split("_")[1]) for p in self.path.glob("slice_*.bin")}

    def save(self, index: int, blob: bytes) -> None:
        atomic_write(self._file(index), lambda f: f.write(blob))

    def load(self, index: int) -> bytes:
        return self._file(index).read_bytes()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
