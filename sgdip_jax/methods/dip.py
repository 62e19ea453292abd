"""Vanilla deep image prior (Ulyanov, Vedaldi & Lempitsky, 2018).

``x = f_theta(z)`` with an untrained network ``f`` and a fixed random input ``z``; the weights
minimise the data term

    L(theta) = mean_i |(A f_theta(z + sigma_p n) - y_s)_i|^2,     n ~ N(0, I) fresh each step,

(mean over all real entries of the measurement array, see :func:`~.common.discrepancy`;
``sigma_p = input_noise``, 0 switches the perturbation off). ``z`` is never updated. The
reconstruction is the moving average of ``f_theta(z + sigma_p n)`` over iterations.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ..channels import from_channels, n_channels
from ..config import check_choice, check_number
from .common import DIPBaseConfig, DIPTask, discrepancy, run_dip
from .result import Result

INPUTS = ("uniform", "gaussian")


@dataclasses.dataclass(frozen=True)
class DIPConfig(DIPBaseConfig):
    """Vanilla DIP (Ulyanov, Vedaldi, Lempitsky 2018; common fields: :class:`~.common.DIPBaseConfig`).

    ``input``: ``"uniform"`` (``z ~ U[0, input_scale)``) or ``"gaussian"`` (``z ~ N(0, input_scale^2)``).
    ``input_channels``: channels of ``z`` (``None``: the operator's, 2 for MRI; e.g. 32 for a skip net).
    ``input_noise``: std ``sigma_p`` of the fresh input perturbation each step (0: none).
    """

    input: str = "uniform"
    input_scale: float = 0.1
    input_channels: int | None = None
    input_noise: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.input, INPUTS, "input")
        check_number(self.input_scale, "input_scale")
        check_number(self.input_noise, "input_noise", inclusive=True)


def fixed_input_loss(forward, input_noise: float):
    """DIP's loss for a fixed input: ``mean |A f(z + sigma_p n) - y|^2`` (the image is ``f(...)[0]``)."""

    def loss_fn(params, net_state, z, key, data):
        op, y = data["operator"], data["y"]
        if input_noise:
            z = z + input_noise * jax.random.normal(key, z.shape, z.dtype)
        out, net_state = forward(params, net_state, z)
        image = out[0]
        term = discrepancy(op(from_channels(image, op)) - y, "l2")
        return term, {"image": image, "net_state": net_state, "terms": {"data": term}}

    return loss_fn


def random_input(key, shape, kind: str, scale: float):
    """``(1, *shape)`` network input: ``U[0, scale)`` or ``N(0, scale^2)``."""
    if kind == "uniform":
        return scale * jax.random.uniform(key, (1, *shape), jnp.float32)
    return scale * jax.random.normal(key, (1, *shape), jnp.float32)


def dip_task(config: DIPConfig = DIPConfig()) -> DIPTask:
    """Vanilla DIP as an engine task (:class:`~.common.DIPTask`)."""
    if not isinstance(config, DIPConfig):
        raise ValueError(f"config: expected DIPConfig, got {type(config).__name__}")

    def make_input(k, op, y, input_shape):
        channels = config.input_channels or n_channels(op)
        return random_input(k, input_shape(channels), config.input, config.input_scale), False

    return DIPTask("dip", config, make_input, lambda forward: fixed_input_loss(forward, config.input_noise))


def dip(operator, y, config: DIPConfig = DIPConfig(), key=None, *, target=None, progress=True, callback=None) -> Result:
    """Vanilla DIP reconstruction of ``y = A x + e`` (``key``: PRNG key or int seed)."""
    return run_dip(dip_task(config), operator, y, key, target=target, progress=progress, callback=callback)
