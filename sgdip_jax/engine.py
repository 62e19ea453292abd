"""The one jit-compiled optimisation loop every DIP method plugs into.

A method supplies a loss function

    loss_fn(params, net_state, z, key, data) -> (loss, aux),
    aux = {"image": x (H, W, C) real channels, "net_state": new mutable variables, "terms": {name: scalar}}
          (optionally "spread": the variance of x's entries across the step's noise draws)

where ``net_state`` holds the network's non-trainable variables (e.g. ``{"batch_stats": ...}``),
``z`` the network input, ``key`` the step's random key and ``data`` any arrays the loss needs
(operator, measurements; passed as an argument so they are not baked into the program as
constants). ``aux["image"]`` is the step's reconstruction estimate.

One step (``TrainState -> TrainState``) computes the loss and gradients, updates the weights with
their Optax chain and - when the method optimises the input - ``z`` with its own chain, then the
debiased exponential moving average of the estimates (as Adam's moment estimates),

    ema_t = sum_{i<=t} (1 - beta) beta^(t-i) x_i / (1 - beta^(t+1))
          = ema_{t-1} + w_t (x_t - ema_{t-1}),   w_t = (1 - beta) / (1 - beta^(t+1))   (ema_0 = x_0),

so the random initial outputs fade as fast as any later iterate, and the spread of the outputs
under the same weights, the variance of the mixture of the steps' draws,

    v_t = (1 - w_t) (v_{t-1} + w_t (x_t - ema_{t-1})^2) + w_t s_t      (v_0 = s_0),

where ``s_t`` is the variance across the step's own noise draws (``aux["spread"]``, 0 when the loss
gives none): ``sqrt(v)`` is the per-pixel uncertainty of the EMA image; then the ES-WMV
statistic (:mod:`sgdip_jax.early_stopping`) and, when a target is given, PSNR (and every
``ssim_every`` steps SSIM) of the EMA image. ``lax.scan`` runs ``chunk`` steps per call, so the host
is touched once per chunk (progress bar, history, early-stopping check, callback). The chunk
program is traced and compiled once per run; its state argument is donated.

Chunking: a run of ``T`` iterations uses ``n = ceil(T / chunk)`` calls of ``L = ceil(T / n)`` steps
(``L <= chunk``). Steps past ``T`` in the last call (fewer than ``n``) are computed and discarded by
a select on ``step < T``, which keeps one compiled program without a device-side branch.

Step ``t`` (0-based) uses the key ``fold_in(key, t)``; its estimate ``x_t`` is the network output
computed *before* the ``t``-th update; ``history[name][t]`` belongs to that step.

Self-validation (``validate``): a ground-truth-free error of the EMA image, ``validate(ema, data)``
(e.g. its prediction error on measurements held out of the fit), is recorded every step as
``history["val"]``, and the state keeps the EMA image with the smallest one (:class:`Selection`):
the run returns it as its stopping choice. A run can continue from the state of an earlier one
(``run(..., state=...)``): the step counter, the optimisers and the selection go on; compiled
programs are kept per configuration and argument shapes, so runs that differ only in their data
(other problems, other settings carried as data) compile once.

Batches (``batched=True``): every argument but the optimisers carries a leading axis of ``B``
independent problems (own weights, input, optimiser state, key, data); the step is ``jax.vmap``-ed,
so one compiled program advances all of them, and history entries become ``(T, B)``. With a
``sharding`` of that axis (``NamedSharding(mesh, P("slices"))``) the batch is split over devices
and the step runs under ``jax.shard_map``: each device advances its own problems, with no
collectives (explicit per-device programs; the automatic SPMD partitioner mishandles the grouped
convolutions that ``vmap`` makes of per-problem weights).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from .early_stopping import ESConfig, ESState, es_init, es_update


@struct.dataclass
class Selection:
    """The EMA ``image`` with the smallest validation error ``value`` so far, its ``step`` (-1: none)
    and its spread ``var`` (:class:`TrainState`)."""

    value: jnp.ndarray
    step: jnp.ndarray
    image: jnp.ndarray
    var: jnp.ndarray


@struct.dataclass
class TrainState:
    """Everything that changes during a run; a pytree donated to each compiled chunk. ``ema_var``:
    the per-entry variance of the network's outputs under the moving average's weights (module
    docstring)."""

    params: Any
    net_state: Any
    z: jnp.ndarray
    opt_state: Any
    z_opt_state: Any
    image: jnp.ndarray
    ema: jnp.ndarray
    ema_var: jnp.ndarray
    step: jnp.ndarray
    es: ESState | None
    select: Selection | None = None


@dataclasses.dataclass
class ChunkInfo:
    """What a callback sees after each chunk: iterations done, the state, and the chunk's metrics."""

    iteration: int
    state: TrainState
    metrics: dict[str, np.ndarray]


