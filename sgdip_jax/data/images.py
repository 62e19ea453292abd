"""Image files as float32 arrays: DICOM (pydicom) and PNG / JPEG / TIFF / BMP (Pillow).

* DICOM: the stored values after the modality LUT (``RescaleSlope`` / ``RescaleIntercept``), as
  float32 magnitudes: ``(H, W)``, or ``(N, H, W)`` for multi-frame files, or ``(H, W, 3)`` for colour.
* Ordinary images: integer pixels scaled to ``[0, 1]`` by the format's maximum (255 for 8-bit,
  65535 for 16-bit; 32-bit integer images whose values lie in ``[0, 65535]`` count as 16-bit, which
  is how some Pillow versions open 16-bit PNGs); float images (32-bit TIFF) kept as stored. Grey
  ``(H, W)``, colour ``(H, W, 3)``; alpha channels and palettes are dropped / expanded.

``grey=True`` converts colour to luminance ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, as Pillow's
``"L"`` mode); ``grey=False`` repeats a grey image over three channels; ``None`` keeps the source.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def is_dicom(path: str | os.PathLike) -> bool:
    """True when ``path`` has a DICOM suffix or the ``DICM`` magic at byte 128."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with open(path, "rb") as f:
        f.seek(128)
        return f.read(4) == b"DICM"


def _set_channels(img, grey, path):
    colour = img.ndim == 3 and img.shape[-1] == 3
    if grey and colour:
        return img @ LUMA
    if grey is False and img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=-1)
    if grey is False and not colour:
        raise ValueError(f"{path}: cannot make a colour (H, W, 3) image from shape {img.shape}")
    return img


def read_dicom(path: str | os.PathLike) -> np.ndarray:
    """Pixel data of a DICOM file after its modality LUT, float32."""
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
        pixels = apply_modality_lut(ds.pixel_array, ds)
    except (pydicom.errors.InvalidDicomError, AttributeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: unreadable DICOM file ({err})") from None
    return np.asarray(pixels, np.float32)


def read_pillow(path: str | os.PathLike) -> np.ndarray:
    """An ordinary image file as float32, integers scaled to ``[0, 1]``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode in ("1", "LA"):
                im = im.convert("L")
            mode, a = im.mode, np.asarray(im)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: unreadable image file ({err})") from None
    if mode.startswith("I;16") or (mode == "I" and a.max(initial=0) <= 65535 and a.min(initial=0) >= 0):
        return (a / 65535.0).astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        return (a / float(np.iinfo(a.dtype).max)).astype(np.float32)
    return a.astype(np.float32)


def load_image(path: str | os.PathLike, grey: bool | None = None) -> np.ndarray:
    """Load an image file as float32 (DICOM by suffix or magic, else Pillow); see the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    if is_dicom(path):
        img = read_dicom(path)
    elif path.suffix.lower() in PILLOW_SUFFIXES or path.suffix == "":
        img = read_pillow(path)
    else:
        raise ValueError(
            f"{path}: unsupported image format {path.suffix!r}; expected DICOM or one of {PILLOW_SUFFIXES}"
        )
    return _set_channels(img, grey, path)


def _resize_spectrum(k, n, axis):
    """Centred spectrum ``k`` resized to ``n`` bins along ``axis`` (frequency ``f`` sits at index
    ``size // 2 + f``). The common frequencies are copied; an even-size Nyquist bin is folded
    (down-sampling: ``K'(-n/2) = K(-n/2) + K(n/2)``) or split in halves over ``+-m/2``
    (up-sampling), as ``scipy.signal.resample`` does, so real images stay real and up- then
    down-sampling is the identity."""
    k = np.moveaxis(k, axis, -1)
    m = k.shape[-1]
    p = min(m, n)
    out = np.zeros(k.shape[:-1] + (n,), k.dtype)
    out[..., n // 2 - p // 2 : n // 2 + (p + 1) // 2] = k[..., m // 2 - p // 2 : m // 2 + (p + 1) // 2]
    if p % 2 == 0 and n < m:
        out[..., 0] += k[..., m // 2 + n // 2]
    elif p % 2 == 0 and n > m:
        out[..., n // 2 - m // 2] *= 0.5
        out[..., n // 2 + m // 2] = out[..., n // 2 - m // 2]
    return np.moveaxis(out, -1, axis)


def spectral_resample(img, size, axes=(-2, -1)):
    """Resample ``img`` over ``axes`` to ``size`` (int or ``(h, w)``) by cropping / zero-padding its
    centred spectrum (trigonometric interpolation, no interpolation kernel):
    ``ifft2c(P fft2c(x)) * sqrt(h w / (H W))``, with the Nyquist handling of
    :func:`_resize_spectrum`. A constant stays that constant and band-limited content is resampled
    exactly. Real input gives real float32 output; complex input stays complex64.
    Computed with NumPy (double precision) as host-side preparation.
    """
    size = (size, size) if np.isscalar(size) else tuple(int(s) for s in size)
    if len(axes) != 2 or len(size) != 2 or min(size) < 1:
        raise ValueError(f"spectral_resample: expected size (h, w) >= 1 over two axes, got {size}")
    a = np.moveaxis(np.asarray(img), axes, (-2, -1))
    h_in, w_in = a.shape[-2:]
    # host-side data preparation: NumPy's FFT in double precision, same centred convention as fft2c
    ax = (-2, -1)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(a, axes=ax), norm="ortho"), axes=ax)
    k = _resize_spectrum(_resize_spectrum(k, size[0], -2), size[1], -1)
    x = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), norm="ortho"), axes=ax)
    x = x * np.sqrt(size[0] * size[1] / (h_in * w_in))
    x = x.astype(np.complex64) if np.iscomplexobj(img) else x.real.astype(np.float32)
    return np.moveaxis(x, ax, axes)
