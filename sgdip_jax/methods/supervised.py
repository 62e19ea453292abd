"""Supervised baselines for multi-coil MRI, trained on simulated data (:mod:`sgdip_jax.train`):

* ``unet-post``: image-domain post-processing, ``x = x_0 + f_w(x_0)`` with ``x_0 = A^H y`` and
  ``f_w`` a U-Net of the product's family (residual learning, as the fastMRI U-Net baseline);
* ``modl``: MoDL (Aggarwal, Mani, Jacob, IEEE TMI 2019), ``K`` unrolled iterations with one shared
  denoiser ``D_w(x) = x + f_w(x)`` and a data-consistency step
  ``x_{k+1} = argmin_x ||A x - y||^2 + lam ||x - D_w(x_k)||^2 = (A^H A + lam I)^{-1} (A^H y + lam D_w(x_k))``
  solved by a fixed number of conjugate-gradient steps (differentiated through), from
  ``x_0 = A^H y``; ``lam = softplus(w_lam)`` is learned.

Both see the problem at a fixed scale: ``y`` is divided by ``s = q_{0.99}(|A^H y|)`` (the 99th
percentile of the zero-filled magnitude) before the network and the image is multiplied by ``s``
after, at training and at test time alike, so a model applies to data in any units.

A method receives its trained :class:`Weights` (``weights=``); reading them from a file is the
caller's job (:func:`sgdip_jax.checkpoints.load_weights`).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..channels import channels_to_complex, complex_to_channels
from ..config import NetworkConfig, check_choice
from ..operators.base import conjugate_gradient, restrict_to_support
from .common import as_key, check_image, check_measurements
from .result import Result

SCALE_QUANTILE = 0.99
DEFAULT_NETWORKS = {  # the CNN each model trains by default (GroupNorm, Flax's LeCun-normal init)
    "unet-post": NetworkConfig(name="unet4", base=8, norm="group", weight_init="default"),
    "modl": NetworkConfig(name="unet3", base=16, norm="group", weight_init="default"),
}
SUPERVISED = tuple(DEFAULT_NETWORKS)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a supervised model: ``method`` (``"unet-post"`` or ``"modl"``), its CNN
    ``network`` (a network of the registry; the defaults, :data:`DEFAULT_NETWORKS`, use GroupNorm, so
    training and test behave alike), and for
    ``modl`` the ``unrolls`` ``K``, the CG steps per data-consistency solve and the initial ``lam``."""

    method: str = "modl"
    network: NetworkConfig = DEFAULT_NETWORKS["modl"]
    unrolls: int = 5
    cg_iterations: int = 8
    lam_init: float = 0.5

    def __post_init__(self):
        check_choice(self.method, SUPERVISED, "method")
        for name in ("unrolls", "cg_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class SupervisedConfig:
    """``weights``: the checkpoint file of a trained model, or ``"bundled"`` for the one shipped with
    the package (:mod:`sgdip_jax.checkpoints`). Only callers that read files use it."""

    weights: str = "bundled"


@dataclasses.dataclass(frozen=True)
class Weights:
    """A trained model: its :class:`ModelConfig`, its parameters and where they came from."""

    model: ModelConfig
    params: dict
    source: str = ""
    info: dict = dataclasses.field(default_factory=dict)


def build_cnn(model: ModelConfig):
    """The model's CNN (two input and output channels: real and imaginary part)."""
    from .common import build_network

    return build_network(model.network, 2)


def init_params(model: ModelConfig, key, image_hw=(32, 32)) -> dict:
    """Freshly initialised parameters ``{"cnn": ..., ["lam": ...]}`` of ``model``."""
    from ..networks import init_network

    variables = init_network(build_cnn(model), key, jnp.zeros((1, *image_hw, 2), jnp.float32))
    params = {"cnn": variables["params"]}
    if model.method == "modl":
        params["lam"] = jnp.log(jnp.expm1(jnp.float32(model.lam_init)))  # softplus^-1
    return params


def expected_shapes(model: ModelConfig) -> dict[str, tuple[int, ...]]:
    """``{"cnn/.../kernel": shape, ...}`` of the parameters of ``model`` (nothing is computed)."""
    from flax.traverse_util import flatten_dict

    shapes = jax.eval_shape(lambda: init_params(model, jax.random.PRNGKey(0)))
    return {"/".join(k): tuple(v.shape) for k, v in flatten_dict(shapes).items()}


def check_weights(weights: Weights, method: str) -> None:
    """ValueError unless ``weights`` are a ``method`` model whose parameters have the shapes its
    architecture builds (a checkpoint of another network, width or method is refused by name)."""
    from flax.traverse_util import flatten_dict

    where = weights.source or "weights"
    if weights.model.method != method:
        raise ValueError(f"{where}: these are weights of a {weights.model.method} model, not {method}")
    found = {"/".join(k): tuple(np.shape(v)) for k, v in flatten_dict(weights.params).items()}
    expected = expected_shapes(weights.model)
    net = weights.model.network
    arch = f"{net.name} (base {net.base}, norm {net.norm})"
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{where}: parameters do not match a {method} model with network {arch}: "
            f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {extra[:3]}"
            f"{'...' if len(extra) > 3 else ''}"
        )
    for name, shape in expected.items():
        if found[name] != shape:
            raise ValueError(
                f"{where}: parameter {name} has shape {found[name]}, a {method} model with network {arch} needs {shape}"
            )