@dataclasses.dataclass
class RunOutput:
    """Final state, per-iteration ``history``, iterations run, the ES-WMV detection (``stop_iteration``
    and the channels image ``stop_image``, ``None`` unless detection triggered), timings, and
    ``diverged``: the first iteration whose loss was not finite (``None``: none was)."""

    state: TrainState
    history: dict[str, np.ndarray]
    iterations: int
    stop_iteration: int | None
    stop_image: jnp.ndarray | None
    wall_time: float
    compile_time: float
    chunks: int
    diverged: int | None = None

    def _detected(self, batched: bool) -> RunOutput:
        """Fill in the ES-WMV detection of an unbatched run (batched runs: per problem in :meth:`unbatch`)."""
        es = self.state.es
        if batched or es is None or not bool(es.triggered):
            return self
        return dataclasses.replace(self, stop_iteration=int(es.best_step), stop_image=es.best_image)

    def unbatch(self) -> list[RunOutput]:
        """One unbatched :class:`RunOutput` per problem of a batched run (same timings for all), on the
        host: the state is fetched shard by shard, since slicing a sharded array on the devices needs a
        cross-device collective that multi-process CPU runs do not complete."""
        state = jax.device_get(self.state)
        size = len(state.step)
        return [
            dataclasses.replace(
                self,
                state=jax.tree.map(lambda a, i=i: a[i], state),
                history={k: v[:, i] for k, v in self.history.items()},
            )._detected(False)
            for i in range(size)
        ]


SLICE_AXIS = "slices"


def slice_sharding(devices=None) -> jax.sharding.NamedSharding:
    """Sharding of a leading batch axis over ``devices`` (default: this process's local devices)."""
    devices = list(jax.local_devices() if devices is None else devices)
    mesh = jax.sharding.Mesh(np.array(devices), (SLICE_AXIS,))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(SLICE_AXIS))


def adam(
    lr: float, clip_norm: float | None = None, half_life: float | None = None, decay_begin: int = 0
) -> optax.GradientTransformation:
    """Adam with learning rate ``lr``, constant for ``decay_begin`` steps and then halved every
    ``half_life`` steps, continuously: ``lr 2^(-max(t - decay_begin, 0) / half_life)`` (``half_life``
    ``None``: constant throughout), after clipping the group's global gradient norm at ``clip_norm``."""
    schedule = None if half_life is None else optax.exponential_decay(lr, half_life, 0.5, transition_begin=decay_begin)
    tx = optax.adam(lr if schedule is None else schedule)
    return tx if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), tx)


