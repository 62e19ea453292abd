"""Network registry and the pure functional interface used by the methods.

``get_network(name, **overrides)`` builds a module by name; ``init_network`` / ``apply_network``
thread the variables (``"params"`` and, for BatchNorm networks, ``"batch_stats"``) explicitly:

    variables = init_network(net, key, z)
    out, variables = apply_network(net, variables, z, train=True)   # BatchNorm uses batch stats
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .decoders import ConvDecoder, DeepDecoder
from .skip import SkipNet
from .unet import UNet

Variables = dict[str, Any]

NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    **{f"unet{d}": functools.partial(UNet, depth=d) for d in range(1, 7)},
    "skip": SkipNet,
    "deep_decoder": DeepDecoder,
    "conv_decoder": ConvDecoder,
}


def get_network(name: str, **overrides: Any) -> nn.Module:
    """Module registered as ``name`` with keyword ``overrides`` of its attributes.

    ``"unet1"``..``"unet6"`` are ``UNet(depth=N)``; ``"unet"`` takes ``depth`` as an override;
    ``"skip"``, ``"deep_decoder"``, ``"conv_decoder"`` are SkipNet, DeepDecoder, ConvDecoder.
    Lists in ``overrides`` (e.g. from a YAML config) become tuples so modules stay hashable.
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; valid names: {sorted(NETWORKS)}")
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    try:
        return NETWORKS[name](**overrides)
    except TypeError as err:
        raise ValueError(f"invalid overrides for network {name!r}: {err}") from None


def init_network(module: nn.Module, key: jax.Array, sample_input: jnp.ndarray) -> Variables:
    """Initial variables of ``module`` for inputs shaped like ``sample_input`` (deterministic in ``key``).

    Compiled as one program (an eager ``init`` dispatches one small compilation per layer)."""
    return dict(_jit_init(module, key, sample_input))


@functools.partial(jax.jit, static_argnums=0)
def _jit_init(module, key, sample_input):
    return module.init(key, sample_input, train=False)


def apply_network(
    module: nn.Module, variables: Variables, x: jnp.ndarray, train: bool = False
) -> tuple[jnp.ndarray, Variables]:
    """Pure forward pass ``(out, variables)``.

    With ``train=True`` BatchNorm normalises with the batch statistics and the returned variables
    carry the updated running averages; with ``train=False`` the running averages are used and
    ``variables`` is returned unchanged. Networks without ``"batch_stats"`` return ``variables``.
    """
    if train and "batch_stats" in variables:
        out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
        return out, {**variables, **updates}
    return module.apply(variables, x, train=train), variables


def param_count(variables: Variables) -> int:
    """Number of trainable parameters (leaves of ``variables["params"]``; works on shape structs)."""
    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree.leaves(variables["params"])))


def with_image_size(module: nn.Module, image_hw: tuple[int, int]) -> nn.Module:
    """``module`` set up to output ``image_hw``: decoders get ``out_size=image_hw``; networks that keep
    their input's size (U-Net, SkipNet) are returned unchanged."""
    if isinstance(module, (DeepDecoder, ConvDecoder)):
        return module.clone(out_size=tuple(int(s) for s in image_hw))
    return module


def network_input_shape(module: nn.Module, image_hw: tuple[int, int], in_channels: int) -> tuple[int, int, int]:
    """Per-sample input shape ``(h, w, in_channels)`` for which ``module`` outputs ``image_hw``.

    U-Net and SkipNet keep the spatial size: ``(H, W)``. DeepDecoder: ``ceil((H, W) / 2^num_up)``
    (exact when divisible; otherwise the module needs ``out_size=image_hw``, see
    :func:`with_image_size`). ConvDecoder: its ``in_size`` (it needs ``out_size=image_hw``).
    """
    h, w = (int(s) for s in image_hw)
    c = int(in_channels)
    if isinstance(module, (UNet, SkipNet)):
        return (h, w, c)
    if isinstance(module, (DeepDecoder, ConvDecoder)):
        name = type(module).__name__
        if isinstance(module, DeepDecoder):
            f = 2**module.num_up
            shape = (-(-h // f), -(-w // f), c)
            reachable = module.out_size is None and h % f == 0 and w % f == 0
        else:
            shape = (*(int(s) for s in module.in_size), c)
            reachable = False
        if not reachable and (module.out_size is None or tuple(module.out_size) != (h, w)):
            raise ValueError(
                f"{name} with out_size={module.out_size} cannot output {(h, w)}; "
                f"use with_image_size(module, {(h, w)}) or get_network(..., out_size={(h, w)})"
            )
        return shape
    raise ValueError(f"network_input_shape does not know {type(module).__name__}; expected one of {sorted(NETWORKS)}")
