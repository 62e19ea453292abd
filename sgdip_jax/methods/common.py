"""What every network-based (DIP) method shares: the common config fields, the discrepancy
measures, the network forward pass, measurement rescaling, and the run -> :class:`Result` pipeline.

A DIP method is a :class:`DIPTask`: a config, how it chooses the network input ``z``, and a
``loss_fn(params, net_state, z, key, data) -> (loss, aux)`` for :func:`sgdip_jax.engine.run`;
:func:`run_dip` does the rest (network, rescaling, optimisers, metrics, outputs) for one problem,
:func:`run_dip_batch` for a batch (stacked on a leading axis, one ``jax.vmap``-ed compiled step,
optionally sharded over devices; :func:`run_dip` is the same pipeline for one problem).

Measurement rescaling (``rescale=True``, the reference code's rule): ``y_s = s y`` with
``s = ||f(z_0)|| / ||A^H y||`` so that the zero-filled image of the scaled data has the norm of the
initial network output; every reported image is divided by ``s`` again.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import engine
from ..channels import from_channels, n_channels
from ..config import NetworkConfig, check_choice, check_number, to_dict
from ..early_stopping import ESConfig
from ..operators.base import restrict_to_support
from .result import Result

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DISCREPANCIES = ("l1", "l2")


@dataclasses.dataclass(frozen=True)
class DIPBaseConfig:
    """Settings shared by ``dip``, ``ref-dip`` and ``sgdip``.

    ``network``: which network (output channels are set from the operator).
    ``iterations``: optimisation steps. ``lr``: Adam learning rate of the weights;
    ``clip_norm``: clip the weights' global gradient norm (``None``: no clipping).
    ``lr_half_life``: halve ``lr`` every this many steps once ``lr_decay_begin`` steps are done,
    ``lr 2^(-max(t - lr_decay_begin, 0) / lr_half_life)`` (``None``: constant); the schedule does not
    depend on ``iterations``, so a longer run continues the same path.
    ``ema``: weight ``beta`` of the moving average of the iterates.
    ``rescale``: scale the measurements so ``||A^H y|| = ||f(z_0)||`` (outputs scaled back).
    ``data_consistency``: replace the measured part of the final images, ``x + A^H (y - A x)``
    (see :func:`data_consistency`).
    ``chunk``: steps per chunk (the host is touched once per chunk).
    ``loop``: ``"auto"``, ``"scan"`` or ``"python"``, how a chunk runs (:func:`sgdip_jax.engine.run`).
    ``compute_dtype``: ``"float32"`` or ``"bfloat16"`` (forward pass in bf16; parameters,
    optimiser and losses stay float32).
    ``ssim_every``: with a target, SSIM of the EMA image every this many steps (0: never).
    ``early_stopping``: ES-WMV settings.
    ``holdout``: fraction of the measured locations held out of the fit to score the iterates
    (:mod:`.self_validation`); the reported image is then the moving average where that score was
    smallest, and the task's candidate settings are chosen by it (0: no self-validation).
    ``extend``: with self-validation, at most ``extend * iterations`` steps past ``iterations`` while
    the validation error still falls at the end of the run (0: never).
    """

    network: NetworkConfig = NetworkConfig()
    iterations: int = 500
    lr: float = 1e-3
    clip_norm: float | None = None
    lr_half_life: float | None = None
    lr_decay_begin: int = 0
    ema: float = 0.99
    rescale: bool = True
    data_consistency: bool = False
    chunk: int = 50
    loop: str = "auto"
    compute_dtype: str = "float32"
    ssim_every: int = 0
    early_stopping: ESConfig = ESConfig()
    holdout: float = 0.0
    extend: float = 0.0

    def __post_init__(self):
        check_choice(self.compute_dtype, tuple(COMPUTE_DTYPES), "compute_dtype")
        check_choice(self.loop, ("auto", *engine.DRIVERS), "loop")
        for name in ("iterations", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")
        check_number(self.lr, "lr")
        check_number(self.clip_norm, "clip_norm", optional=True)
        check_number(self.lr_half_life, "lr_half_life", optional=True)
        check_number(self.lr_decay_begin, "lr_decay_begin", inclusive=True)
        check_number(self.holdout, "holdout", inclusive=True)
        check_number(self.extend, "extend", inclusive=True)
        if self.ssim_every < 0:
            raise ValueError(f"ssim_every must be >= 0 (0: never), got {self.ssim_every}")
        if self.holdout >= 0.5:
            raise ValueError(f"holdout must be a fraction in [0, 0.5), got {self.holdout!r}")


def real_view(a):
    """Real entries of ``a``: ``(real, imag)`` stacked on a last axis for complex arrays."""
    return jnp.stack([a.real, a.imag], axis=-1) if jnp.iscomplexobj(a) else a


def discrepancy(r, kind: str):
    """``"l1"``: ``mean |r_i|``; ``"l2"``: ``mean r_i^2``; the mean runs over all real entries of ``r``
    (real and imaginary parts separately, unsampled k-space zeros included)."""
    r = real_view(r)
    return jnp.mean(jnp.abs(r)) if kind == "l1" else jnp.mean(jnp.square(r))


def measured_discrepancy(r, mask, kind: str):
    """:func:`discrepancy` averaged over the measured entries only (``mask != 0``, broadcast to ``r``;
    real and imaginary parts count separately), so its scale does not change with the sampling rate."""
    measured = jnp.broadcast_to(mask != 0, r.shape)
    if jnp.iscomplexobj(r):
        measured = jnp.stack([measured, measured], axis=-1)
    values = jnp.abs(real_view(r)) if kind == "l1" else jnp.square(real_view(r))
    return jnp.sum(jnp.where(measured, values, 0.0)) / jnp.maximum(jnp.sum(measured), 1)


def network_forward(module, compute_dtype: str = "float32") -> Callable:
    """``forward(params, net_state, x) -> (out float32, new net_state)``, BatchNorm in batch-statistics
    mode. With ``"bfloat16"`` parameters and input are cast to bf16 for the pass (gradients flow
    back to the float32 parameters) and the updated statistics are cast back to their dtypes."""
    from ..networks import apply_network

    dtype = COMPUTE_DTYPES[compute_dtype]

    def forward(params, net_state, x):
        if dtype != jnp.float32:
            params = jax.tree.map(lambda p: p.astype(dtype), params)
            x = x.astype(dtype)
        out, variables = apply_network(module, {"params": params, **net_state}, x, train=True)
        new_state = {k: v for k, v in variables.items() if k != "params"}
        new_state = jax.tree.map(lambda n, o: n.astype(o.dtype), new_state, net_state)
        return out.astype(jnp.float32), new_state

    return forward


def build_network(config: NetworkConfig, out_channels: int, image_hw: tuple[int, int] | None = None):
    """The configured Flax module with ``out_channels`` outputs; given ``image_hw``, a decoder that
    cannot reach that size from its own input size is set to output it (``with_image_size``)."""
    from ..networks import get_network, network_input_shape, with_image_size

    module = get_network(config.name, **{**config.overrides(), "out_channels": int(out_channels)})
    if image_hw is not None:
        try:
            network_input_shape(module, image_hw, 1)
        except ValueError:
            module = with_image_size(module, image_hw)
    return module


def data_consistency(operator, x, y):
    """``x + A^H (y - A x)``.

    MRI with ``sum_c |S_c|^2 = 1``: this is exactly "replace the sampled k-space of each coil image
    and SENSE-combine": ``sum_c S_c^* F^H (M y_c + (1 - M) F S_c x)``. Inpainting: the known pixels
    are replaced, ``(1 - m) x + m y``.
    """
    return x + operator.adjoint(y - operator(x))


def as_key(key) -> tuple[jax.Array, int]:
    """``(PRNG key, integer seed)`` from an int seed, a key, or ``None`` (seed 0)."""
    if key is None or isinstance(key, (int, np.integer)):
        seed = 0 if key is None else int(key)
        return jax.random.PRNGKey(seed), seed
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return key, int(np.asarray(data).ravel()[-1])


def fast_key(key):
    """An ``"rbg"`` key derived deterministically from ``key``. XLA compiles threefry draws several
    times more slowly (a U-Net's initialisers, a ``fold_in`` + ``uniform`` in the step). ``"rbg"``
    streams are reproducible on a given backend but may differ between CPU and GPU."""
    return jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")


def _power_of_two(value: float) -> float:
    """The power of two nearest ``value`` (1 for 0 or non-finite values)."""
    return 2.0 ** round(math.log2(value)) if value > 0 and math.isfinite(value) else 1.0


def problem_keys(key):
    """``(weights, input, held-out locations)`` keys of a problem run with ``key`` (key or int seed):
    fast ``"rbg"`` keys (:func:`fast_key`)."""
    return tuple(jax.random.split(fast_key(as_key(key)[0]), 3))


def check_measurements(operator, y):
    """``y`` as an array of the operator's output shape, finite; ValueError otherwise."""
    y = jnp.asarray(y)
    expected = jax.eval_shape(operator, jax.ShapeDtypeStruct(tuple(operator.image_shape), operator.image_dtype))
    if y.shape != expected.shape:
        raise ValueError(f"y: expected measurements of shape {expected.shape}, got {y.shape}")
    if not isinstance(y, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(y))):  # checked where concrete
        raise ValueError("y: contains NaN or Inf")
    return y.astype(expected.dtype)