def chunk_plan(iterations: int, chunk: int) -> tuple[int, int]:
    """``(n_calls, steps_per_call)`` with ``n = ceil(T / chunk)`` and ``L = ceil(T / n)``."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    n = math.ceil(iterations / chunk)
    return n, math.ceil(iterations / n)


def _make_step(loss_fn, optimizer, z_optimizer, ema_decay, es_config, metric_image, ssim_every, validate=None):
    train_z = z_optimizer is not None
    grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 2) if train_z else 0, has_aux=True)

    def step(state: TrainState, key, data, target):
        t = state.step
        (loss, aux), grads = grad_fn(state.params, state.net_state, state.z, jax.random.fold_in(key, t), data)
        g_params, g_z = grads if train_z else (grads, None)
        updates, opt_state = optimizer.update(g_params, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        z, z_opt_state = state.z, state.z_opt_state
        if train_z:
            z_updates, z_opt_state = z_optimizer.update(g_z, z_opt_state, z)
            z = optax.apply_updates(z, z_updates)

        image = aux["image"].astype(jnp.float32)
        beta = jnp.asarray(ema_decay, jnp.float32)
        weight = (1.0 - beta) / (1.0 - beta ** (t + 1).astype(jnp.float32))  # exactly 1 at t = 0
        delta = image - state.ema
        ema = state.ema + weight * delta
        spread = aux.get("spread", 0.0)
        ema_var = (1.0 - weight) * (state.ema_var + weight * delta**2) + weight * spread
        metrics = {"loss": loss, **aux["terms"]}
        es = state.es
        if es is not None:
            es, metrics["es_stat"] = es_update(es, image, t, es_config)
        select = state.select
        if validate is not None:
            metrics["val"] = value = jnp.asarray(validate(ema, data), jnp.float32)
            better = value < select.value
            select = Selection(
                jnp.where(better, value, select.value),
                jnp.where(better, t, select.step),
                jnp.where(better, ema, select.image),
                jnp.where(better, ema_var, select.var),
            )
        if target is not None:
            from . import metrics as M

            shown = metric_image(ema, data)
            metrics["psnr"] = M.psnr(shown, ref=target)
            if ssim_every:
                metrics["ssim"] = jax.lax.cond(
                    t % ssim_every == 0,
                    lambda: M.ssim(shown, ref=target).astype(jnp.float32),
                    lambda: jnp.float32(jnp.nan),
                )
        new = TrainState(params, aux["net_state"], z, opt_state, z_opt_state, image, ema, ema_var, t + 1, es, select)
        return new, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

    return step


def _scan_program(step, length):
    """One ``lax.scan`` of ``length`` steps per call; steps with ``step >= n_total`` are computed and
    discarded by a select (no device-side branch)."""

    def chunk(state, key, n_total, data, target):

        def body(s, _):
            new, metrics = step(s, key, data, target)
            return _select(s.step < n_total, new, s), metrics

        return jax.lax.scan(body, state, None, length=length)

    def advance(compiled, args, state, n):
        state, metrics = compiled(state, *args)
        return state, {k: v[:n] for k, v in jax.device_get(metrics).items()}

    return chunk, advance


def _python_program(step, length):
    """One compiled step dispatched ``n`` times per chunk from Python. Dispatch is asynchronous, so
    the host still waits for the device once per chunk (when it fetches the chunk's metrics)."""

    def one(state, key, n_total, data, target):
        return step(state, key, data, target)

    def advance(compiled, args, state, n):
        parts = []
        for _ in range(n):
            state, metrics = compiled(state, *args)
            parts.append(metrics)
        parts = jax.device_get(parts)
        return state, {k: np.stack([m[k] for m in parts]) for k in parts[0]}

    return one, advance


_COMPILED: collections.OrderedDict = collections.OrderedDict()
CACHE_SIZE = 4  # compiled chunk programs kept (the most recently used)


def _compiled(signature, program, args):
    """``jax.jit(program)`` compiled for ``args`` (state donated), reused for the same ``signature``."""
    signature = (
        signature,
        jax.tree.structure(args),
        tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in jax.tree.leaves(args)),
    )
    if signature in _COMPILED:
        _COMPILED.move_to_end(signature)
        return _COMPILED[signature]
    compiled = jax.jit(program, donate_argnums=0).lower(*args).compile()
    _COMPILED[signature] = compiled
    while len(_COMPILED) > CACHE_SIZE:
        _COMPILED.popitem(last=False)
    return compiled


def _select(active, new, old):
    """``new`` where ``active`` else ``old``, leaf by leaf; ``active`` is ``()`` or the batch ``(B,)``."""

    def pick(a, b):
        return jnp.where(active.reshape(active.shape + (1,) * (a.ndim - active.ndim)), a, b)

    return jax.tree.map(pick, new, old)


DRIVERS = {"scan": _scan_program, "python": _python_program}


def resolve_loop(loop: str) -> str:
    """``"auto"`` -> ``"python"`` on CPU, ``"scan"`` elsewhere (see :func:`run`)."""
    if loop == "auto":
        return "python" if jax.default_backend() == "cpu" else "scan"
    if loop not in DRIVERS:
        raise ValueError(f"loop must be one of {['auto', *DRIVERS]}, got {loop!r}")
    return loop


def init_state(
    loss_fn,
    params,
    net_state,
    z,
    key,
    data,
    opt_state=None,
    *,
    optimizer,
    z_optimizer=None,
    early_stopping=None,
    validate=False,
):
    """Initial :class:`TrainState` (copies of the caller's arrays, since each chunk donates its state);
    image shapes come from ``jax.eval_shape`` of ``loss_fn``; ``opt_state``: the weights' optimiser
    state to start from (``None``: ``optimizer.init(params)``); ``validate``: keep a :class:`Selection`."""
    params, net_state, z, opt_state = jax.tree.map(jnp.array, (params, net_state, z, opt_state))
    _, aux = jax.eval_shape(loss_fn, params, net_state, z, key, data)
    shape = aux["image"].shape
    es = es_init(early_stopping, shape) if early_stopping is not None and early_stopping.enabled else None
    return TrainState(
        params=params,
        net_state=net_state,
        z=z,
        opt_state=optimizer.init(params) if opt_state is None else opt_state,
        z_opt_state=None if z_optimizer is None else z_optimizer.init(z),
        image=jnp.zeros(shape, jnp.float32),
        ema=jnp.zeros(shape, jnp.float32),
        ema_var=jnp.zeros(shape, jnp.float32),
        step=jnp.zeros((), jnp.int32),
        es=es,
        select=Selection(
            jnp.float32(jnp.inf), jnp.int32(-1), jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32)
        )
        if validate
        else None,
    )


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """How :func:`run` optimises, apart from the problem: the ``loss_fn``, the budget ``iterations``,
    the weights' ``optimizer`` and the input's ``z_optimizer`` (``None``: ``z`` fixed), steps per
    ``chunk``, the ``ema`` weight, ES-WMV ``early_stopping``, ``metric_image`` and ``ssim_every`` for
    the metrics against a target, the progress bar's ``desc``, the ``loop`` driver and ``validate``
    (``validate(ema, data) -> scalar``, a ground-truth-free error of the EMA image; ``None``: none)."""

    loss_fn: Callable
    iterations: int
    optimizer: optax.GradientTransformation
    z_optimizer: optax.GradientTransformation | None = None
    chunk: int = 50
    ema: float = 0.99
    early_stopping: ESConfig | None = None
    metric_image: Callable | None = None
    ssim_every: int = 0
    desc: str = ""
    loop: str = "auto"
    validate: Callable | None = None


