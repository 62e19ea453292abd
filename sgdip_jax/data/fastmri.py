"""fastMRI HDF5 files: reader, a writer for small files in the same layout, and the standard crop.

Layout of a fastMRI file (https://github.com/facebookresearch/fastMRI, "Dataset" section):

* ``kspace``: complex, ``(S, H, W)`` single-coil or ``(S, C, H, W)`` multi-coil; ``H`` is the
  readout (frequency-encoding, with 2x oversampling), ``W`` the phase-encoding direction.
* ``mask`` (test / challenge files only): ``(W,)`` sampled phase-encoding lines.
* ``reconstruction_rss`` (multi-coil; single-coil files may carry it too) and
  ``reconstruction_esc`` (single-coil): magnitude targets ``(S, h, w)``, usually 320x320, the centre
  crop of the fully sampled root-sum-of-squares / ESC image.
* ``ismrmrd_header``: the ISMRMRD XML header; ``encoding/encodedSpace/matrixSize`` is the k-space
  size, ``encoding/reconSpace/matrixSize`` the target image size (``x`` along ``H``, ``y`` along ``W``).
* attributes ``acquisition``, ``max``, ``norm``, ``patient_id`` (and ``acceleration``,
  ``num_low_frequency`` in test files).

``center_crop`` (fastMRI's crop) lives in :mod:`sgdip_jax.metrics` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import jax.numpy as jnp
import numpy as np

from ..files import atomic_write
from ..metrics import center_crop
from ..operators.fft import ifft2c

ISMRMRD_NS = "http://www.ismrm.org/ISMRMRD"

__all__ = [
    "FastMRIData",
    "read_fastmri",
    "write_fastmri",
    "center_crop",
    "rss",
]


def rss(images, axis=0):
    """Root-sum-of-squares combination ``sqrt(sum_c |x_c|^2)`` over the coil ``axis``."""
    return jnp.sqrt(jnp.sum(jnp.abs(jnp.asarray(images)) ** 2, axis=axis))


@dataclasses.dataclass
class FastMRIData:
    """Contents of a fastMRI file (selected slices).

    ``kspace``: complex64 ``(S, H, W)`` single-coil or ``(S, C, H, W)`` multi-coil.
    ``mask``: float32 ``(W,)`` or None. ``reconstruction_rss`` / ``reconstruction_esc``: float32
    ``(S, h, w)`` or None. ``encoded_size`` / ``recon_size``: ISMRMRD ``matrixSize`` as ``(x, y, z)``
    or None. ``slices``: indices of the returned slices in the file. ``attrs``: file attributes.
    """

    path: str
    kspace: np.ndarray
    slices: tuple[int, ...]
    mask: np.ndarray | None = None
    reconstruction_rss: np.ndarray | None = None
    reconstruction_esc: np.ndarray | None = None
    encoded_size: tuple[int, int, int] | None = None
    recon_size: tuple[int, int, int] | None = None
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def multicoil(self) -> bool:
        return self.kspace.ndim == 4


def _parse_header(xml_text, path):
    """``(encoded_size, recon_size)`` from an ISMRMRD XML header, each ``(x, y, z)`` or None."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as err:
        raise ValueError(f"{path}: ismrmrd_header is not valid XML ({err})") from None
    ns = {"m": ISMRMRD_NS}

    def size(space):
        node = root.find(f"m:encoding/m:{space}/m:matrixSize", ns)
        if node is None:
            return None
        try:
            return tuple(int(node.find(f"m:{k}", ns).text) for k in "xyz")
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"{path}: ismrmrd_header {space}/matrixSize needs integer x, y and z") from None

    return size("encodedSpace"), size("reconSpace")


def _slice_indices(selection, n, path):
    """Normalise ``None`` / int / list of ints to a tuple of in-range slice indices."""
    if selection is None:
        return tuple(range(n))
    items = [selection] if np.isscalar(selection) else list(selection)
    out = []
    for s in items:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool):
            raise ValueError(f"{path}: slice must be None, an int or a list of ints, got {selection!r}")
        if not -n <= s < n:
            raise ValueError(f"{path}: slice {s} out of range for {n} slices")
        out.append(int(s) % n)
    if not out:
        raise ValueError(f"{path}: empty slice selection")
    return tuple(out)


def _read_rows(dataset, rows):
    """``dataset[rows]`` along axis 0 for any order / repeats (h5py wants increasing unique indices)."""
    unique, inverse = np.unique(np.asarray(rows), return_inverse=True)
    return dataset[unique.tolist()][inverse]


def _python(value):
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


MAX_SIZE = 8192
"""The largest k-space side a file may have (fastMRI's are at most 768)."""
MAX_COILS = 128
"""The most coils a file may have (fastMRI's have at most 32)."""