def check_image(operator, x, name):
    """An image of the operator's image shape (``None`` passes through)."""
    if x is None:
        return None
    x = jnp.asarray(x)
    if x.shape != tuple(operator.image_shape):
        raise ValueError(f"{name}: expected shape {tuple(operator.image_shape)}, got {x.shape}")
    return x


def to_image(operator, t, scale):
    """Channels tensor ``(H, W, C)`` of the scaled problem -> image in the units of ``y``."""
    return from_channels(t, operator) / scale


def display(x):
    """What metrics compare: the magnitude of complex images, real images as they are."""
    return jnp.abs(x) if jnp.iscomplexobj(x) else x


@dataclasses.dataclass(frozen=True)
class DIPTask:
    """What makes a DIP method: its name and config, how it builds the network input, its loss, and
    (when the input is optimised) the input's optimiser.

    ``make_input(key, operator, y, input_shape) -> (z0 (1, h, w, c), in_image_units)`` where
    ``input_shape(channels)`` is the network's per-sample input shape. When ``in_image_units`` is
    true, ``z0`` is an image in the units of ``y`` (e.g. ``A^H y``): the scale ``s`` is computed with
    ``z0 / max|z0|`` as network input and the input becomes ``s z0``, in the units of ``y_s``.
    ``make_loss(forward) -> loss_fn`` receives the network forward of :func:`network_forward`; the
    engine's ``data = {"operator", "y", "scale"}`` carries the scaled problem, plus the entries of
    ``make_data(operator, y_s) -> dict`` (per-problem arrays the loss needs, from the scaled
    measurements ``y_s``) when the task has one.
    ``candidates(operator) -> {name: values}``: settings that the loss reads from ``data[name]``,
    ordered from least to most regularising, to be chosen per problem by self-validation
    (``config.holdout > 0``): each value runs ``pilot`` steps from the same start, and the most
    regularising one whose pilot error is within one standard error of the smallest goes on
    (:func:`one_standard_error_choice`); ``make_data`` must set ``data[name]`` to the value used
    without a choice. ``restart(operator) -> (before, {name: value})`` or ``None``: when there is
    nothing to choose, a run (with self-validation) whose smallest validation error came before
    ``before * iterations`` starts again from its start with ``data[name] = value`` (settings for a
    fit that reproduces noise early, as at a low SNR; :func:`_restart_early`).
    ``resolve(config, operator) -> config``: the config with its operator-dependent presets
    (``"auto"`` fields) set, as recorded in :attr:`Result.config`.
    """

    method: str
    config: DIPBaseConfig
    make_input: Callable
    make_loss: Callable
    z_optimizer: Any = None
    make_data: Callable | None = None
    candidates: Callable | None = None
    pilot: int = 0
    resolve: Callable | None = None
    restart: Callable | None = None

    def choices(self, operator) -> dict[str, tuple]:
        """The candidate values to choose from (empty: nothing to choose)."""
        if self.candidates is None or not self.config.holdout:
            return {}
        return {k: tuple(v) for k, v in self.candidates(operator).items() if len(v) > 1}

    def restart_rule(self, operator) -> tuple[float, dict] | None:
        """``(before, settings)`` of :attr:`restart` for ``operator`` (``None``: no restart)."""
        if self.restart is None or not self.config.holdout:
            return None
        return self.restart(operator)


