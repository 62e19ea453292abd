"""Bundled real samples, available offline: MR cases simulated from a real magnitude image, and
natural images for inpainting.

``sample_mri`` builds a multi-coil case from a real magnitude MR image shipped with pydicom /
pydicom-data or matplotlib. Coils, phase, undersampling and noise are simulated, so results on it are
"simulated from a real magnitude image", never raw scanner k-space:

1. magnitude: the DICOM image spectrally resampled to ``size`` (centred-spectrum crop, no
   interpolation), ``|.|``, divided by its maximum;
2. phase: a smooth quadratic ``phi(u, v) = sum_{i + j <= 2} c_ij u^i v^j`` over ``u, v in [-1, 1]``
   with ``c_ij ~ N(0, (pi/4)^2)`` drawn with ``jax.random`` from ``seed``; ``x = |x| exp(i phi)``;
3. birdcage coil maps (unit root-sum-of-squares), ``sgdip_jax.operators.coils.birdcage_maps``;
4. a phase-encode line mask from ``sgdip_jax.operators.masks`` with ``seed`` (``mask_type`` ``"vdrs"``,
   ``"random"`` or ``"equispaced"``); ``center_fraction`` defaults to ``0.32 / acceleration``
   (fastMRI's 0.08 at 4x and 0.04 at 8x);
5. complex Gaussian noise ``n = sigma w``, ``w ~ CN(0, 1)`` i.i.d. on every k-space sample, with
   ``sigma`` chosen so that the realised SNR over the sampled entries is exactly ``snr_db``:

       SNR_dB = 20 log10(||M F S x|| / ||M n||),

   and ``y = M (F S x + n)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..operators import masks
from ..operators.coils import birdcage_maps
from ..operators.fft import fft2c
from .case import Case
from .images import read_dicom, spectral_resample

MRI_SAMPLES = {
    "shoulder": ("MR2_UNCR.dcm", "Philips 1.5 T T1 spin-echo shoulder (NEMA test image, pydicom-data)"),
    "small": ("MR_small.dcm", "64x64 MR test image (pydicom)"),
    "head": ("s1045.ima.gz", "256x256 sagittal MR head (matplotlib sample data, effectively 8-bit)"),
}
IMAGE_SAMPLES = {
    "astronaut": ("skimage", "astronaut"),
    "coffee": ("skimage", "coffee"),
    "chelsea": ("skimage", "chelsea"),
    "camera": ("skimage", "camera"),
    "ascent": ("pywt", "ascent"),
    "aero": ("pywt", "aero"),
}
PHASE_STD = np.pi / 4


def _size2(size):
    size = (size, size) if np.isscalar(size) else tuple(size)
    if len(size) != 2 or min(size) < 1 or any(int(s) != s for s in size):
        raise ValueError(f"size: expected a positive int or (h, w), got {size}")
    return tuple(int(s) for s in size)


def smooth_phase(shape, key):
    """Quadratic phase map ``(H, W)`` (float32) with ``N(0, (pi/4)^2)`` coefficients from ``key``."""
    h, w = shape
    v, u = jnp.meshgrid(jnp.linspace(-1, 1, h), jnp.linspace(-1, 1, w), indexing="ij")
    terms = jnp.stack([jnp.ones_like(u), u, v, u * u, u * v, v * v])
    coeffs = PHASE_STD * jax.random.normal(key, (terms.shape[0],))
    return jnp.tensordot(coeffs, terms, axes=1).astype(jnp.float32)


def simulate_measurements(x, smaps, mask, snr_db, key):
    """``(y, noise, sigma)`` with ``y = mask * (fft2c(smaps * x) + noise)``.

    ``noise = sigma * w``, ``w`` standard complex Gaussian ``(C, H, W)`` from ``key``, and ``sigma``
    set so that ``20 log10(||mask * fft2c(smaps * x)|| / ||mask * noise||) = snr_db`` exactly.
    """
    clean = fft2c(smaps * x)
    w = jax.random.normal(key, clean.shape, jnp.complex64)
    sigma = jnp.linalg.norm(mask * clean) / (10.0 ** (snr_db / 20.0) * jnp.linalg.norm(mask * w))
    noise = (sigma * w).astype(jnp.complex64)
    return mask * (clean + noise), noise, sigma.astype(jnp.float32)


def _read_sample(name):
    """The stored pixels of MR sample ``name`` as float32 ``(H, W)``."""
    file_name = MRI_SAMPLES[name][0]
    if name == "head":
        from matplotlib.cbook import get_sample_data

        with get_sample_data(file_name) as f:  # 256x256 big-endian uint16, no header
            return np.frombuffer(f.read(), ">u2").reshape(256, 256).astype(np.float32)
    from pydicom.data import get_testdata_file

    path = get_testdata_file(file_name)
    if path is None:
        raise FileNotFoundError(f"sample_mri: {file_name} not found; install the data extra (pydicom, pydicom-data)")
    return read_dicom(path)


def mri_magnitude(name="shoulder", size=320):
    """The sample's real magnitude image resampled to ``size`` and scaled to maximum 1 (float32)."""
    if name not in MRI_SAMPLES:
        raise ValueError(f"sample_mri: unknown sample {name!r}; expected one of {sorted(MRI_SAMPLES)}")
    magnitude = np.abs(spectral_resample(_read_sample(name), _size2(size)))
    return (magnitude / magnitude.max()).astype(np.float32)