def run(
    config: EngineConfig,
    params,
    net_state,
    z,
    key,
    data=None,
    *,
    target=None,
    progress: bool = True,
    callback: Callable[[ChunkInfo], bool | None] | None = None,
    batched: bool = False,
    sharding: jax.sharding.Sharding | None = None,
    state: TrainState | None = None,
    opt_state=None,
) -> RunOutput:
    """Optimise ``config.loss_fn`` for ``config.iterations`` steps from ``(params, net_state, z)``
    (the names below are the fields of :class:`EngineConfig`).

    ``optimizer`` updates ``params``; ``z`` is optimised by ``z_optimizer`` when given and is fixed
    otherwise (it receives no gradient computation at all). ``target`` (with ``metric_image(x, data)``,
    the map from a channels image to what is compared with it, e.g. the magnitude image) turns on
    per-step PSNR of the EMA image (and SSIM every ``ssim_every`` steps when > 0). ``callback(info)`` runs after
    each chunk; returning ``True`` ends the run (``info.state`` is donated to the next chunk: copy
    what you keep, e.g. ``jax.device_get(info.state.ema)``). With ``early_stopping.stop`` the run ends after the
    chunk in which ES-WMV detection triggers. A chunk in which the loss stops being finite (of any
    problem of a batch) ends the run: the output then holds the images (``image``, ``ema``) and
    history of the chunks before it, and ``diverged`` the first non-finite iteration.

    ``loop``: ``"scan"`` runs each chunk as one compiled ``lax.scan``; ``"python"`` dispatches one
    compiled step per iteration (asynchronously; the host syncs once per chunk as well). ``"auto"``
    picks ``"python"`` on CPU because XLA:CPU leaves the gradient convolutions inside a while loop in
    a non-canonical layout that runs slower than the same step outside a loop (jax issue #12868),
    and ``"scan"`` on accelerators. Both trace the step once per run and give the same iterates.

    ``batched``: ``params``, ``net_state``, ``z``, ``key``, ``data`` and ``target`` have a leading batch
    axis (module docstring); ``sharding`` places them (and the state) on devices along that axis.
    :meth:`RunOutput.unbatch` splits the output per problem.

    ``state``: continue the run that ended in this state (``params``, ``net_state`` and ``z`` are then
    ignored) for ``iterations`` more steps; the history holds the new steps only. ``opt_state``: the
    weights' optimiser state to start from instead of ``optimizer.init(params)`` (a warm start from
    another run's end).
    """
    loss_fn, optimizer, z_optimizer = config.loss_fn, config.optimizer, config.z_optimizer
    iterations, ema, early_stopping = config.iterations, config.ema, config.early_stopping
    ssim_every, metric_image = config.ssim_every, config.metric_image
    if not 0.0 <= ema < 1.0:
        raise ValueError(f"ema must be in [0, 1), got {ema}")
    if ssim_every < 0:
        raise ValueError(f"ssim_every must be >= 0, got {ssim_every}")
    if sharding is not None and not batched:
        raise ValueError("sharding splits the batch axis: it needs batched=True")
    if target is not None:
        target = jnp.asarray(target, jnp.float32)
        metric_image = metric_image or (lambda x, data: x)
    _, length = chunk_plan(iterations, config.chunk)
    t0 = time.perf_counter()
    if sharding is not None:
        params, net_state, z, key, data, target, opt_state = jax.device_put(
            (params, net_state, z, key, data, target, opt_state), sharding
        )
    init = functools.partial(
        init_state,
        loss_fn,
        optimizer=optimizer,
        z_optimizer=z_optimizer,
        early_stopping=early_stopping,
        validate=config.validate is not None,
    )
    if state is None:
        state = (jax.jit(jax.vmap(init)) if batched else init)(params, net_state, z, key, data, opt_state)
    if sharding is not None:
        state = jax.device_put(state, sharding)
    step = _make_step(loss_fn, optimizer, z_optimizer, ema, early_stopping, metric_image, ssim_every, config.validate)
    if batched:
        step = jax.vmap(step, in_axes=(0, 0, 0, None if target is None else 0))
    if sharding is not None:
        step = jax.shard_map(step, mesh=sharding.mesh, in_specs=sharding.spec, out_specs=sharding.spec)
    n_total = jnp.asarray(int(np.max(jax.device_get(state.step))) + iterations, jnp.int32)
    loop = resolve_loop(config.loop)
    program, advance_with = DRIVERS[loop](step, length)
    args = (key, n_total, data, target)
    program_key = dataclasses.replace(config, iterations=1, desc="")  # what the compiled program depends on
    signature = (program_key, batched, sharding, loop, length if loop == "scan" else None)
    compiled = _compiled(signature, program, (state, *args))
    advance = functools.partial(advance_with, compiled, args)
    compile_time = time.perf_counter() - t0

    def es_triggered(s):
        return s.es is not None and bool(jnp.all(s.es.triggered))

    state, history, done, calls, diverged = drive(
        advance,
        state,
        iterations,
        length,
        desc=config.desc,
        progress=progress,
        callback=callback,
        finite="loss",
        snapshot=lambda s: (jnp.copy(s.image), jnp.copy(s.ema)),  # the state itself is donated
        restore=lambda s, kept: s.replace(image=kept[0], ema=kept[1]),
        stop=es_triggered if early_stopping is not None and early_stopping.stop else None,
    )
    return RunOutput(
        state=state,
        history=history,
        iterations=done,
        stop_iteration=None,
        stop_image=None,
        wall_time=time.perf_counter() - t0,
        compile_time=compile_time,
        chunks=calls,
        diverged=diverged,
    )._detected(batched)