@dataclasses.dataclass
class Setup:
    """One problem ready for the engine: the initial ``params``, ``net_state`` and input ``z``, the
    run's ``key``, ``data = {"operator", "y" (scaled), "scale", ...}``, the metric ``target`` (or ``None``),
    and the problem's ``operator``, unscaled ``y`` and integer ``seed`` (for the :class:`Result`).
    With self-validation ``data`` holds the fit's operator and data and the held-out ones
    (``"val_operator"``, ``"y_val"``; :func:`.self_validation.split`), and ``held_out`` their count."""

    params: Any
    net_state: Any
    z: jnp.ndarray
    key: jax.Array
    data: dict
    target: Any
    y: jnp.ndarray
    seed: int
    operator: Any = None
    held_out: int = 0
    opt_state: Any = None

    def engine_args(self):
        """``(params, net_state, z, key, data, target, opt_state)``: what differs between problems of
        one task (``opt_state``: ``None`` but for a warm start)."""
        return self.params, self.net_state, self.z, self.key, self.data, self.target, self.opt_state


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """Where a run ended, to start a neighbouring problem of the same size from (the next slice of a
    volume): the network's final ``params``, ``net_state`` and optimiser state (``opt_state``, its
    leaves: the moments go on, so the first steps do not jolt the weights), the data ``scale`` of
    that run (network units per unit of ``y``, kept so that the weights' outputs keep their meaning)
    and the settings its self-validation ``chosen`` (the neighbour uses them without pilots)."""

    params: Any
    net_state: Any
    opt_state: list
    scale: float
    chosen: dict = dataclasses.field(default_factory=dict)

    def to_bytes(self) -> bytes:
        from flax import serialization

        return serialization.msgpack_serialize(jax.device_get(dataclasses.asdict(self)))

    @classmethod
    def from_bytes(cls, blob: bytes) -> WarmStart:
        from flax import serialization

        fields = serialization.msgpack_restore(blob)
        return cls(
            fields["params"], fields["net_state"], list(fields["opt_state"]), float(fields["scale"]), fields["chosen"]
        )