def sample_mri(
    name: str = "shoulder",
    size=320,
    coils: int = 8,
    acceleration: float = 4.0,
    snr_db: float = 30.0,
    seed: int = 0,
    center_fraction: float | None = None,
    mask_type: str = "vdrs",
    return_noise: bool = False,
):
    """A multi-coil case simulated from a real magnitude MR image (see the module docstring).

    ``name``: ``"shoulder"`` (pydicom-data ``MR2_UNCR.dcm``, 1024x1024), ``"head"`` (matplotlib's
    sagittal head ``s1045.ima.gz``, 256x256) or ``"small"`` (pydicom ``MR_small.dcm``, 64x64).
    ``size``: int or ``(h, w)``. Keys: ``phase_key, noise_key =
    jax.random.split(jax.random.PRNGKey(seed))``; the mask uses ``seed`` directly. Returns the
    :class:`Case` (``x``, ``sigma`` and ``meta`` filled), or ``(case, noise)`` with
    ``return_noise=True``, so that ``case.y == case.mask * (fft2c(case.smaps * case.x) + noise)``.
    """
    if mask_type not in masks.MASK_TYPES:
        raise ValueError(f"sample_mri: unknown mask_type {mask_type!r}; expected one of {sorted(masks.MASK_TYPES)}")
    shape = _size2(size)
    case, noise = simulate_case(
        mri_magnitude(name, shape), coils, acceleration, snr_db, seed, center_fraction, mask_type
    )
    file_name, description = MRI_SAMPLES[name]
    meta = {
        "source": "simulated from a real magnitude image",
        "source_file": file_name,
        "source_description": description,
        "name": name,
        **case.meta,
    }
    case = dataclasses.replace(case, meta=meta)
    return (case, np.asarray(noise)) if return_noise else case


def simulate_acquisition(magnitude, coils, mask, snr_db, seed):
    """``(x, smaps, y, noise, sigma)``: a smooth phase on the real ``magnitude`` ``(H, W)``,
    ``coils`` birdcage maps and the sampled k-space ``y`` with noise at ``snr_db``
    (:func:`simulate_measurements`), the phase and the noise from ``seed``."""
    magnitude = jnp.asarray(magnitude, jnp.float32)
    phase_key, noise_key = jax.random.split(jax.random.PRNGKey(seed))
    x = (magnitude * jnp.exp(1j * smooth_phase(magnitude.shape, phase_key))).astype(jnp.complex64)
    smaps = birdcage_maps(coils, magnitude.shape)
    y, noise, sigma = simulate_measurements(x, smaps, mask, snr_db, noise_key)
    return x, smaps, y, noise, sigma


def simulate_case(magnitude, coils=8, acceleration=4.0, snr_db=30.0, seed=0, center_fraction=None, mask_type="vdrs"):
    """``(case, noise)``: the multi-coil simulation of :func:`sample_mri` from any real ``magnitude``
    image ``(H, W)`` (keys and mask from ``seed`` as there)."""
    if mask_type not in masks.MASK_TYPES:
        raise ValueError(f"simulate_case: unknown mask_type {mask_type!r}; expected one of {sorted(masks.MASK_TYPES)}")
    shape = np.shape(magnitude)
    center_fraction = masks.default_center_fraction(acceleration) if center_fraction is None else center_fraction
    mask, actual = masks.MASK_TYPES[mask_type](
        shape, acceleration=acceleration, center_fraction=center_fraction, seed=seed
    )
    x, smaps, y, noise, sigma = simulate_acquisition(magnitude, coils, mask, snr_db, seed)
    meta = {
        "size": list(shape),
        "coils": int(coils),
        "coil_maps": "birdcage",
        "acceleration": float(acceleration),
        "actual_acceleration": float(actual),
        "center_fraction": float(center_fraction),
        "mask_type": mask_type,
        "snr_db": float(snr_db),
        "snr_definition": "20 log10(||M F S x|| / ||M n||)",
        "phase": "quadratic polynomial, coefficients N(0, (pi/4)^2)",
        "seed": int(seed),
    }
    case = Case(y=np.asarray(y), smaps=smaps, mask=mask, x=np.asarray(x), sigma=float(sigma), meta=meta)
    return case, np.asarray(noise)


def sample_image(name: str = "astronaut", size=None) -> np.ndarray:
    """A natural image bundled with scikit-image / PyWavelets as float32 in ``[0, 1]``.

    Grey sources give ``(H, W)``, colour ones ``(H, W, 3)``. With ``size`` (int or ``(h, w)``), the
    largest centred window of the target aspect ratio is cropped and then resized (anti-aliased,
    scikit-image ``resize``).
    """
    if name not in IMAGE_SAMPLES:
        raise ValueError(f"sample_image: unknown image {name!r}; expected one of {sorted(IMAGE_SAMPLES)}")
    package, function = IMAGE_SAMPLES[name]
    if package == "skimage":
        import skimage.data as source
    else:
        import pywt.data as source
    img = np.asarray(getattr(source, function)())
    img = img / float(np.iinfo(img.dtype).max) if np.issubdtype(img.dtype, np.integer) else img
    if size is None:
        return img.astype(np.float32)
    from skimage.transform import resize

    h, w = _size2(size)
    scale = min(img.shape[0] / h, img.shape[1] / w)
    ch, cw = int(round(h * scale)), int(round(w * scale))
    top, left = (img.shape[0] - ch) // 2, (img.shape[1] - cw) // 2
    img = img[top : top + ch, left : left + cw]
    out = resize(img, (h, w) + img.shape[2:], anti_aliasing=(ch, cw) != (h, w), preserve_range=True)
    return np.clip(out, 0, 1).astype(np.float32)