def drive(
    advance: Callable,
    state,
    iterations: int,
    length: int,
    *,
    desc: str = "",
    progress: bool = True,
    callback: Callable[[ChunkInfo], bool | None] | None = None,
    finite: str | None = None,
    snapshot: Callable | None = None,
    restore: Callable | None = None,
    stop: Callable | None = None,
):
    """The host loop every method runs (DIP methods through :func:`run`, the classical solvers with
    their own compiled steps): ``advance(state, n) -> (state, metrics)`` runs ``n <= length`` compiled
    steps and returns per-step metrics (leading axis ``n``); one progress bar; ``callback(ChunkInfo)``
    after each chunk (``True`` stops, e.g. on Ctrl-C); ``stop(state)`` ends the run after a chunk.
    With ``finite``, a chunk in which ``metrics[finite]`` is not finite ends the run, and the state
    becomes ``restore(state, snapshot(state_before_chunk))`` (nothing is restored without them).

    Returns ``(state, history, done, chunks, diverged)``: the history concatenated over the finished
    chunks, the steps they ran, the number of chunks run, and the first non-finite step (or ``None``).
    """
    history: dict[str, list[np.ndarray]] = {}
    done, calls, diverged = 0, 0, None
    bar = _progress(iterations, desc, progress)
    try:
        while done < iterations:
            kept = snapshot(state) if snapshot is not None else None
            state, metrics = advance(state, min(length, iterations - done))
            metrics = jax.device_get(metrics)
            calls += 1
            n = len(next(iter(metrics.values())))
            if finite is not None:
                ok = np.isfinite(metrics[finite]).reshape(n, -1).all(axis=1)
                if not ok.all():
                    diverged = done + int(np.argmin(ok))
                    state = restore(state, kept) if restore is not None else state
                    break
            done += n
            for k, v in metrics.items():
                history.setdefault(k, []).append(v)
            if bar is not None:  # the values first, so that the line the update draws is current
                bar.set_postfix({k: f"{np.mean(v[-1]):.4g}" for k, v in metrics.items()}, refresh=False)
                bar.update(n)
            if callback is not None and callback(ChunkInfo(done, state, metrics)):
                break
            if stop is not None and stop(state):
                break
    finally:
        if bar is not None:
            bar.close()
    return state, {k: np.concatenate(v) for k, v in history.items()}, done, calls, diverged


def _progress(total, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc or None, unit="it", dynamic_ncols=True)