def setup(task: DIPTask, operator, y, key, target=None, warm: WarmStart | None = None) -> Setup:
    """Build the network, the input and the rescaling of one problem (``warm``: start from the weights
    and the data scale of a neighbouring problem's run instead, with its chosen settings).

    Weights and input are drawn with a fast ``"rbg"`` key; the per-step key stays threefry, whose
    draws do not change under ``jax.vmap``, so a problem gives the same iterates alone or in a batch.
    """
    from ..networks import init_network, network_input_shape
    from . import self_validation

    config = task.config
    y = check_measurements(operator, y)
    target = check_image(operator, target, "target")
    key, seed = as_key(key)
    k_net, k_z, k_hold = problem_keys(key)
    hw = tuple(operator.image_shape[:2])
    module = build_network(config.network, n_channels(operator), hw)
    # y in units of a power of two near its peak (exact in floating point, so the iterates do not
    # change), so that norms neither underflow nor overflow at any units of y
    unit = _power_of_two(float(jnp.max(jnp.abs(y)))) if config.rescale else 1.0
    fit_op, y_fit, held = operator, y / unit, {}
    if config.holdout:
        fit_op, y_fit, val_op, y_val = self_validation.split(operator, y_fit, config.holdout, k_hold)
        held = {"val_operator": val_op, "y_val": y_val}
    # an input image (A^H y, a least-squares fill) from y_fit too: at the units of y its inner
    # products would underflow or overflow
    z0, in_image_units = task.make_input(k_z, fit_op, y_fit, lambda c: network_input_shape(module, hw, c))
    z_unit = z0 / jnp.max(jnp.abs(z0)) if in_image_units else z0
    variables = jax.jit(lambda k, z: init_network(module, k, z))(k_net, z_unit)
    params = variables["params"]
    net_state = {k: v for k, v in variables.items() if k != "params"}

    scale, opt_state = jnp.float32(1.0), None
    if warm is not None:
        params, net_state = _like((params, net_state), (warm.params, warm.net_state))
        fresh = engine_config(task, operator).optimizer.init(params)
        opt_state = jax.tree.unflatten(jax.tree.structure(fresh), _like(jax.tree.leaves(fresh), warm.opt_state))
        scale = jnp.float32(warm.scale * unit)
    elif config.rescale:
        out0, _ = jax.jit(network_forward(module, config.compute_dtype))(params, net_state, z_unit)
        scale = jnp.linalg.norm(out0) / jnp.linalg.norm(fit_op.adjoint(y_fit))
    if in_image_units:
        z0 = z0 * scale
    data = {"operator": fit_op, "y": y_fit * scale, "scale": scale / unit}
    if held:
        data.update(val_operator=held["val_operator"], y_val=held["y_val"] * scale)
    if task.make_data is not None:
        data.update(task.make_data(fit_op, data["y"]))
    if warm is not None:
        data.update({k: jnp.full_like(data[k], v) for k, v in warm.chosen.items()})
    return Setup(
        params=params,
        net_state=net_state,
        z=z0,
        key=jax.random.fold_in(key, 1),
        data=data,
        target=None if target is None else display(target),
        y=y,
        seed=seed,
        operator=operator,
        held_out=int(np.count_nonzero(self_validation.measured_locations(held["val_operator"]))) if held else 0,
        opt_state=opt_state,
    )


