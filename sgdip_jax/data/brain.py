"""Brain slices for training the supervised baselines: the MNI ICBM152 2009a T1 template that the
nilearn package ships (``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``,
197x233x189 voxels of 1 mm, skull-stripped population average), read with nibabel; nothing is
downloaded.

Slices come from all three orientations (``"axial"``, ``"coronal"``, ``"sagittal"``). A slice is used
when at least ``min_fill`` of its pixels are brain (non-zero). The template is left-right symmetric,
so a sagittal slice and its mirror image are the same picture: only the left hemisphere and the
midline are used, otherwise a held-out slice would have its twin in the training set.

**Split** (:func:`split_indices`): per orientation the usable slices, in order, are cut into
``SLABS`` contiguous slabs; slab 3 is the validation set, slab 7 the test set, all others train,
and the ``GAP`` slices on each side of a held-out slab are dropped so that no training slice is a
neighbour of a held-out one.

Each slice is zero-padded to a square, spectrally resampled to ``size`` (centred-spectrum crop, as
the MR samples), ``|.|`` and scaled to maximum 1.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from .images import spectral_resample

TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
ORIENTATIONS = {"sagittal": 0, "coronal": 1, "axial": 2}
SPLITS = ("train", "val", "test")
SLABS, VAL_SLAB, TEST_SLAB, GAP = 10, 3, 7, 2


def template_path() -> Path:
    """Where the installed nilearn package keeps the T1 template (nilearn itself is not imported)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the MNI template comes with nilearn: pip install nibabel and nilearn "
            '(pip install -e ".[train]", or pip install --no-deps nilearn to skip its dependencies)'
        )
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / TEMPLATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the MNI T1 template is missing from this nilearn installation")
    return path


def read_volume(path: str | os.PathLike | None = None) -> np.ndarray:
    """The template (or another NIfTI volume at ``path``) as float32 ``(X, Y, Z)``."""
    import nibabel

    path = template_path() if path is None else Path(path)
    volume = np.asarray(nibabel.load(path).get_fdata(), np.float32)
    if volume.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {volume.shape}")
    return volume


def usable_slices(volume: np.ndarray, orientation: str, min_fill: float = 0.15) -> np.ndarray:
    """Indices along ``orientation`` of the slices with at least ``min_fill`` brain pixels (sagittal:
    left hemisphere and midline only, see the module docstring)."""
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation: expected one of {sorted(ORIENTATIONS)}, got {orientation!r}")
    axis = ORIENTATIONS[orientation]
    other = tuple(a for a in range(3) if a != axis)
    fill = np.mean(volume > 0, axis=other)
    indices = np.flatnonzero(fill >= min_fill)
    if orientation == "sagittal":
        indices = indices[indices <= (volume.shape[0] - 1) // 2]
    return indices


def split_indices(indices: np.ndarray, split: str) -> np.ndarray:
    """The part ``split`` (``"train"``, ``"val"``, ``"test"``) of ordered slice ``indices``."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    slab = np.arange(len(indices)) * SLABS // max(len(indices), 1)
    if split == "val":
        return indices[slab == VAL_SLAB]
    if split == "test":
        return indices[slab == TEST_SLAB]
    held = np.flatnonzero((slab == VAL_SLAB) | (slab == TEST_SLAB))
    near = np.zeros(len(indices), bool)
    for offset in range(-GAP, GAP + 1):
        near[np.clip(held + offset, 0, len(indices) - 1)] = True
    return indices[~near]


def _square(image: np.ndarray) -> np.ndarray:
    h, w = image.shape
    n = max(h, w)
    top, left = (n - h) // 2, (n - w) // 2
    out = np.zeros((n, n), np.float32)
    out[top : top + h, left : left + w] = image
    return out


def slice_image(volume: np.ndarray, orientation: str, index: int, size: int) -> np.ndarray:
    """Slice ``index`` of ``volume`` across ``orientation`` (superior / anterior up), zero-padded to a
    square, spectrally resampled to ``size``, ``|.|`` and scaled to maximum 1."""
    plane = np.rot90(np.take(volume, int(index), axis=ORIENTATIONS[orientation]))
    image = np.abs(spectral_resample(_square(plane), (size, size)))
    return image / image.max()


def brain_slices(
    split: str = "train",
    size: int = 128,
    orientations=tuple(ORIENTATIONS),
    volume: np.ndarray | None = None,
    min_fill: float = 0.15,
) -> tuple[np.ndarray, list[dict]]:
    """``(images (N, size, size) float32 with maximum 1, descriptions)`` of the slices of ``split``.

    ``volume``: the template by default (:func:`read_volume`); each description holds the
    orientation and slice index, so a result can name the slice it came from.
    """
    volume = read_volume() if volume is None else np.asarray(volume, np.float32)
    images, where = [], []
    for orientation in orientations:
        for index in split_indices(usable_slices(volume, orientation, min_fill), split):
            images.append(slice_image(volume, orientation, index, size))
            where.append({"source": TEMPLATE_FILE, "orientation": orientation, "slice": int(index)})
    if not images:
        raise ValueError(f"no {split} slices with at least {min_fill:.0%} brain in {list(orientations)}")
    return np.stack(images).astype(np.float32), where
