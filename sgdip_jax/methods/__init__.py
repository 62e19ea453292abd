"""Reconstruction methods, each ``method(operator, y, config, key, *, target=None, ...) -> Result``.

One registry, ``METHODS``: a :class:`Method` record per name (run function, config class, the
engine task of a DIP method, whether it needs a prior image or takes a noise level). The DIP
methods (``sgdip``, ``dip``, ``aseqdip``, ``ref-dip``) share :mod:`sgdip_jax.engine` through their
:class:`DIPTask`; a new DIP variant is a loss and a config, registered with :func:`register`. The
classical baselines live in :mod:`.classical`, the supervised ones (``unet-post``, ``modl``, which
need trained weights) in :mod:`.supervised`. :func:`run_method` runs a method by name;
:func:`method_config` builds its config from defaults, a config-file table and options.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from .aseqdip import ASeqDIPConfig, aseqdip, aseqdip_task
from .classical import (
    CGSenseConfig,
    L1WaveletConfig,
    TVConfig,
    ZeroFilledConfig,
    cg_sense,
    l1_wavelet,
    tv,
    zero_filled,
)
from .common import DIPTask
from .dip import DIPConfig, dip, dip_task
from .ref_dip import RefDIPConfig, ref_dip, ref_dip_task
from .result import Result
from .sgdip import SGDIPConfig, sgdip, sgdip_task
from .supervised import SupervisedConfig, modl, unet_post


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered method. ``run(operator, y, config, key, *, target, progress, callback, ...)``;
    ``config``: its config class (with an ``iterations`` field when it iterates); ``task``:
    ``task(config) -> DIPTask`` for engine (DIP) methods, else ``None``; ``needs_prior``: ``run`` and
    ``task`` take ``prior_image``; ``takes_sigma``: ``run`` takes the noise level ``sigma``."""

    name: str
    run: Callable
    config: type
    task: Callable | None = None
    needs_prior: bool = False
    takes_sigma: bool = False
    needs_weights: bool = False

    @property
    def is_dip(self) -> bool:
        return self.task is not None

    def make_task(self, config, prior_image=None) -> DIPTask:
        """The engine task of ``config`` (with ``prior_image`` when the method needs one)."""
        return self.task(config, prior_image=prior_image) if self.needs_prior else self.task(config)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (a name may be registered once)."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


for _method in (
    Method("sgdip", sgdip, SGDIPConfig, sgdip_task),
    Method("dip", dip, DIPConfig, dip_task),
    Method("aseqdip", aseqdip, ASeqDIPConfig, aseqdip_task),
    Method("ref-dip", ref_dip, RefDIPConfig, ref_dip_task, needs_prior=True),
    Method("zero-filled", zero_filled, ZeroFilledConfig),
    Method("cg-sense", cg_sense, CGSenseConfig, takes_sigma=True),
    Method("tv", tv, TVConfig, takes_sigma=True),
    Method("l1-wavelet", l1_wavelet, L1WaveletConfig, takes_sigma=True),
    Method("unet-post", unet_post, SupervisedConfig, needs_weights=True),
    Method("modl", modl, SupervisedConfig, needs_weights=True),
):
    register(_method)


def get_method(name: str) -> Method:
    """The :class:`Method` registered as ``name``; ValueError listing the valid names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}")
    return METHODS[name]


def method_config(
    name: str, *, table=None, network=None, width=None, iterations=None, early_stopping=False, weights=None, sets=()
):
    """The frozen config of method ``name`` (:func:`sgdip_jax.config.layered`): its defaults, then
    ``table`` (a config-file table), then the shortcuts (``network`` name, its ``width``,
    ``iterations``, ``early_stopping`` on, the ``weights`` file of a trained model), then ``sets``
    (``"KEY=VALUE"`` strings). A shortcut that does not apply to the method (e.g. ``network`` for
    CG-SENSE) is logged and ignored."""
    from ..config import layered
    from ..networks import NETWORKS

    cls = get_method(name).config
    fields = {f.name for f in dataclasses.fields(cls)}
    shortcuts = {
        "network": (network, "network", {"network.name": network}),
        "width": (width, "network", {"network.base": width}),
        "iterations": (iterations, "iterations", {"iterations": iterations}),
        "early_stopping": (
            early_stopping or None,
            "early_stopping",
            {"early_stopping.enabled": True, "early_stopping.stop": True},
        ),
        "weights": (weights, "weights", {"weights": weights}),
    }
    updates = {}
    for shortcut, (value, field, changes) in shortcuts.items():
        if value is None:
            continue
        if field not in fields:
            logging.getLogger("sgdip").warning("%s does not apply to method %s; ignored", shortcut, name)
            continue
        updates.update(changes)
    config = layered(cls, table=table, updates=updates, sets=sets, where=name)
    if "network" in fields and config.network.name not in NETWORKS:
        raise ValueError(f"unknown network {config.network.name!r}; valid networks: {', '.join(NETWORKS)}")
    return config


def run_method(name: str, operator, y, config=None, key=None, **kwargs) -> Result:
    """Run method ``name``; ``config`` is its config instance, a (nested) dict, or ``None`` (defaults).

    ``key`` is a PRNG key or an int seed; ``kwargs`` go to the method (``target``, ``progress``,
    ``callback``, ``prior_image`` for ``ref-dip``, ``sigma`` for the classical baselines, ...).
    """
    method = get_method(name)
    return method.run(operator, y, as_config(name, config), key, **kwargs)


def as_config(name: str, config=None):
    """``config`` as method ``name``'s config instance: an instance as it is, a (nested) dict or
    ``None`` (defaults) through :func:`~sgdip_jax.config.from_dict`."""
    from ..config import from_dict

    cls = get_method(name).config
    return config if isinstance(config, cls) else from_dict(cls, config)


__all__ = [
    "METHODS",
    "ASeqDIPConfig",
    "CGSenseConfig",
    "DIPConfig",
    "DIPTask",
    "L1WaveletConfig",
    "Method",
    "RefDIPConfig",
    "Result",
    "SGDIPConfig",
    "SupervisedConfig",
    "as_config",
    "TVConfig",
    "ZeroFilledConfig",
    "aseqdip",
    "aseqdip_task",
    "cg_sense",
    "dip",
    "dip_task",
    "get_method",
    "l1_wavelet",
    "method_config",
    "modl",
    "ref_dip",
    "ref_dip_task",
    "register",
    "run_method",
    "sgdip",
    "sgdip_task",
    "tv",
    "unet_post",
    "zero_filled",
]