def _like(fresh, given):
    """``given`` as arrays, checked to have the structure and shapes of ``fresh``."""
    given = jax.tree.map(jnp.asarray, given)
    if jax.tree.structure(fresh) != jax.tree.structure(given) or [np.shape(a) for a in jax.tree.leaves(fresh)] != [
        np.shape(a) for a in jax.tree.leaves(given)
    ]:
        raise ValueError("warm start: the weights are of another network or image size than this problem's")
    return given


def engine_config(task: DIPTask, operator) -> engine.EngineConfig:
    """The engine settings shared by every problem of ``task`` (``operator``: any of them)."""
    config = task.config
    module = build_network(config.network, n_channels(operator), tuple(operator.image_shape[:2]))
    return engine.EngineConfig(
        loss_fn=task.make_loss(network_forward(module, config.compute_dtype)),
        iterations=config.iterations,
        optimizer=engine.adam(config.lr, config.clip_norm, config.lr_half_life, config.lr_decay_begin),
        z_optimizer=task.z_optimizer,
        chunk=config.chunk,
        ema=config.ema,
        early_stopping=config.early_stopping,
        metric_image=lambda t, data: display(to_image(data["operator"], t, data["scale"])),
        ssim_every=config.ssim_every,
        desc=task.method,
        loop=config.loop,
        validate=_validate if config.holdout else None,
    )


def _validate(t, data):
    """The self-validation error (:func:`.self_validation.validation_error`) of channels image ``t``."""
    from .self_validation import validation_error

    op = data["val_operator"]
    return validation_error(op, data["y_val"], from_channels(t, op))


def make_result(task: DIPTask, problem: Setup, out: engine.RunOutput, chosen: dict | None = None) -> Result:
    """Package an (unbatched) engine output of ``problem`` as a :class:`Result` in the units of ``y``;
    ``chosen``: the settings self-validation chose and how (:func:`run_dip_batch`)."""
    config = task.config
    operator, scale = problem.operator, problem.data["scale"]

    def finish(t):
        x = to_image(operator, t, scale)
        if config.data_consistency:
            x = data_consistency(operator, x, problem.y)
        return np.asarray(jax.device_get(restrict_to_support(operator, x)))

    def spread(var):
        v = from_channels(var, operator)
        v = v.real + v.imag if jnp.iscomplexobj(v) else v
        return np.asarray(jax.device_get(restrict_to_support(operator, jnp.sqrt(jnp.maximum(v, 0)) / scale)))

    ema_image = finish(out.state.ema)
    stop_image = None if out.stop_image is None else finish(out.stop_image)
    select, selection = out.state.select, None
    selected = select is not None and int(select.step) >= 0
    uncertainty = spread(select.var if selected else out.state.ema_var)
    image = ema_image
    if selected:
        image = finish(select.image)
        selection = {
            "rule": "self-validation",
            "holdout": config.holdout,
            "held_out": problem.held_out,
            "iteration": int(select.step),
            "validation_error": float(select.value),
            **(chosen or {}),
        }
    if stop_image is not None and config.early_stopping.stop:
        image = stop_image
    presets = config if task.resolve is None else task.resolve(config, operator)
    resolved = to_dict(dataclasses.replace(presets, **(chosen or {}).get("chosen", {})))
    return Result(
        method=task.method,
        image=image,
        ema_image=ema_image,
        last_iterate=finish(out.state.image),
        history=out.history,
        iterations=out.iterations,
        config=resolved,
        seed=problem.seed,
        wall_time=out.wall_time,
        stop_iteration=out.stop_iteration,
        stop_image=stop_image,
        diverged=out.diverged,
        selection=selection,
        uncertainty=uncertainty,
        warm_start=WarmStart(
            out.state.params,
            out.state.net_state,
            jax.tree.leaves(out.state.opt_state),
            float(scale),
            dict((chosen or {}).get("chosen", {})),
        ),
    )


def _pick(trees, best):
    """Per problem, the tree of the chosen candidate: ``trees[best]`` (``best`` an int), or for a batch
    (``best (B,)``) leaf ``[b]`` of ``trees[best[b]]``, on the host."""
    if np.ndim(best) == 0:
        return trees[int(best)]
    columns = np.arange(len(best))
    return jax.tree.map(
        lambda *leaves: np.stack([np.asarray(a) for a in leaves])[best, columns], *jax.device_get(trees)
    )