def problem_scale(x0):
    """``s = q_{0.99}(|x_0|)``: the scale the models see the zero-filled image ``x_0`` at."""
    s = jnp.quantile(jnp.abs(x0), SCALE_QUANTILE)
    return jnp.where(s > 0, s, jnp.maximum(jnp.max(jnp.abs(x0)), 1e-12))


def model_forward(model: ModelConfig):
    """``forward(params, operator, y) -> x``: the model's reconstruction of one problem in the units
    of ``y`` (vmap it for a batch). See the module docstring for the two models."""
    cnn = build_cnn(model)

    def denoise(params, x):
        t = complex_to_channels(x)[None]
        return x + channels_to_complex(cnn.apply({"params": params["cnn"]}, t)[0])

    def forward(params, operator, y):
        x0 = operator.adjoint(y)
        s = jax.lax.stop_gradient(problem_scale(x0))
        x0 = x0 / s
        if model.method == "unet-post":
            return denoise(params, x0) * s
        lam = jax.nn.softplus(params["lam"])
        b0 = x0  # A^H (y / s)

        x = x0
        for _ in range(model.unrolls):  # a Python loop: a lax.scan here trained slower on CPU
            rhs = b0 + lam * denoise(params, x)
            x = conjugate_gradient(lambda v: operator.normal(v) + lam * v, rhs, x, model.cg_iterations)
        return x * s

    return forward


@functools.lru_cache(maxsize=8)
def _compiled_forward(model: ModelConfig):
    """The jitted :func:`model_forward` of ``model``, kept so that slices after the first reuse it."""
    return jax.jit(model_forward(model))


def _check_mri(operator, method):
    from ..operators import MultiCoilMRI

    if not isinstance(operator, MultiCoilMRI):
        raise ValueError(f"{method} is trained for multi-coil MRI; got a {type(operator).__name__} problem")


def run_supervised(method, operator, y, config, key=None, *, weights=None, target=None, progress=False, **_):
    """Apply trained ``weights`` (a :class:`Weights`) of ``method`` to one problem; one forward pass.
    ``history["psnr"]`` holds its PSNR when a ``target`` is given."""
    from ..metrics import psnr

    if weights is None:
        raise ValueError(
            f"{method} needs trained weights: pass weights=sgdip_jax.checkpoints.load_weights(FILE) "
            f"(FILE from `sgdip train --method {method}`, or 'bundled' for the checkpoint shipped with the "
            f"package); on the command line: --weights FILE"
        )
    _check_mri(operator, method)
    check_weights(weights, method)
    start = time.perf_counter()
    y = check_measurements(operator, y)
    image = _compiled_forward(weights.model)(weights.params, operator, y)
    image = np.asarray(jax.device_get(restrict_to_support(operator, image)))
    history = {}
    target = check_image(operator, target, "target")
    if target is not None:
        history["psnr"] = np.asarray([psnr(jnp.asarray(image), ref=target)])
    return Result(
        method=method,
        image=image,
        ema_image=image,
        history=history,
        iterations=1,
        config={**dataclasses.asdict(config), "model": dataclasses.asdict(weights.model), "source": weights.source},
        seed=as_key(key)[1],
        wall_time=time.perf_counter() - start,
    )


def unet_post(operator, y, config=SupervisedConfig(), key=None, **kwargs) -> Result:
    """U-Net post-processing of the zero-filled image with trained ``weights=`` (module docstring)."""
    return run_supervised("unet-post", operator, y, config, key, **kwargs)


def modl(operator, y, config=SupervisedConfig(), key=None, **kwargs) -> Result:
    """MoDL, unrolled denoiser + CG data consistency, with trained ``weights=`` (module docstring)."""
    return run_supervised("modl", operator, y, config, key, **kwargs)
