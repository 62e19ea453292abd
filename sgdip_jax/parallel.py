"""Many slices at once: a batch in one compiled step, sharded over devices.

DIP fits one network per slice, so slices are independent problems:

* :func:`run_dip_batch` stacks ``B`` problems of one DIP task (their weights, inputs, optimiser
  states, keys, operators with their own maps and masks) on a leading axis and advances all of them
  with one ``jax.vmap``-ed, compiled step (:func:`sgdip_jax.engine.run` with ``batched=True``).
* :func:`slice_sharding` splits that axis over devices (``NamedSharding`` of a one-axis ``Mesh``);
  the batch is padded to a multiple of the device count with copies of its last problem.
* Across processes (machines), :mod:`sgdip_jax.multihost` splits a volume's slices and brings the
  finished ones to process 0.

A problem gives the same iterates alone, in a batch, or sharded (up to floating-point reassociation
in batched kernels): its weights and input are drawn from its own key before batching, and the
per-step draws use threefry keys, which ``jax.vmap`` leaves unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import engine
from .methods.common import DIPTask, engine_options, make_result, setup
from .methods.result import Result

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
        params=params,
        net_state=net_state,
        z=z,
        key=key,
        data=data,
        target=target,
        progress=progress,
        callback=callback,
        batched=True,
        sharding=sharding,
        **engine_options(tasks[0], operators[0]),
    )
    return [make_result(task, p, o) for task, p, o in zip(tasks, problems, out.unbatch()[:n])]