def _continue(run, config, out: engine.RunOutput, steps: int, key, data) -> engine.RunOutput:
    """``out`` continued for ``steps`` more steps (:func:`sgdip_jax.engine.run` from its state), one history."""
    rest = run(dataclasses.replace(config, iterations=steps), None, None, None, key, data, state=out.state)
    return dataclasses.replace(
        rest,
        history={k: np.concatenate([out.history[k], rest.history[k]]) for k in rest.history},
        iterations=out.iterations + rest.iterations,
        wall_time=out.wall_time + rest.wall_time,
        compile_time=out.compile_time + rest.compile_time,
        chunks=out.chunks + rest.chunks,
        diverged=None if rest.diverged is None else out.iterations + rest.diverged,
    )


def _choose(task: DIPTask, config, choices, run, params, net_state, z, key, data):
    """Every candidate of ``choices`` runs ``task.pilot`` steps from the same start; per problem the
    one whose pilot reached the smallest validation error goes on. ``(output of the chosen pilots,
    their data, per problem {requested, candidates, pilot, pilot_validation, chosen})``."""
    combos = [dict(zip(choices, values)) for values in itertools.product(*choices.values())]
    pilot = min(task.pilot, config.iterations)
    runs = []  # (combo, label, data, output, score per problem)
    for combo in combos:
        with_combo = {**data, **{k: jnp.full_like(data[k], v) for k, v in combo.items()}}
        label = ", ".join(f"{k}={v:g}" for k, v in combo.items())
        out = run(dataclasses.replace(config, iterations=pilot, desc=f"{task.method} pilot {label}"),
                  params, net_state, z, key, with_combo)  # fmt: skip
        val = out.history.get("val")
        score = np.full(np.shape(data["scale"]), np.inf) if val is None or not len(val) else np.min(val, axis=0)
        runs.append((combo, label, with_combo, out, np.where(out.diverged is None, score, np.inf)))
        es = out.state.es
        detected = es is not None and bool(np.all(jax.device_get(es.triggered)))
        if out.iterations < pilot and out.diverged is None and not detected:  # the callback stopped it: report it
            runs = runs[-1:]
            break
    best = one_standard_error_choice(np.stack([r[4] for r in runs]), data["y_val"])
    picked = runs[int(best) if np.ndim(best) == 0 else 0][3]
    history = picked.history
    if np.ndim(best):
        columns = np.arange(len(best))
        history = {k: np.stack([r[3].history[k] for r in runs])[best, :, columns].T for k in history}
    state = _pick([r[3].state for r in runs], best)
    out = dataclasses.replace(
        picked,
        state=jax.tree.map(jnp.asarray, state),
        history=history,
        wall_time=sum(r[3].wall_time for r in runs),
        compile_time=sum(r[3].compile_time for r in runs),
    )
    chosen = [
        {
            "requested": {k: getattr(task.config, k) for k in choices},
            "candidates": {k: list(v) for k, v in choices.items()},
            "pilot": pilot,
            "pilot_validation": {r[1]: float(np.ravel(r[4])[i if np.ndim(r[4]) else 0]) for r in runs},
            "chosen": runs[int(b)][0],
        }
        for i, b in enumerate(np.ravel(best))
    ]
    return out, jax.tree.map(jnp.asarray, _pick([r[2] for r in runs], best)), chosen if np.ndim(best) else chosen[0]


def one_standard_error_choice(scores, y_val):
    """Index of the candidate to keep, per problem, from the pilots' validation errors ``scores
    (n_candidates[, B])``, candidates ordered from least to most regularising: the *last* one whose
    error is within one standard error of the smallest (the "one-standard-error rule" of
    cross-validation). The relative standard error of ``e = ||r_v|| / ||y_v||`` over ``n``
    independent real held-out values is about ``1 / sqrt(2 n)``; ``y_val`` (``[B,] ...``) gives ``n``."""
    scores = np.asarray(scores, np.float64)
    best = np.min(scores, axis=0)
    within = scores <= best * (1 + relative_standard_error(y_val, scores.shape[1:]))
    return (len(scores) - 1 - np.argmax(within[::-1], axis=0)).astype(int)


def relative_standard_error(y_val, batch_shape: tuple = ()) -> np.ndarray:
    """``1 / sqrt(2 n)`` per problem: ``n`` the real held-out values in ``y_val`` (``batch_shape + ...``)."""
    values = np.asarray(jax.device_get(y_val))
    n = (2 if np.iscomplexobj(values) else 1) * np.count_nonzero(values.reshape(tuple(batch_shape) + (-1,)), axis=-1)
    return 1 / np.sqrt(2 * np.maximum(n, 1))


