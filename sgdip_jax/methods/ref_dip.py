"""Reference-guided DIP: vanilla DIP whose fixed input is a reference image of the same anatomy
(e.g. a neighbouring slice or another contrast) instead of noise.

``z = to_channels(r / max|r|)`` for the reference ``r`` (complex ``(H, W)`` for MRI, real images
for inpainting), i.e. the reference normalised to unit peak magnitude; the loss is DIP's,
``mean |A f_theta(z + sigma_p n) - y_s|^2``, and ``z`` is never updated.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from ..channels import n_channels, to_channels
from .common import DIPBaseConfig, DIPTask, check_image, run_dip
from .dip import fixed_input_loss
from .result import Result


@dataclasses.dataclass(frozen=True)
class RefDIPConfig(DIPBaseConfig):
    """Reference-guided DIP (common fields: :class:`~.common.DIPBaseConfig`).

    ``input_noise``: std of the fresh input perturbation each step (0: none).
    """

    input_noise: float = 0.0


def ref_dip_task(config: RefDIPConfig = RefDIPConfig(), prior_image=None) -> DIPTask:
    """Reference-guided DIP as an engine task, with ``prior_image`` (the operator's image shape) as input."""
    if not isinstance(config, RefDIPConfig):
        raise ValueError(f"config: expected RefDIPConfig, got {type(config).__name__}")
    if prior_image is None:
        raise ValueError("ref-dip needs prior_image: a reference image of the operator's image shape")

    def make_input(_, op, y, input_shape):
        prior = check_image(op, prior_image, "prior_image")
        if not bool(jnp.all(jnp.isfinite(prior))) or not bool(jnp.any(prior != 0)):
            raise ValueError("prior_image: must be finite and not all zero")
        z = to_channels(prior / jnp.max(jnp.abs(prior)), op).astype(jnp.float32)[None]
        if z.shape[1:] != tuple(input_shape(n_channels(op))):
            raise ValueError(
                f"ref-dip: network {config.network.name!r} expects inputs {input_shape(n_channels(op))}, "
                f"but the reference image gives {z.shape[1:]}"
            )
        return z, False

    return DIPTask("ref-dip", config, make_input, lambda forward: fixed_input_loss(forward, config.input_noise))


def ref_dip(
    operator,
    y,
    config: RefDIPConfig = RefDIPConfig(),
    key=None,
    *,
    prior_image=None,
    target=None,
    progress=True,
    callback=None,
) -> Result:
    """Reference-guided DIP with ``prior_image`` (the operator's image shape) as network input."""
    task = ref_dip_task(config, prior_image)
    return run_dip(task, operator, y, key, target=target, progress=progress, callback=callback)
