"""Autoencoding sequential deep image prior, aSeqDIP (Alkhouri, Liang, Bell, Qu, Wang, Ravishankar,
NeurIPS 2024): the input is not optimised by gradients but *replaced by the network's output*
every ``N = z_every`` weight steps,

    theta_k = N Adam steps on  D( A f_theta(z_k), y_s ) + alpha D'( f_theta(z_k), z_k ),
    z_{k+1} = f_{theta}(z_k),

with ``D`` over the measured entries (:func:`~.common.measured_discrepancy`) and ``D'`` over the
image, ``"l2"`` (mean square, the paper's choice) or ``"l1"``; ``z_0`` as for self-guided DIP
(``A^H y_s``, or the filled masked image for inpainting). Optionally the input is perturbed,
``f_theta(z + eta)`` with ``eta = c max|z| n``, ``n ~ N(0, I)`` fresh each step (``noise_scale = c``;
0, the default, is the paper's method). The reconstruction is the moving average of ``f_theta(z_k)``.

In the engine the replacement is a gradient step: the loss gets the term
``<z - sg(z), sg(z - f(z))>`` (value 0, gradient ``z - f(z)``), every other term sees ``sg(z)``,
and :func:`assign_every` applies ``z <- z - g_z = f(z)`` on every ``N``-th step. So ``z`` takes the
output of the forward pass of that step (the weights after ``N - 1`` updates of the round).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..channels import from_channels
from ..config import check_choice, check_number
from .common import DISCREPANCIES, DIPBaseConfig, DIPTask, discrepancy, measured_discrepancy, run_dip
from .result import Result
from .sgdip import Z_INITS, image_input, resolve_auto


@dataclasses.dataclass(frozen=True)
class ASeqDIPConfig(DIPBaseConfig):
    """aSeqDIP (common fields: :class:`~.common.DIPBaseConfig`).

    ``alpha``: weight of the autoencoding term ``D'(f(z), z)``; ``data_loss`` / ``reg_loss``:
    ``"l1"`` or ``"l2"``; ``z_every``: weight steps per input replacement ``N``; ``noise_scale``:
    relative std ``c`` of the Gaussian input perturbation (0: none); ``z_init`` as in
    :class:`~.sgdip.SGDIPConfig`. Defaults: the paper's L2 terms, Adam 1e-2 as self-guided DIP
    (the sweep in ``benchmarks/RESULTS.md`` records how they compare), and the final
    data-consistency step.
    """

    lr: float = 1e-2
    data_consistency: bool = True
    data_loss: str = "l2"
    reg_loss: str = "l2"
    alpha: float = 1.0
    z_every: int = 5
    noise_scale: float = 0.0
    z_init: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.data_loss, DISCREPANCIES, "data_loss")
        check_choice(self.reg_loss, DISCREPANCIES, "reg_loss")
        check_choice(self.z_init, Z_INITS, "z_init")
        if self.z_every < 1:
            raise ValueError(f"z_every must be >= 1, got {self.z_every}")
        check_number(self.alpha, "alpha", inclusive=True)
        check_number(self.noise_scale, "noise_scale", inclusive=True)


class AssignState(NamedTuple):
    count: jax.Array


def assign_every(n: int) -> optax.GradientTransformation:
    """``u = -g`` on every ``n``-th update (steps ``n, 2n, ...``), ``u = 0`` otherwise: with the
    gradient ``z - f(z)`` of :func:`aseqdip_loss`, ``z + u`` is ``f(z)`` once per ``n`` steps."""

    def init(params):
        return AssignState(jnp.zeros([], jnp.int32))

    def update(grads, state, params=None):
        count = state.count + 1
        now = count % n == 0
        return jax.tree.map(lambda g: jnp.where(now, -g, jnp.zeros_like(g)), grads), AssignState(count)

    return optax.GradientTransformation(init, update)


def aseqdip_loss(forward, config: ASeqDIPConfig):
    """``loss_fn(params, net_state, z, key, data)`` for the engine (see the module docstring)."""

    def loss_fn(params, net_state, z, key, data):
        op, y = data["operator"], data["y"]
        z_fixed = jax.lax.stop_gradient(z)
        x_in = z_fixed
        if config.noise_scale:
            x_in = x_in + config.noise_scale * jnp.max(jnp.abs(z_fixed)) * jax.random.normal(key, z.shape, z.dtype)
        out, net_state = forward(params, net_state, x_in)
        image = out[0]
        data_term = measured_discrepancy(op(from_channels(image, op)) - y, op.mask, config.data_loss)
        reg = discrepancy(out - z_fixed, config.reg_loss)
        replace = jnp.sum((z - z_fixed) * jax.lax.stop_gradient(z - out))
        loss = data_term + config.alpha * reg + replace
        return loss, {"image": image, "net_state": net_state, "terms": {"data": data_term, "reg": reg}}

    return loss_fn


def aseqdip_task(config: ASeqDIPConfig = ASeqDIPConfig()) -> DIPTask:
    """aSeqDIP as an engine task (:class:`~.common.DIPTask`)."""
    if not isinstance(config, ASeqDIPConfig):
        raise ValueError(f"config: expected ASeqDIPConfig, got {type(config).__name__}")
    return DIPTask(
        "aseqdip",
        config,
        functools.partial(image_input, "aseqdip", config),
        lambda forward: aseqdip_loss(forward, config),
        z_optimizer=assign_every(config.z_every),
        resolve=resolve_auto,
    )


def aseqdip(
    operator, y, config: ASeqDIPConfig = ASeqDIPConfig(), key=None, *, target=None, progress=True, callback=None
) -> Result:
    """aSeqDIP reconstruction of ``y = A x + e`` (``key``: PRNG key or int seed)."""
    return run_dip(aseqdip_task(config), operator, y, key, target=target, progress=progress, callback=callback)
