"""Self-guided deep image prior (Liang, Bell, Qu, Wang, Ravishankar, IEEE TCI 11, 2025).

Weights ``theta`` **and** input ``z`` are optimised jointly with a denoising regulariser:

    min_{theta, z}  max( D( A mean_k f_theta(z + eta_k),  y_s ),  tau E D(n) )  +  alpha R  [+ tv TV(x_hat)],
    R = mean_k D'( f_theta(z + eta_k), z )        (reg_on="per_draw")
    R = D'( mean_k f_theta(z + eta_k), z )        (reg_on="mean")

with ``K = draws`` noise draws evaluated as one batch of the network (batch axis ``k``), and the
reconstruction ``x_hat = mean_k f_theta(z + eta_k)`` (reported as its moving average).
The floor ``tau E D(n)`` (``tau = data_floor``; not in the paper; 0 switches it off) is the data
term's expected value at the true image, whose residual is the noise ``n``: once the fit is as close
as the noise allows, the data term gives no gradient, so the weights do not go on to fit the noise
(Morozov's discrepancy principle as a constraint, ``D <= tau E D(n)``; :func:`noise_floor`).
The optional last term (``tv > 0``, "DIP-TV"; not in the paper) is the isotropic total variation
``TV(x) = mean_i sqrt(sum_d |(G_d x)_i|^2 + eps)`` of the image, with the circular differences of
the ``tv`` baseline (:func:`~.classical.finite_differences`).
``D`` / ``D'`` are ``"l1"`` (mean absolute value) or ``"l2"`` (mean square) over real entries:
``D`` over the *measured* entries of ``y`` only (:func:`~.common.measured_discrepancy`, so ``alpha``
means the same at every sampling rate), ``D'`` over all entries of the image. Noise:
``eta_k = c max|z| u_k`` with ``u_k ~ U[0, 1)`` (``"uniform"``, as the public re-implementation) or
``u_k ~ N(0, 1)`` (``"gaussian"``: relative std ``c``); ``max|z|`` is treated as a constant (no
gradient through the noise amplitude). Gradients
reach ``z`` through the network input and through the regulariser's target. ``z`` starts as
``U[0, 1)`` noise (the reference notebook), as the zero-filled image ``A^H y_s`` (the paper, and the
MRI default; in the units of the rescaled measurements), or as the operator's filled image: for MRI
a few conjugate-gradient steps of SENSE (:meth:`~sgdip_jax.operators.MultiCoilMRI.fill`, aliasing
resolved from the coils), for inpainting (the default there) the masked image with its holes
interpolated (:meth:`~sgdip_jax.operators.Inpainting.fill`; the masked image itself is a fixed point
of the objective for an identity-like network); it has its own Adam (``lr_z``, optional ``clip_norm_z``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp

from .. import engine
from ..channels import from_channels, n_channels, to_channels
from ..config import check_choice, check_number
from ..operators import Inpainting
from .classical import finite_differences
from .common import (
    DISCREPANCIES,
    DIPBaseConfig,
    DIPTask,
    discrepancy,
    measured_discrepancy,
    run_dip,
)
from .result import Result
from .self_validation import HOLDOUT

NOISES = ("uniform", "gaussian")
REG_ON = ("per_draw", "mean")
Z_INITS = ("auto", "zero_filled", "uniform", "filled")


@dataclasses.dataclass(frozen=True)
class SGDIPConfig(DIPBaseConfig):
    """Self-guided DIP (common fields: :class:`~.common.DIPBaseConfig`).

    ``data_loss`` / ``reg_loss``: ``"l1"`` or ``"l2"`` for ``D`` and ``D'``.
    ``reg_on``: ``"per_draw"`` or ``"mean"``. ``alpha``: regulariser weight. ``draws``: ``K``.
    ``noise``: ``"uniform"`` or ``"gaussian"``; ``noise_scale``: ``c`` (relative to ``max|z|``), or
    ``"auto"``: for inpainting chosen per case by self-validation from :data:`NOISE_SCALES`
    (``holdout > 0``: each candidate runs ``pilot`` steps, the most regularising one within one
    standard error of the smallest held-out error continues; :mod:`.self_validation`), otherwise
    the operator's preset in :data:`AUTO`; with self-validation a run with the preset whose
    smallest held-out error comes before ``restart_before * iterations`` starts again with
    :data:`LOW_SNR_NOISE_SCALE` (0: never).
    ``z_init``: ``"zero_filled"`` (``A^H y_s``), ``"uniform"`` (``U[0, 1)``, operator channels),
    ``"filled"`` (the operator's ``fill(y_s)``: MRI, early-stopped CG-SENSE,
    :meth:`~.MultiCoilMRI.fill`; inpainting, the missing pixels interpolated, :meth:`~.Inpainting.fill`)
    or ``"auto"``: ``"filled"`` for inpainting, else ``"zero_filled"``.
    ``lr_z`` / ``clip_norm_z``: Adam learning rate and gradient-norm clip of the input;
    ``lr_z_half_life`` / ``lr_z_decay_begin``: its rate's decay, as ``lr_half_life`` /
    ``lr_decay_begin`` for the weights (:class:`~.common.DIPBaseConfig`).
    ``tv``: weight of the DIP-TV term (0: the paper's objective).
    ``data_floor``: ``tau`` of the data term's floor ``tau E D(n)`` (:func:`noise_floor`; 0: none).
    ``holdout``: the fraction of measured locations held out for self-validation (0: none; the
    reported image is then the final moving average). ``pilot``: steps of each candidate's pilot.

    The defaults and the evidence for each are in ``benchmarks/RESULTS.md``; the final
    data-consistency step (``data_consistency``) puts every measurement, held-out ones included,
    into the reported image.
    """

    iterations: int = 1000
    lr: float = 1e-2
    ema: float = 0.95
    data_consistency: bool = True
    data_loss: str = "l1"
    reg_loss: str = "l1"
    reg_on: str = "per_draw"
    alpha: float = 0.005
    draws: int = 2
    noise: str = "uniform"
    noise_scale: float | Literal["auto"] = "auto"
    z_init: str = "auto"
    lr_z: float = 1e-2
    clip_norm_z: float | None = None
    lr_z_half_life: float | None = 300.0
    lr_z_decay_begin: int = 800
    tv: float = 0.0
    data_floor: float = 0.0
    holdout: float = HOLDOUT
    pilot: int = 200
    extend: float = 0.4
    restart_before: float = 0.8

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.data_loss, DISCREPANCIES, "data_loss")
        check_choice(self.reg_loss, DISCREPANCIES, "reg_loss")
        check_choice(self.reg_on, REG_ON, "reg_on")
        check_choice(self.noise, NOISES, "noise")
        check_choice(self.z_init, Z_INITS, "z_init")
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {self.draws}")
        check_number(self.alpha, "alpha", inclusive=True)
        if self.noise_scale != "auto":
            check_number(self.noise_scale, "noise_scale", inclusive=True)
        check_number(self.lr_z, "lr_z", inclusive=True)
        check_number(self.clip_norm_z, "clip_norm_z", optional=True)
        check_number(self.lr_z_half_life, "lr_z_half_life", optional=True)
        check_number(self.lr_z_decay_begin, "lr_z_decay_begin", inclusive=True)
        check_number(self.tv, "tv", inclusive=True)
        check_number(self.data_floor, "data_floor", inclusive=True)
        check_number(self.pilot, "pilot")
        if not 0.0 <= self.restart_before <= 1.0:
            raise ValueError(f"restart_before: expected a fraction of iterations in [0, 1], got {self.restart_before}")


AUTO = {"z_init": ("filled", "zero_filled"), "noise_scale": (1.0, 0.25)}
"""The values of the fields set to ``"auto"``: ``(for inpainting, for any other operator)``; with
self-validation (``holdout > 0``) an inpainting run's ``noise_scale = "auto"`` is chosen from
:data:`NOISE_SCALES` instead (the MRI value was chosen on the sweep's tuning images,
``benchmarks/RESULTS.md``)."""

NOISE_SCALES = (0.5, 1.0, 2.0)
"""The noise scales ``c`` that self-validation chooses from for inpainting, whose held-out known
pixels are like the missing ones. Under line undersampling (MRI) the held-out entries lie on
measured phase-encoding lines, and their error does not rank the scales as the error of the image
does (it favours the smallest scale; ``benchmarks/choice_rules.py``), so MRI takes its preset and
self-validation chooses only where to stop."""


def noise_scale_candidates(config, operator) -> dict[str, tuple]:
    """``{"noise_scale": NOISE_SCALES}`` for an inpainting run with ``noise_scale = "auto"``, else ``{}``."""
    if config.noise_scale != "auto" or not isinstance(operator, Inpainting):
        return {}
    return {"noise_scale": NOISE_SCALES}


LOW_SNR_NOISE_SCALE = 0.5
"""The MRI noise scale for a run that the preset fits to noise early: self-validation stopped the
preset's run before ``restart_before * iterations``, as at 20 dB on the sweep's tuning images and
not at 30 dB, and there the larger scale gave the better image (``benchmarks/RESULTS.md``). The
held-out error decides *when* the fit turns to noise, which the noise level sets, without an
estimate of that level."""


def noise_scale_restart(config, operator) -> tuple[float, dict] | None:
    """``(restart_before, {"noise_scale": LOW_SNR_NOISE_SCALE})`` for a non-inpainting run with
    ``noise_scale = "auto"`` (:attr:`.common.DIPTask.restart`), else ``None``."""
    if config.noise_scale != "auto" or isinstance(operator, Inpainting) or not config.restart_before:
        return None
    return config.restart_before, {"noise_scale": LOW_SNR_NOISE_SCALE}


def resolve_auto(config, operator):
    """``config`` with its ``"auto"`` fields (:data:`AUTO`) set for ``operator``."""
    which = 0 if isinstance(operator, Inpainting) else 1
    return dataclasses.replace(config, **{k: v[which] for k, v in AUTO.items() if getattr(config, k, None) == "auto"})


def draw_noise(key, z, config: SGDIPConfig, scale=None):
    """The ``K`` noise draws ``eta (K, h, w, c) = c max|z| u`` for input ``z (1, h, w, c)``, with
    ``c = scale`` or, without it, ``config.noise_scale`` (its ``"auto"`` resolved, :func:`resolve_auto`)."""
    shape = (config.draws, *z.shape[1:])
    u = jax.random.uniform(key, shape, z.dtype) if config.noise == "uniform" else jax.random.normal(key, shape, z.dtype)
    c = config.noise_scale if scale is None else scale
    return c * jax.lax.stop_gradient(jnp.max(jnp.abs(z))) * u


def total_variation(x, eps: float = 1e-12):
    """``mean_i sqrt(sum_d |(G_d x)_i|^2 + eps)`` over the first two (spatial) axes of ``x``."""
    g = finite_differences(x, (0, 1))
    return jnp.mean(jnp.sqrt(jnp.sum(jnp.abs(g) ** 2, axis=0) + eps))


def noise_floor(operator, y, config: SGDIPConfig) -> dict:
    """``{"floor": tau E D(n)}`` for ``data``: the data term of the true image is that of the noise,
    whose complex entries have ``E|n_i|^2 = sigma^2`` (real and imaginary parts ``N(0, sigma^2 / 2)``),
    so ``E D(n) = sigma / sqrt(pi)`` for ``"l1"`` and ``sigma^2 / 2`` for ``"l2"``. ``sigma`` is
    estimated from ``y`` itself (:func:`~.parameter_choice.estimate_sigma`: the sampled outer
    k-space corners), no reference used. Only for multi-coil MRI with sampled corners: the pixel
    estimator of inpainting reads image texture as noise, so other operators (and masks that sample
    no corner) get no floor."""
    from ..operators import MultiCoilMRI
    from .parameter_choice import estimate_sigma

    none = {"floor": jnp.float32(0.0)}
    if config.data_floor == 0 or not isinstance(operator, MultiCoilMRI):
        return none
    try:
        sigma = estimate_sigma(operator, y)
    except ValueError:  # no sampled entry in the outer corners
        return none
    expected = sigma / math.sqrt(math.pi) if config.data_loss == "l1" else sigma**2 / 2
    return {"floor": jnp.float32(config.data_floor * expected)}


def objective(outs, z, operator, y, config: SGDIPConfig, floor=0.0):
    """``(loss, x_hat, terms)`` from the network outputs ``outs (K, h, w, c)`` of the draws; the data
    term enters the loss as ``max(D, floor)`` (``terms["data"]`` is ``D`` itself)."""
    x_hat = jnp.mean(outs, axis=0)
    image = from_channels(x_hat, operator)
    data = measured_discrepancy(operator(image) - y, operator.mask, config.data_loss)
    residual = outs - z if config.reg_on == "per_draw" else x_hat - z[0]
    reg = discrepancy(residual, config.reg_loss)
    loss, terms = jnp.maximum(data, floor) + config.alpha * reg, {"data": data, "reg": reg}
    if config.tv > 0:
        terms["tv"] = total_variation(image)
        loss = loss + config.tv * terms["tv"]
    return loss, x_hat, terms


def sgdip_loss(forward, config: SGDIPConfig):
    """``loss_fn(params, net_state, z, key, data)`` for the engine: one batched pass over the draws,
    whose variance is the step's ``spread`` (``data["floor"]``, from :func:`noise_floor`, when
    present; else no floor; the noise scale ``data["noise_scale"]`` when present, so that candidates
    of it share one compiled step)."""

    def loss_fn(params, net_state, z, key, data):
        cfg = resolve_auto(config, data["operator"])
        outs, net_state = forward(params, net_state, z + draw_noise(key, z, cfg, data.get("noise_scale")))
        loss, x_hat, terms = objective(outs, z, data["operator"], data["y"], cfg, data.get("floor", 0.0))
        spread = jnp.var(outs, axis=0, ddof=1) if cfg.draws > 1 else 0.0
        return loss, {"image": x_hat, "net_state": net_state, "terms": terms, "spread": spread}

    return loss_fn


def image_input(method: str, config, k, op, y, input_shape):
    """``(z0 (1, h, w, c), in_image_units)`` of a method whose input lives in image space (its
    regulariser compares ``f(z)`` with ``z``): ``config.z_init`` as :class:`SGDIPConfig` describes it."""
    shape = (*op.image_shape[:2], n_channels(op))
    if tuple(input_shape(n_channels(op))) != shape:
        raise ValueError(
            f"{method}: the regulariser compares f(z) with z, so the network must keep the image size; "
            f"{config.network.name!r} expects inputs {input_shape(n_channels(op))}, not {shape}"
        )
    z_init = resolve_auto(config, op).z_init
    if z_init == "uniform":
        return jax.random.uniform(k, (1, *shape), jnp.float32), False
    if z_init == "filled":
        if not hasattr(op, "fill"):
            raise ValueError(f"{method}: z_init='filled' needs an operator with fill(y), not {type(op).__name__}")
        return to_channels(op.fill(y), op).astype(jnp.float32)[None], True
    return to_channels(op.adjoint(y), op).astype(jnp.float32)[None], True


def sgdip_task(config: SGDIPConfig = SGDIPConfig()) -> DIPTask:
    """Self-guided DIP as an engine task (:class:`~.common.DIPTask`)."""
    if not isinstance(config, SGDIPConfig):
        raise ValueError(f"config: expected SGDIPConfig, got {type(config).__name__}")

    return DIPTask(
        "sgdip",
        config,
        functools.partial(image_input, "sgdip", config),
        lambda forward: sgdip_loss(forward, config),
        z_optimizer=engine.adam(config.lr_z, config.clip_norm_z, config.lr_z_half_life, config.lr_z_decay_begin),
        make_data=lambda operator, y: {
            **noise_floor(operator, y, config),
            "noise_scale": jnp.float32(resolve_auto(config, operator).noise_scale),
        },
        candidates=lambda operator: noise_scale_candidates(config, operator),
        pilot=config.pilot,
        resolve=resolve_auto,
        restart=lambda operator: noise_scale_restart(config, operator),
    )


def sgdip(
    operator, y, config: SGDIPConfig = SGDIPConfig(), key=None, *, target=None, progress=True, callback=None
) -> Result:
    """Self-guided DIP reconstruction of ``y = A x + e`` (``key``: PRNG key or int seed)."""
    return run_dip(sgdip_task(config), operator, y, key, target=target, progress=progress, callback=callback)
