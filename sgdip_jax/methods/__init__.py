"""Reconstruction methods, each ``method(operator, y, config, key, *, target=None, ...) -> Result``.

``METHODS`` maps a name to ``(function, config class)``; :func:`run_method` runs one by name.
The DIP methods (``sgdip``, ``dip``, ``ref-dip``) share :mod:`sgdip_jax.engine`; ``DIP_TASKS`` maps
their names to ``task(config, **kwargs) -> DIPTask`` (what :mod:`sgdip_jax.parallel` batches). The
classical baselines live in :mod:`.classical`.
"""

from __future__ import annotations

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

METHODS = {
    "sgdip": (sgdip, SGDIPConfig),
    "dip": (dip, DIPConfig),
    "ref-dip": (ref_dip, RefDIPConfig),
    "zero-filled": (zero_filled, ZeroFilledConfig),
    "cg-sense": (cg_sense, CGSenseConfig),
    "tv": (tv, TVConfig),
    "l1-wavelet": (l1_wavelet, L1WaveletConfig),
}
DIP_TASKS = {"sgdip": sgdip_task, "dip": dip_task, "ref-dip": ref_dip_task}


def get_method(name: str):
    """``(function, config class)`` registered as ``name``; ValueError listing the valid names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {sorted(METHODS)}")
    return METHODS[name]


def run_method(name: str, operator, y, config=None, key=None, **kwargs) -> Result:
    """Run method ``name``; ``config`` is its config instance, a (nested) dict, or ``None`` (defaults).

    ``key`` is a PRNG key or an int seed; ``kwargs`` go to the method (``target``, ``progress``,
    ``prior_image`` for ``ref-dip``, ...).
    """
    from ..config import from_dict

    fn, cls = get_method(name)
    if not isinstance(config, cls):
        config = from_dict(cls, config)
    return fn(operator, y, config, key, **kwargs)


__all__ = [
    "DIP_TASKS",
    "METHODS",
    "DIPTask",
    "CGSenseConfig",
    "DIPConfig",
    "L1WaveletConfig",
    "RefDIPConfig",
    "Result",
    "SGDIPConfig",
    "TVConfig",
    "ZeroFilledConfig",
    "cg_sense",
    "dip",
    "dip_task",
    "get_method",
    "l1_wavelet",
    "ref_dip",
    "ref_dip_task",
    "run_method",
    "sgdip",
    "sgdip_task",
    "tv",
    "zero_filled",
]
