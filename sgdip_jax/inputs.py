"""Turn an input file into reconstruction problems ``(operator, y, target, reference, meta)``.

Kinds, detected from the file (content first, then suffix):

* ``fastmri``: a fastMRI HDF5 file (``kspace`` ``(S, [C,] H, W)``). Each selected slice becomes one
  problem: the readout oversampling is removed by a centre crop of the coil images along ``H`` to
  ``crop`` rows (exact for Cartesian phase-encode masks, which keep whole readout lines); fully
  sampled k-space is undersampled retrospectively with a seeded line mask, undersampled files keep
  their own ``mask``; coil maps are estimated from the sampled centre lines only. The metric
  reference is the file's ``reconstruction_rss`` (fastMRI's target, compared after a centre crop to
  its size), else the root-sum-of-squares of the fully sampled coil images.
* ``case``: a case ``.npz`` (``y``, ``smaps``, ``mask``, optional reference ``x``).
* ``dicom``: a DICOM magnitude image. Its multi-coil acquisition is *simulated* as the bundled
  samples are (smooth phase, birdcage maps, line mask, complex Gaussian noise at ``snr_db``), so
  results on it are marked ``simulated``.
* ``image``: PNG / JPEG / TIFF / BMP, reconstructed by inpainting with a pixel mask (a mask file or a
  spec such as ``bernoulli:0.5`` or ``box:64``).

No reconstruction algorithm lives here; :func:`load_problems` only builds problems.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import jax.numpy as jnp
import numpy as np

from .data import case as case_io
from .data import fastmri, images, samples
from .data.arrays import load_array
from .metrics import center_crop
from .operators import masks
from .operators.fft import fft2c, ifft2c
from .operators.inpainting import Inpainting
from .operators.mri import MultiCoilMRI

log = logging.getLogger("sgdip")

KINDS = ("fastmri", "case", "dicom", "image")
SMAPS_CHOICES = ("auto", "espirit", "lowres", "ones", "file:PATH")
DEFAULT_INPAINTING_MASK = "bernoulli:0.5"


def _option(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """How an input file becomes problems. Every field is a ``sgdip reconstruct`` option
    (``--center-fraction`` for ``center_fraction``); its ``help`` metadata says what it does and is
    what ``--help`` shows. ``mask`` is a file or a spec for
    :func:`sgdip_jax.operators.masks.parse_mask_spec`."""

    slice: int | None = _option(None, "fastMRI slice (DICOM: frame) to reconstruct (default: the middle one)")
    slices: str | None = _option(
        None,
        "fastMRI volume: 'all', 'A:B' or 'i,j,k'; finished slices are kept in OUT.partial so an interrupted "
        "run resumes where it stopped (default: only --slice)",
    )
    acceleration: float = _option(4.0, "undersampling factor of the retrospective line mask for fully sampled MRI")
    center_fraction: float | None = _option(
        None, "fraction of fully sampled centre lines (default: 0.32 / acceleration, i.e. 0.08 at 4x)"
    )
    mask_type: str = _option("vdrs", f"retrospective line mask: {', '.join(masks.MASK_TYPES)}")
    mask: str | None = _option(
        None,
        "mask file (.npy, .npz with 'mask', or image; non-zero = sampled/known) or spec (bernoulli:MISSING, "
        "box:SIZE, vdrs|random|equispaced:ACC[:CF]); for MRI it replaces the line mask (default: the line "
        f"mask for MRI, {DEFAULT_INPAINTING_MASK} for images)",
    )
    smaps: str = _option(
        "auto",
        f"coil maps: {', '.join(SMAPS_CHOICES)}; auto = the input's own maps (case, simulated DICOM), ESPIRiT "
        "from the centre lines for fastMRI, ones for single-coil",
    )
    crop: int = _option(
        320,
        "fastMRI: crop readout oversampling to this many rows and compute metrics on the central CROPxCROP "
        "(or reconstruction_rss's size); 0 = no crop",
    )
    size: int | None = _option(None, "DICOM: resample to SIZExSIZE by spectral cropping (default: native size)")
    coils: int = _option(8, "DICOM: number of simulated coils")
    snr_db: float = _option(30.0, "DICOM: simulated k-space SNR in dB")
    seed: int = _option(0, "random seed (network, input, masks, simulation)")


@dataclasses.dataclass
class Problem:
    """One reconstruction problem.

    ``target``: reference of the operator's image shape for per-iteration metrics (or ``None``).
    ``reference``: what the final metrics compare with; when ``crop`` is set the reconstruction is
    centre-cropped to ``crop`` first (fastMRI's 320x320). ``meta``: provenance written to metrics.json.
    ``sigma``: noise std per complex measured entry when known (simulated data, case files), else
    ``None``; the classical methods' ``lam="discrepancy"`` uses it (and estimates it from ``y``
    when it is ``None``).
    """

    operator: Any
    y: np.ndarray
    target: np.ndarray | None
    reference: np.ndarray | None
    crop: tuple[int, int] | None
    meta: dict[str, Any]
    sigma: float | None = None


def detect_kind(path: str | Path) -> str:
    """One of :data:`KINDS` for an existing file, else ``ValueError`` naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if h5py.is_hdf5(path) or suffix in (".h5", ".hdf5"):
        return "fastmri"
    if suffix == ".npz":
        return "case"
    if images.is_dicom(path):
        return "dicom"
    if suffix in images.PILLOW_SUFFIXES:
        return "image"
    raise ValueError(
        f"{path}: unsupported input {suffix or '(no suffix)'!r}; expected a fastMRI .h5, a case .npz, "
        f"a DICOM file or an image ({', '.join(images.PILLOW_SUFFIXES)})"
    )