def read_fastmri(path: str | os.PathLike, slice: int | Sequence[int] | None = None) -> FastMRIData:
    """Read a fastMRI HDF5 file, optionally only some slices (``None``: all; int; list of ints).

    The slice axis is always kept (an int selects ``S = 1``). Raises ``FileNotFoundError`` for a
    missing file and ``ValueError`` naming the file for a non-HDF5 file, a missing ``kspace``
    dataset, or k-space of the wrong rank.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such fastMRI file")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path}: not an HDF5 file (expected a fastMRI .h5 file with a 'kspace' dataset)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: cannot be read as HDF5 ({err}); is the file complete?") from None
    with f:
        if "kspace" not in f:
            raise ValueError(
                f"{path}: missing dataset 'kspace' (fastMRI files hold k-space under 'kspace'; "
                f"found {sorted(f.keys())})"
            )
        ks = f["kspace"]
        if not isinstance(ks, h5py.Dataset):
            raise ValueError(f"{path}: 'kspace' is an HDF5 group; expected a dataset of complex k-space")
        if not np.issubdtype(ks.dtype, np.complexfloating):
            raise ValueError(
                f"{path}: 'kspace' has dtype {ks.dtype}; k-space is complex (complex64 in fastMRI "
                f"files; write real data as a complex array with zero imaginary part)"
            )
        if ks.ndim not in (3, 4):
            raise ValueError(f"{path}: 'kspace' must be (slices, H, W) or (slices, coils, H, W), got shape {ks.shape}")
        if max(ks.shape[-2:]) > MAX_SIZE or (ks.ndim == 4 and ks.shape[1] > MAX_COILS):
            raise ValueError(
                f"{path}: 'kspace' of shape {ks.shape} is larger than sgdip reconstructs (H, W up to {MAX_SIZE}, "
                f"up to {MAX_COILS} coils)"
            )
        rows = _slice_indices(slice, ks.shape[0], path)

        def optional(name, dtype):
            if name not in f:
                return None
            if f[name].shape[:1] != ks.shape[:1]:
                raise ValueError(
                    f"{path}: '{name}' has shape {f[name].shape}, expected ({ks.shape[0]}, H, W): one image per slice"
                )
            return _read_rows(f[name], rows).astype(dtype)

        mask = None
        if "mask" in f:
            raw = np.asarray(f["mask"])
            numeric = np.issubdtype(raw.dtype, np.number) or raw.dtype == bool
            if not (numeric and np.isin(raw, (0, 1)).all()):
                values = np.unique(raw)[:4].tolist() if numeric else f"dtype {raw.dtype}"
                raise ValueError(f"{path}: 'mask' holds 0 and 1 only (sampled phase-encoding lines), got {values}")
            mask = raw.astype(np.float32)
        header = f["ismrmrd_header"][()] if "ismrmrd_header" in f else None
        sizes = _parse_header(header, path) if header is not None else (None, None)
        return FastMRIData(
            path=str(path),
            kspace=_read_rows(ks, rows).astype(np.complex64),
            slices=rows,
            mask=mask,
            reconstruction_rss=optional("reconstruction_rss", np.float32),
            reconstruction_esc=optional("reconstruction_esc", np.float32),
            encoded_size=sizes[0],
            recon_size=sizes[1],
            attrs={k: _python(v) for k, v in f.attrs.items()},
        )


def _header_xml(encoded_size, recon_size):
    """A minimal ISMRMRD header holding the encoded and recon matrix sizes."""
    ET.register_namespace("", ISMRMRD_NS)
    root = ET.Element(f"{{{ISMRMRD_NS}}}ismrmrdHeader")
    encoding = ET.SubElement(root, f"{{{ISMRMRD_NS}}}encoding")
    for space, size in (("encodedSpace", encoded_size), ("reconSpace", recon_size)):
        matrix = ET.SubElement(ET.SubElement(encoding, f"{{{ISMRMRD_NS}}}{space}"), f"{{{ISMRMRD_NS}}}matrixSize")
        for key, value in zip("xyz", size):
            ET.SubElement(matrix, f"{{{ISMRMRD_NS}}}{key}").text = str(int(value))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_fastmri(
    path: str | os.PathLike,
    kspace,
    *,
    reconstruction_rss=None,
    reconstruction_esc=None,
    mask=None,
    recon_size: tuple[int, int] | None = None,
    acquisition: str = "CORPD_FBK",
    patient_id: str = "simulated",
    attrs: dict[str, Any] | None = None,
) -> None:
    """Write a small file in fastMRI's layout (atomically).

    ``kspace``: ``(S, H, W)`` or ``(S, C, H, W)``. ``reconstruction_rss`` defaults to the centre crop
    to ``recon_size`` (default ``(min(H, 320), min(W, 320))``) of the root-sum-of-squares of
    ``ifft2c(kspace)``, which is how fastMRI's targets are made from fully sampled data. Attributes
    ``max`` / ``norm`` are those of ``reconstruction_rss``, as in fastMRI.
    """
    kspace = np.asarray(kspace, np.complex64)
    if kspace.ndim not in (3, 4):
        raise ValueError(f"kspace: expected (S, H, W) or (S, C, H, W), got shape {kspace.shape}")
    h, w = kspace.shape[-2:]
    recon_size = (min(h, 320), min(w, 320)) if recon_size is None else tuple(recon_size)
    if reconstruction_rss is None:
        images = ifft2c(jnp.asarray(kspace))
        combined = rss(images, axis=1) if kspace.ndim == 4 else jnp.abs(images)
        reconstruction_rss = center_crop(np.asarray(combined), recon_size)
    reconstruction_rss = np.asarray(reconstruction_rss, np.float32)
    header = _header_xml((h, w, 1), (*recon_size, 1))

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("kspace", data=kspace)
        f.create_dataset("reconstruction_rss", data=reconstruction_rss)
        if reconstruction_esc is not None:
            f.create_dataset("reconstruction_esc", data=np.asarray(reconstruction_esc, np.float32))
        if mask is not None:
            f.create_dataset("mask", data=np.asarray(mask))
        f.create_dataset("ismrmrd_header", data=header)
        f.attrs["acquisition"] = acquisition
        f.attrs["max"] = float(reconstruction_rss.max())
        f.attrs["norm"] = float(np.linalg.norm(reconstruction_rss))
        f.attrs["patient_id"] = patient_id
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    atomic_write(path, lambda fileobj: fileobj.write(buffer.getvalue()))