def _still_improving(out: engine.RunOutput, block: int = 0, y_val=None) -> bool:
    """Whether the smallest validation error of some problem lies in the last tenth of the steps run
    or, given ``block``, whether the last ``block`` steps lowered it by more than one standard error
    (:func:`relative_standard_error` of ``y_val``)."""
    if block:
        val = np.asarray(out.history["val"], np.float64)
        before, recent = np.min(val[:-block], axis=0), np.min(val[-block:], axis=0)
        return bool(np.any(recent < before * (1 - relative_standard_error(y_val, np.shape(before)))))
    step = np.asarray(jax.device_get(out.state.select.step))
    return bool(np.any(step >= out.iterations - max(1, out.iterations // 10)))


def _extend(run, config, out, planned: int, steps: int, block: int, key, data, gain: bool = False):
    """``out`` (a run of ``planned`` steps) continued in blocks of ``block`` steps, ``steps`` in all at
    most, while self-validation's error still falls at its end (:func:`_still_improving`; ``gain``:
    by more than one standard error over the last block) and no run was cut short (callback, early
    stopping, divergence)."""
    config = dataclasses.replace(config, desc=f"{config.desc} extended")
    while (
        steps > 0
        and out.diverged is None
        and out.iterations == planned
        and _still_improving(out, *((min(block, planned - 1), data["y_val"]) if gain else ()))
    ):
        n = min(block, steps)
        out = _continue(run, config, out, n, key, data)
        planned, steps = planned + n, steps - n
    return out


def _restart_early(task: DIPTask, rule, fit, iterations: int, out, data) -> tuple[engine.RunOutput, list[dict]]:
    """:meth:`DIPTask.restart_rule` applied to ``out``, the output of ``fit(data, desc)`` (a run of
    ``iterations`` steps from the problems' start, extended as self-validation asks): every problem
    whose smallest validation error came before ``before * iterations`` is fitted again with the
    rule's settings. A batch reruns whole; its other problems keep their settings, so their runs
    repeat exactly. ``(output, per problem {requested, candidates, restart_before, first_stop,
    chosen})``."""
    before, settings = rule
    step = np.atleast_1d(np.asarray(jax.device_get(out.state.select.step)))
    threshold = round(before * iterations)
    # a run cut short (callback, early stopping, divergence) is reported as it is
    early = (step >= 0) & (step < threshold) & (out.diverged is None and out.iterations >= iterations)
    presets = {k: np.atleast_1d(np.asarray(jax.device_get(data[k]), np.float64)) for k in settings}
    if early.any():
        mask = jnp.asarray(early.reshape(np.shape(data["scale"])))
        data = {**data, **{k: jnp.where(mask, jnp.asarray(v, data[k].dtype), data[k]) for k, v in settings.items()}}
        label = ", ".join(f"{k}={v:g}" for k, v in settings.items())
        again = fit(data, f"{task.method} restarted, {label}")
        out = dataclasses.replace(
            again, wall_time=out.wall_time + again.wall_time, compile_time=out.compile_time + again.compile_time
        )
    return out, [
        {
            "requested": {k: getattr(task.config, k) for k in settings},
            "candidates": {k: [float(presets[k][i]), float(v)] for k, v in settings.items()},
            "restart_before": threshold,
            "first_stop": int(step[i]),
            "chosen": {k: float(v) if early[i] else float(presets[k][i]) for k, v in settings.items()},
        }
        for i in range(len(step))
    ]


def _run_engine(task: DIPTask, operator, engine_args, *, batched: bool = False, warm: int = 0, **options):
    """:func:`sgdip_jax.engine.run` of ``task`` on ``engine_args`` (:meth:`Setup.engine_args`, maybe
    stacked) -> ``(output, chosen)``. With candidate settings (:meth:`DIPTask.choices`) they are
    chosen per problem by :func:`_choose` (``chosen``: what was chosen and how; else ``None``) and the
    chosen run goes on to the budget. With self-validation the run is then extended, by
    ``extend * iterations`` steps at most, in two blocks, while the validation error still falls at
    its end. Without candidates, a task's restart rule (:meth:`DIPTask.restart_rule`) may then run a
    problem again with other settings (:func:`_restart_early`; ``chosen`` records it). ``warm > 0``
    (problems set up from a :class:`WarmStart`, self-validation required): no candidates and no
    restart; ``warm`` steps, then blocks of ``warm`` steps while the last block lowered the
    validation error by more than one standard error, up to ``iterations``."""
    config = engine_config(task, operator)
    params, net_state, z, key, data, target, opt_state = engine_args
    run = functools.partial(engine.run, target=target, batched=batched, **options)
    allowed = round(task.config.extend * config.iterations) if task.config.holdout else 0
    choices, chosen = {} if warm else task.choices(operator), None
    if warm:
        first = min(warm, config.iterations)
        out = run(dataclasses.replace(config, iterations=first, desc=f"{task.method} warm-started"),
                  params, net_state, z, key, data, opt_state=opt_state)  # fmt: skip
        return _extend(run, config, out, first, config.iterations - first, first, key, data, gain=True), None
    block = max(1, (allowed + 1) // 2)
    if choices:
        out, data, chosen = _choose(task, config, choices, run, params, net_state, z, key, data)
        if out.iterations == task.pilot < config.iterations:
            out = _continue(run, config, out, config.iterations - out.iterations, key, data)
        return _extend(run, config, out, config.iterations, allowed, block, key, data), chosen

    def fit(data, desc=task.method):
        out = run(dataclasses.replace(config, desc=desc), params, net_state, z, key, data)
        return _extend(run, config, out, config.iterations, allowed, block, key, data)

    out, rule = fit(data), task.restart_rule(operator)
    if rule is None:
        return out, None
    out, chosen = _restart_early(task, rule, fit, config.iterations, out, data)
    return out, chosen if batched else chosen[0]


def run_dip(task: DIPTask, operator, y, key, *, target=None, progress: bool = True, callback=None) -> Result:
    """Run ``task`` on one problem: :func:`setup`, :func:`sgdip_jax.engine.run` (with the candidates'
    pilots, :func:`_run_engine`), :func:`make_result`. (Many problems at once: :func:`run_dip_batch`.)"""
    problem = setup(task, operator, y, key, target)
    out, chosen = _run_engine(task, operator, problem.engine_args(), progress=progress, callback=callback)
    return make_result(task, problem, out, chosen)


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
    warm: Sequence[WarmStart] | None = None,
    warm_steps: int = 0,
) -> list[Result]:
    """Run one DIP method on ``B`` problems in one compiled step; one :class:`Result` per problem.

    ``tasks[i]`` is problem ``i``'s :class:`~sgdip_jax.methods.common.DIPTask` (same method and config
    for all; they may differ in how they build their input, e.g. each slice's own reference image).
    ``keys``: a PRNG key or int seed per problem. ``devices``: shard the batch over these devices
    (``None``: no sharding, the default device). ``callback`` is the engine's, on the batched state.
    ``warm``: a :class:`WarmStart` per problem (each result's :attr:`Result.warm_start` is one), run
    for ``warm_steps`` steps and then as long as self-validation's error still falls
    (:func:`_run_engine`; needs ``config.holdout > 0``).
    """
    n = len(tasks)
    if not n or not len(operators) == len(ys) == len(keys) == n or (targets is not None and len(targets) != n):
        raise ValueError("run_dip_batch: give one task, operator, measurement, key (and target) per problem")
    if len({(t.method, repr(t.config)) for t in tasks}) != 1:
        raise ValueError("run_dip_batch: all problems of a batch must use the same method and config")
    targets = [None] * n if targets is None else list(targets)
    if len({t is None for t in targets}) != 1:
        raise ValueError("run_dip_batch: give a target for every problem or for none")
    if warm is not None and (len(warm) != n or warm_steps < 1 or not tasks[0].config.holdout):
        raise ValueError(
            "run_dip_batch: a warm start needs one WarmStart per problem, warm_steps >= 1 and self-validation "
            "(holdout > 0), whose error sets each warm-started run's length"
        )
    starts = [None] * n if warm is None else list(warm)
    problems = [setup(*args) for args in zip(tasks, operators, ys, keys, targets, starts)]
    sharding = None
    if devices is not None:
        sharding = engine.slice_sharding(devices)
        pad = math.ceil(n / len(sharding.mesh.devices)) * len(sharding.mesh.devices) - n
        problems_padded = problems + [problems[-1]] * pad
    else:
        problems_padded = problems
    out, chosen = _run_engine(
        tasks[0],
        operators[0],
        _stack([p.engine_args() for p in problems_padded]),
        progress=progress,
        callback=callback,
        batched=True,
        sharding=sharding,
        warm=warm_steps if warm is not None else 0,
    )
    if warm is not None:  # the settings came with the weights
        chosen = [{"warm_start": warm_steps, **({"chosen": w.chosen} if w.chosen else {})} for w in warm]
    chosen = [None] * n if chosen is None else chosen
    return [make_result(t, p, o, c) for t, p, o, c in zip(tasks, problems, out.unbatch()[:n], chosen)]