def load_problems(path: str | Path, options: InputOptions = InputOptions()) -> Iterator[Problem]:
    """Problems of ``path`` in order (one per selected slice for fastMRI volumes, else one)."""
    kind = detect_kind(path)
    _warn_unused(options, kind)
    if kind == "fastmri":
        yield from fastmri_problems(path, options)
    elif kind == "case":
        yield case_problem(path, options)
    elif kind == "dicom":
        yield dicom_problem(path, options)
    else:
        yield image_problem(path, options)


# --------------------------------------------------------------------------- shared MRI pieces


def _finite(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains {int(np.size(a) - np.isfinite(a).sum())} NaN/Inf values")


def _center_fraction(options: InputOptions) -> float:
    if options.center_fraction is None:
        return masks.default_center_fraction(options.acceleration)
    return options.center_fraction


def load_mask_file(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """A 0/1 float32 mask of ``shape`` from ``.npy``, ``.npz`` (key ``mask``) or an image file.

    Non-zero entries (image pixels above half the maximum) are 1. A ``(W,)`` or ``(1, W)`` line mask
    is broadcast over rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such mask file")
    if path.suffix.lower() in (".npy", ".npz"):
        mask = load_array(path, "mask", ("mask",))
        if (
            not (np.issubdtype(mask.dtype, np.bool_) or np.issubdtype(mask.dtype, np.number))
            or np.iscomplexobj(mask)
            or not np.isin(mask, (0, 1)).all()
        ):
            raise ValueError(
                f"{path}: a mask holds 0 and 1 only (or booleans), got values of dtype {mask.dtype} "
                f"such as {np.unique(mask)[:4].tolist()}"
            )
        mask = mask != 0
    else:
        img = images.load_image(path, grey=True)
        mask = img > 0.5 * img.max(initial=0)
    mask = np.asarray(mask)
    if mask.ndim == 1:
        mask = mask[None]
    try:
        mask = np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(f"{path}: mask has shape {mask.shape}, expected {tuple(shape)}") from None
    if not mask.any():
        raise ValueError(f"{path}: mask is empty (all zeros)")
    return mask.astype(np.float32)


def mask_from(spec: str, shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, float | None]:
    """``--mask``: a mask file (``(mask, None)``) or a spec (``(mask, acceleration)``); a name that looks
    like a file (a path or an extension) but is none raises ``FileNotFoundError``."""
    if Path(spec).is_file():
        return load_mask_file(spec, shape), None
    if "/" in spec or Path(spec).suffix.lower() in (".npy", ".npz", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        raise FileNotFoundError(f"--mask {spec}: no such mask file")
    return masks.parse_mask_spec(spec, shape, seed)


def line_mask(shape: tuple[int, int], options: InputOptions) -> tuple[np.ndarray, float]:
    """``(mask (H, W), acceleration)``: from ``options.mask`` (file or spec) or the line-mask options."""
    if options.mask:
        mask, acceleration = mask_from(options.mask, shape, options.seed)
        return mask, acceleration if acceleration is not None else float(mask.size / mask.sum())
    if options.mask_type not in masks.MASK_TYPES:
        raise ValueError(f"mask type {options.mask_type!r}: expected one of {sorted(masks.MASK_TYPES)}")
    return masks.MASK_TYPES[options.mask_type](
        shape, acceleration=options.acceleration, center_fraction=_center_fraction(options), seed=options.seed
    )


def center_line_count(mask: np.ndarray) -> int:
    """Largest ``n`` whose centred block of columns ``W//2 - n//2 ... W//2 - n//2 + n - 1`` is fully
    sampled (the calibration block that the coil-map estimators take from the k-space centre)."""
    lines = np.asarray(mask).reshape(-1, np.shape(mask)[-1]).all(axis=0)
    width, n = lines.size, 0
    while n < width and lines[width // 2 - (n + 1) // 2 : width // 2 - (n + 1) // 2 + n + 1].all():
        n += 1
    return n


def estimate_maps(kind: str, y: np.ndarray, mask: np.ndarray, source: str) -> np.ndarray:
    """Coil maps ``(C, H, W)`` from undersampled k-space ``y``: ``"espirit"`` or ``"lowres"``, using
    only the fully sampled centre lines of ``mask``."""
    from .operators import sensitivity

    calib = center_line_count(mask)
    if calib < 2:
        raise ValueError(
            f"{source}: cannot estimate coil maps ({kind}): the mask has {calib} fully sampled centre "
            "lines; give maps with --smaps file:PATH"
        )
    fn = sensitivity.espirit if kind == "espirit" else sensitivity.lowres_maps
    # ESPIRiT's kernel shrinks with a small calibration region (as BART's does): at most 6, and at
    # most about half the region, so that the calibration matrix has several patches per kernel
    options = {"kernel_size": min(6, calib // 2 + 1)} if kind == "espirit" else {}
    try:
        return np.asarray(fn(jnp.asarray(y), calib_width=calib, **options), np.complex64)
    except ValueError as err:
        raise ValueError(
            f"{source}: {kind} coil maps from {calib} fully sampled centre lines failed ({err}); "
            "sample more centre lines (--center-fraction) or choose another --smaps"
        ) from None


def resolve_maps(options: InputOptions, given: np.ndarray | None, y: np.ndarray, mask: np.ndarray, source: str):
    """``(smaps, how)`` for ``options.smaps``; ``given`` are the input's own maps (or ``None``)."""
    choice = options.smaps
    coils, shape = y.shape[0], y.shape[-2:]
    if choice == "auto":
        if given is not None:
            return given, "input"
        choice = "ones" if coils == 1 else "espirit"
    if choice == "ones":
        if coils != 1:
            raise ValueError(f"{source}: --smaps ones needs single-coil data, got {coils} coils")
        return np.ones((1, *shape), np.complex64), "ones"
    if choice in ("espirit", "lowres"):
        return estimate_maps(choice, y, mask, source), choice
    if choice.startswith("file:"):
        file = Path(choice[5:])
        if not file.is_file():
            raise FileNotFoundError(f"{file}: no such coil-map file")
        maps = np.asarray(load_array(file, "coil-map", ("smaps",)))
        if maps.ndim == 3 and maps.shape[0] == coils and maps.shape[-1] == shape[-1] and maps.shape[1] > shape[0]:
            maps = center_crop(maps, shape)
        if maps.shape != y.shape:
            raise ValueError(f"{file}: coil maps have shape {maps.shape}, expected {y.shape}")
        _finite(str(file), maps)
        return maps.astype(np.complex64), f"file {file}"
    raise ValueError(f"--smaps {options.smaps!r}: expected one of {list(SMAPS_CHOICES)}")


# --------------------------------------------------------------------------- fastMRI


def parse_slices(spec: str, n: int) -> list[int]:
    """``"all"``, ``"A:B"`` (half-open, Python-style) or ``"i,j,k"`` -> slice indices in ``[0, n)``."""
    spec = str(spec).strip()
    if spec == "all":
        return list(range(n))
    if re.fullmatch(r"-?\d*:-?\d*", spec):
        start, stop = (int(s) if s else None for s in spec.split(":"))
        for end in (start, stop):  # A:B within the file, as a single index must be (B may be n)
            if end is not None and not -n <= end <= n:
                raise ValueError(f"--slices {spec!r}: {end} is outside the file's {n} slices (-{n} to {n})")
        picked = list(range(n))[start:stop]
    elif re.fullmatch(r"-?\d+(,-?\d+)*", spec):
        picked = [int(s) for s in spec.split(",")]
    else:
        raise ValueError(f"--slices {spec!r}: expected 'all', 'A:B' or a comma-separated list of integers")
    if not picked:
        raise ValueError(f"--slices {spec!r}: selects no slice of {n}")
    if len({i % n if -n <= i < n else i for i in picked}) != len(picked):
        raise ValueError(f"--slices {spec!r}: names a slice more than once; each slice is reconstructed once")
    return picked


def slice_count(path: str | Path) -> int:
    """Number of slices of a fastMRI file (the reader validates the file on slice 0 first)."""
    fastmri.read_fastmri(path, slice=0)
    with h5py.File(path, "r") as f:
        return int(f["kspace"].shape[0])


def crop_readout(kspace: np.ndarray, rows: int) -> np.ndarray:
    """Remove readout oversampling: centre-crop the coil images ``ifft2c(k)`` to ``rows`` along ``H``
    and transform back (exact for masks that keep whole readout lines)."""
    img = ifft2c(jnp.asarray(kspace))
    return np.asarray(fft2c(center_crop(img, (rows, img.shape[-1]))), np.complex64)


def selected_slices(path: str | Path, options: InputOptions) -> list[int]:
    """Indices of the fastMRI slices that ``options`` select (``slices``, else ``slice``, else the middle)."""
    n = slice_count(path)
    if options.slices is not None and options.slice is not None:
        raise ValueError("give either --slice or --slices, not both")
    if options.slices is not None:
        return parse_slices(options.slices, n)
    return [n // 2 if options.slice is None else options.slice]


RSS_MISMATCH = 0.1
"""Largest relative difference between a fully sampled file's ``reconstruction_rss`` and the RSS of
its k-space over the same centre crop (fastMRI computes the one from the other)."""


def fastmri_problems(path: str | Path, options: InputOptions, indices: list[int] | None = None) -> Iterator[Problem]:
    """One problem per slice of a fastMRI file: ``indices``, or those ``options`` select (see the
    module docstring)."""
    for index in selected_slices(path, options) if indices is None else indices:
        data = fastmri.read_fastmri(path, slice=index)
        yield fastmri_slice_problem(data, options)


def fastmri_slice_problem(data: fastmri.FastMRIData, options: InputOptions) -> Problem:
    """The problem of the single slice in ``data`` (as returned by ``read_fastmri(path, slice=i)``)."""
    source = f"{data.path} slice {data.slices[0]}"
    kspace = data.kspace[0] if data.multicoil else data.kspace[0][None]
    _finite(f"{source}: kspace", kspace)
    if not kspace.size or not np.any(kspace):
        raise ValueError(f"{source}: 'kspace' is {'empty' if not kspace.size else 'all zero'}; nothing to reconstruct")
    rows = kspace.shape[-2]
    if options.crop and rows > options.crop:
        kspace = crop_readout(kspace, options.crop)
    h, w = kspace.shape[-2:]
    meta: dict[str, Any] = {
        "slice": data.slices[0],
        "kspace_shape": list(data.kspace.shape[1:]),
        "coils": kspace.shape[0],
    }
    if data.mask is not None:
        if data.mask.shape != (w,):
            raise ValueError(f"{data.path}: 'mask' has shape {data.mask.shape}, expected ({w},) to match kspace")
        mask = np.broadcast_to(data.mask != 0, (h, w)).astype(np.float32)
        if not mask.any():
            raise ValueError(f"{data.path}: 'mask' is empty (no sampled line)")
        acceleration, fully_sampled = float(mask.size / mask.sum()), None
        meta["mask"] = "file"
    else:
        mask, acceleration = line_mask((h, w), options)
        fully_sampled = kspace
        meta["mask"] = options.mask or options.mask_type
    y = (mask * kspace).astype(np.complex64)
    smaps, how = resolve_maps(options, None, y, mask, source)
    target = None
    if fully_sampled is not None:
        target = np.asarray(fastmri.rss(ifft2c(jnp.asarray(fully_sampled)), axis=0), np.float32)
    reference, crop = target, None
    if data.reconstruction_rss is not None:
        reference = data.reconstruction_rss[0]
        crop = tuple(reference.shape)
        if reference.shape[0] > h or reference.shape[1] > w:
            raise ValueError(
                f"{data.path}: reconstruction_rss {reference.shape} is larger than the image ({h}, {w}); "
                "use a larger --crop"
            )
        _finite(f"{data.path}: reconstruction_rss", reference)
        if target is not None:  # fully sampled: the file's rss is that of its own k-space, centre-cropped
            mismatch = np.linalg.norm(center_crop(target, crop) - reference) / max(np.linalg.norm(reference), 1e-30)
            if mismatch > RSS_MISMATCH:
                raise ValueError(
                    f"{data.path}: reconstruction_rss {reference.shape} is not the centre of the k-space's RSS image "
                    f"(relative difference {mismatch:.2f}, expected at most {RSS_MISMATCH}); check the file"
                )
    elif target is not None and options.crop:
        crop = (min(options.crop, h), min(options.crop, w))
        reference = center_crop(target, crop)
    meta.update(
        acceleration=acceleration,
        image_shape=[h, w],
        smaps=how,
        reference="reconstruction_rss"
        if data.reconstruction_rss is not None
        else ("rss of fully sampled data" if target is not None else None),
        metric_crop=None if crop is None else list(crop),
    )
    return Problem(MultiCoilMRI.create(smaps, mask), y, target, reference, crop, meta)


# --------------------------------------------------------------------------- case, DICOM, images


_SAMPLING = ("acceleration", "center_fraction", "mask_type", "mask")
APPLIES = {
    "fastmri": ("slice", "slices", *_SAMPLING, "smaps", "crop", "seed"),
    "case": ("smaps", "seed"),
    "dicom": ("slice", *_SAMPLING, "smaps", "size", "coils", "snr_db", "seed"),
    "image": ("mask", "seed"),
}
"""The :class:`InputOptions` fields that act on each input kind (the others are ignored, with a warning)."""


def _warn_unused(options: InputOptions, kind: str) -> None:
    """Warn once, naming the options that were set but do not act on a ``kind`` input."""
    unused = [
        "--" + f.name.replace("_", "-")
        for f in dataclasses.fields(options)
        if f.name not in APPLIES[kind] and getattr(options, f.name) != f.default
    ]
    if unused:
        log.warning("%s input: ignored, as it does not apply: %s", kind, ", ".join(unused))


def case_problem(path: str | Path, options: InputOptions) -> Problem:
    """The problem stored in a case ``.npz`` file."""
    return problem_from_case(case_io.load_case(path), options, str(path))


def problem_from_case(case: case_io.Case, options: InputOptions = InputOptions(), source: str = "case") -> Problem:
    """The problem of a :class:`~sgdip_jax.data.case.Case` (maps replaced unless ``smaps`` is ``auto``)."""
    smaps, how = resolve_maps(options, case.smaps, case.y, case.mask, source)
    meta = {
        "case_meta": case.meta,
        "acceleration": float(case.mask.size / case.mask.sum()),
        "smaps": how,
        "reference": "x" if case.x is not None else None,
        "simulated": str(case.meta.get("source", "")).startswith("simulated"),
    }
    return Problem(MultiCoilMRI.create(smaps, case.mask), case.y, case.x, case.x, None, meta, case.sigma)


def simulate_from_magnitude(magnitude: np.ndarray, options: InputOptions):
    """``(x, smaps, mask, y, sigma, acceleration)``: the bundled samples' acquisition simulation
    (smooth phase, birdcage maps, seeded line mask, noise at ``snr_db``) for any magnitude image."""
    mask, acceleration = line_mask(magnitude.shape, options)
    x, smaps, y, _, sigma = samples.simulate_acquisition(magnitude, options.coils, mask, options.snr_db, options.seed)
    return np.asarray(x), smaps, mask, np.asarray(y), float(sigma), acceleration


def dicom_problem(path: str | Path, options: InputOptions) -> Problem:
    """A DICOM magnitude image with a simulated multi-coil acquisition."""
    img = images.load_image(path, grey=True)
    if img.ndim == 3:
        frame = img.shape[0] // 2 if options.slice is None else options.slice
        if not -img.shape[0] <= frame < img.shape[0]:
            raise ValueError(f"{path}: frame {frame} out of range for {img.shape[0]} frames")
        img = img[frame]
    elif options.slice not in (None, 0):
        raise ValueError(f"{path}: --slice {options.slice}: the file holds a single frame (use 0 or leave it out)")
    _finite(str(path), img)
    if options.size:
        img = images.spectral_resample(img, options.size)
    magnitude = np.abs(img)
    if not magnitude.max() > 0:
        raise ValueError(f"{path}: image is all zero")
    magnitude = (magnitude / magnitude.max()).astype(np.float32)
    x, true_maps, mask, y, sigma, acceleration = simulate_from_magnitude(magnitude, options)
    smaps, how = resolve_maps(options, true_maps, y, mask, str(path))
    meta = {
        "simulated": True,
        "simulation": "smooth phase, birdcage coil maps, retrospective line mask, complex Gaussian noise",
        "image_shape": list(magnitude.shape),
        "coils": options.coils,
        "snr_db": options.snr_db,
        "sigma": sigma,
        "acceleration": acceleration,
        "mask": options.mask or options.mask_type,
        "smaps": "true (simulated birdcage)" if how == "input" else how,
        "reference": "simulated ground truth",
    }
    return Problem(MultiCoilMRI.create(smaps, mask), y, x, x, None, meta, sigma)


def image_problem(path: str | Path, options: InputOptions) -> Problem:
    """Inpainting of an ordinary image file with ``options.mask`` (file or spec; default ``bernoulli:0.5``)."""
    img = images.load_image(path)
    _finite(str(path), img)
    if not np.any(img):
        raise ValueError(f"{path}: the image is all zero (black); nothing to inpaint")
    return problem_from_image(img, options)


def problem_from_image(img: np.ndarray, options: InputOptions = InputOptions()) -> Problem:
    """Inpainting of the image ``img`` (``(H, W)`` or ``(H, W, 3)``) with ``options.mask`` (file or
    spec; default ``bernoulli:0.5``, drawn with ``options.seed``); noiseless."""
    shape = img.shape[:2]
    spec = options.mask or DEFAULT_INPAINTING_MASK
    mask, _ = mask_from(spec, shape, options.seed)
    operator = Inpainting.create(mask, channels=img.shape[2] if img.ndim == 3 else None)
    y = np.asarray(operator(jnp.asarray(img)))
    meta = {
        "image_shape": list(img.shape),
        "mask": spec,
        "known_fraction": float(mask.mean()),
        "reference": "input image",
    }
    return Problem(operator, y, img, img, None, meta)


def load_reference_image(path: str | Path, shape: tuple[int, ...], complex_image: bool) -> np.ndarray:
    """A reference image for reference-guided DIP with the problem's image ``shape``.

    ``.npy`` arrays and ``.npz`` files (key ``x``, as in case files, or ``image``, as in ``recon.npz``)
    must have that shape; image and DICOM files are converted to grey or colour as the shape asks
    and spectrally resampled to it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such reference file")
    if path.suffix.lower() in (".npy", ".npz"):
        ref = load_array(path, "reference", ("x", "image"))
    else:
        ref = images.load_image(path, grey=len(shape) == 2)
        if ref.ndim == 3 and len(shape) == 2:
            raise ValueError(f"{path}: multi-frame reference; expected one image of shape {tuple(shape)}")
        if ref.shape[:2] != tuple(shape[:2]):
            ref = images.spectral_resample(ref, shape[:2], axes=(0, 1))
    ref = np.asarray(ref)
    if ref.shape != tuple(shape):
        raise ValueError(f"{path}: reference has shape {ref.shape}, expected {tuple(shape)}")
    _finite(str(path), ref)
    return ref.astype(np.complex64 if complex_image else np.float32)
