"""The case file (``.npz``): one multi-coil reconstruction problem.

| key     | dtype / shape               | meaning                                         |
|---------|-----------------------------|-------------------------------------------------|
| ``y``     | complex64 ``(C, H, W)``     | measured k-space, zeros where not sampled       |
| ``smaps`` | complex64 ``(C, H, W)``     | coil sensitivities                              |
| ``mask``  | float32 ``(H, W)``          | 1 where sampled                                 |
| ``x``     | complex64 ``(H, W)``, opt.  | reference image for metrics                     |
| ``sigma`` | float32 scalar, optional    | noise std per complex k-space sample            |
| ``meta``  | JSON string, optional       | provenance and parameters                       |

Convention: ``y = mask * (fft2c(smaps * x) + noise)`` with the centred orthonormal FFT. Single-coil
data is ``C = 1`` with ``smaps = 1``. A mask given as ``(1, W)`` (sampled lines) is expanded to
``(H, W)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_write
from ..operators.mri import MultiCoilMRI
from .arrays import load_arrays

REQUIRED = ("y", "smaps", "mask")
OPTIONAL = ("x", "sigma", "meta")


@dataclasses.dataclass
class Case:
    """A reconstruction problem: k-space ``y``, maps ``smaps``, ``mask``; optional ``x``, ``sigma``, ``meta``."""

    y: np.ndarray
    smaps: np.ndarray
    mask: np.ndarray
    x: np.ndarray | None = None
    sigma: float | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def operator(self) -> MultiCoilMRI:
        """The forward model ``A = M F S`` of this case."""
        return MultiCoilMRI.create(self.smaps, self.mask)


def _finite(name, a, source):
    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{source}: field '{name}' contains {bad} NaN/Inf values")


def _numeric(name, a, source, expected, complex_ok=True):
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or (np.iscomplexobj(a) and not complex_ok):
        raise ValueError(f"{source}: field '{name}' must be {expected}, got dtype {a.dtype}")
    return a


def validate_case(case: Case, source: str | os.PathLike = "case") -> Case:
    """Check shapes, dtypes and values; return a copy with the file format's dtypes.

    ``source`` (usually the file name) starts every error message. Raises ``ValueError`` naming the
    field and what was expected for: wrong rank or dtype, maps / k-space shape mismatch, a mask of
    the wrong size or with values other than 0/1, an all-zero mask, NaN/Inf values, k-space that is
    non-zero where the mask is 0, a negative or non-scalar ``sigma``, a reference of the wrong size.
    """
    y = _numeric("y", case.y, source, "complex64 (C, H, W)")
    if not np.iscomplexobj(y) or y.ndim != 3:
        raise ValueError(f"{source}: field 'y' must be complex64 (C, H, W), got {y.dtype} {y.shape}")
    c, h, w = y.shape
    smaps = _numeric("smaps", case.smaps, source, f"complex64 ({c}, {h}, {w})")
    if smaps.shape != y.shape:
        raise ValueError(f"{source}: field 'smaps' must match k-space 'y' {y.shape} (C, H, W), got {smaps.shape}")
    mask = _numeric("mask", case.mask, source, f"float32 ({h}, {w})", complex_ok=False)
    if mask.shape not in ((h, w), (1, w)):
        raise ValueError(
            f"{source}: field 'mask' must be float32 ({h}, {w}) (or (1, {w})) to match k-space 'y' "
            f"{y.shape}, got {mask.shape}"
        )
    _finite("y", y, source)
    _finite("smaps", smaps, source)
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"{source}: field 'mask' must hold only 0 and 1")
    if not np.any(mask):
        raise ValueError(f"{source}: field 'mask' is all zero (no sampled k-space)")
    mask = np.broadcast_to(mask, (h, w)).astype(np.float32)
    if np.any(y[:, mask == 0]):
        raise ValueError(
            f"{source}: field 'y' is non-zero where 'mask' is 0 (expected y = mask * k-space; "
            "multiply y by the mask or fix the mask)"
        )
    x = case.x
    if x is not None:
        x = _numeric("x", x, source, f"complex64 ({h}, {w})")
        if x.shape != (h, w):
            raise ValueError(f"{source}: field 'x' must have shape ({h}, {w}) to match 'y' {y.shape}, got {x.shape}")
        _finite("x", x, source)
        x = x.astype(np.complex64)
    sigma = case.sigma
    if sigma is not None:
        sigma = _numeric("sigma", sigma, source, "a float32 scalar", complex_ok=False)
        if sigma.ndim != 0 or not np.isfinite(sigma) or sigma < 0:
            raise ValueError(f"{source}: field 'sigma' must be a finite scalar >= 0, got {sigma!r}")
        sigma = float(sigma)
    meta = dict(case.meta or {})
    try:
        json.dumps(meta)
    except TypeError as err:
        raise ValueError(f"{source}: field 'meta' must be JSON-serialisable ({err})") from None
    return Case(
        y=y.astype(np.complex64),
        smaps=smaps.astype(np.complex64),
        mask=mask,
        x=x,
        sigma=sigma,
        meta=meta,
    )


def load_case(path: str | os.PathLike) -> Case:
    """Read and validate a case ``.npz`` file (``FileNotFoundError`` / ``ValueError`` naming the file)."""
    path = Path(path)
    arrays = load_arrays(path, "case")
    if None in arrays:
        raise ValueError(
            f"{path}: holds a single array (.npy content); a case file is an .npz archive with keys {list(REQUIRED)}"
        )
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise ValueError(
            f"{path}: missing key(s) {missing}; a case file needs {list(REQUIRED)} "
            f"(optional {list(OPTIONAL)}), found {sorted(arrays)}"
        )
    meta = {}
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: key 'meta' must be a JSON string ({err})") from None
    case = Case(
        y=arrays["y"],
        smaps=arrays["smaps"],
        mask=arrays["mask"],
        x=arrays.get("x"),
        sigma=arrays.get("sigma"),
        meta=meta,
    )
    return validate_case(case, path)


def save_case(path: str | os.PathLike, case: Case, overwrite: bool = False) -> None:
    """Validate ``case`` and write it atomically to ``path`` (``FileExistsError`` unless ``overwrite``)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    case = validate_case(case, path)
    arrays = {"y": case.y, "smaps": case.smaps, "mask": case.mask, "meta": np.array(json.dumps(case.meta))}
    if case.x is not None:
        arrays["x"] = case.x
    if case.sigma is not None:
        arrays["sigma"] = np.float32(case.sigma)
    atomic_write(path, lambda f: np.savez(f, **arrays))
