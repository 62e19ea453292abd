"""Image quality metrics in JAX: PSNR, SSIM, NRMSE, HFEN, with the fastMRI conventions.

All metrics compare a reconstruction ``x`` with a reference ``ref`` of the same shape, given by
keyword (``psnr(x, ref=gt)``: fastMRI and scikit-image put the reference first, so a positional
order would be a trap): grey
``(H, W)`` or channels-last colour ``(H, W, C)``. Complex inputs are compared as magnitudes
``|x|``; real inputs are used as given. Batches: ``jax.vmap``.

Conventions (fastMRI ``evaluate.py``; scikit-image ``skimage.metrics``):

* ``crop`` (int or ``(h, w)``): both images are first centre-cropped over ``H, W`` (fastMRI's
  ``center_crop``, e.g. 320 for knee data).
* ``data_range`` defaults to ``max(ref)`` of the (cropped) reference magnitude, over the whole image.
* ``support`` (bool ``(H, W)`` or the image's shape, before cropping): the averages run over the
  support only (for SSIM: over the valid SSIM-map pixels inside the support).

``PSNR = 10 log10(data_range^2 / mean((x - ref)^2))``.
``SSIM``: scikit-image's ``structural_similarity`` (7x7 uniform window, sample covariances
normalised by ``N - 1``, ``K1 = 0.01``, ``K2 = 0.03``, ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``, mean of
``(2 mu_x mu_r + C1)(2 s_xr + C2) / ((mu_x^2 + mu_r^2 + C1)(s_x^2 + s_r^2 + C2))`` over the pixels
whose window lies inside the image; colour: the mean over channels). Window statistics are computed
about the window mean, so float32 keeps skimage's float64 accuracy.
``NMSE = ||x - ref||^2 / ||ref||^2`` (fastMRI's ``nmse``).
``NRMSE = ||x - ref|| / ||ref||`` (skimage's ``normalized_root_mse``, Euclidean normalisation).
``HFEN = ||LoG(x) - LoG(ref)|| / ||LoG(ref)||`` with the 15x15 Laplacian-of-Gaussian of
``sigma = 1.5`` (MATLAB ``fspecial('log', 15, 1.5)``, zero-padded ``same`` filtering), as in
Ravishankar & Bresler, IEEE TMI 30(5), 2011.

An all-zero reference gives a zero data range (PSNR ``-inf``, SSIM NaN).

``missing_kspace_recovered`` compares complex images in k-space instead (no magnitudes):
``1 - ||(1 - M) B (F x - F ref)|| / ||(1 - M) B F ref||`` with ``F = fft2c``, ``M`` the sampling mask
and ``B`` an optional band (e.g. a radial ring): the share of the missing k-space of ``ref`` that
``x`` recovers (0 for the zero-filled image ``F^H M F ref``, 1 for ``ref``, negative when ``x`` puts
more error there than zero-filling).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .operators.fft import fft2c

SSIM_WIN = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03
HFEN_SIGMA = 1.5
HFEN_SIZE = 15


def center_crop(x, shape, axes=(-2, -1)):
    """Centre crop of ``x`` to ``shape`` (int or ``(h, w)``) over ``axes``, as fastMRI crops.

    The window starts at ``(n - h) // 2`` along each axis (fastMRI's ``center_crop``). Works on
    NumPy and JAX arrays.
    """
    shape = (shape, shape) if np.isscalar(shape) else tuple(shape)
    if len(shape) != len(axes):
        raise ValueError(f"center_crop: expected {len(axes)} sizes for axes {axes}, got {shape}")
    index = [slice(None)] * x.ndim
    for size, axis in zip(shape, axes):
        n = x.shape[axis]
        if not 0 < size <= n:
            raise ValueError(
                f"center_crop: crop size {shape} does not fit the array shape {tuple(x.shape)} (axes {axes})"
            )
        start = (n - size) // 2
        index[axis] = slice(start, start + size)
    return x[tuple(index)]


def _prepare(x, ref, crop, support, data_range=None):
    """Magnitudes (if complex), shape checks, centre crop, support broadcast to the image shape;
    ``(x, ref, support, data_range)`` in units of ``max(ref)`` (the metrics are ratios, so this
    changes no value, and float32 neither overflows nor underflows at any units of the images)."""
    x, ref = jnp.asarray(x), jnp.asarray(ref)
    if x.shape != ref.shape:
        raise ValueError(f"metrics: x has shape {x.shape} but ref has shape {ref.shape}")
    if x.ndim not in (2, 3):
        raise ValueError(f"metrics: expected images (H, W) or (H, W, C), got shape {x.shape}")
    x = jnp.abs(x) if jnp.iscomplexobj(x) else x.astype(jnp.float32)
    ref = jnp.abs(ref) if jnp.iscomplexobj(ref) else ref.astype(jnp.float32)
    if support is not None:
        support = jnp.asarray(support, bool)
        if support.shape not in (x.shape, x.shape[:2]):
            raise ValueError(f"metrics: support must have shape {x.shape[:2]} or {x.shape}, got {support.shape}")
        support = jnp.broadcast_to(support.reshape(support.shape + (1,) * (x.ndim - support.ndim)), x.shape)
    if crop is not None:
        x, ref = center_crop(x, crop, axes=(0, 1)), center_crop(ref, crop, axes=(0, 1))
        support = None if support is None else center_crop(support, crop, axes=(0, 1))
    peak = jnp.max(ref)
    unit = jnp.where(peak > 0, peak, 1.0)
    data_range = peak if data_range is None else jnp.asarray(data_range, jnp.float32)
    return x / unit, ref / unit, support, data_range / unit


def _mean(a, support):
    return jnp.mean(a) if support is None else jnp.sum(jnp.where(support, a, 0)) / jnp.sum(support)


@partial(jax.jit, static_argnames="crop")
def psnr(x, *, ref, data_range=None, crop=None, support=None):
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``."""
    x, ref, support, data_range = _prepare(x, ref, crop, support, data_range)
    mse = _mean((x - ref) ** 2, support)
    return 10.0 * jnp.log10(data_range**2 / mse)


@partial(jax.jit, static_argnames="crop")
def nmse(x, *, ref, crop=None, support=None):
    """Normalised mean squared error ``||x - ref||^2 / ||ref||^2`` (fastMRI's ``nmse``)."""
    x, ref, support, _ = _prepare(x, ref, crop, support)
    return _mean((x - ref) ** 2, support) / _mean(ref**2, support)


@partial(jax.jit, static_argnames="crop")
def nrmse(x, *, ref, crop=None, support=None):
    """Normalised root-mean-square error ``||x - ref|| / ||ref||``."""
    x, ref, support, _ = _prepare(x, ref, crop, support)
    return jnp.sqrt(_mean((x - ref) ** 2, support) / _mean(ref**2, support))


def _windows(a, win):
    """The ``win x win`` shifted views whose elementwise stack is every valid window of ``a``."""
    h, w = a.shape[0] - win + 1, a.shape[1] - win + 1
    return [a[i : i + h, j : j + w] for i in range(win) for j in range(win)]


def ssim_map(x, ref, data_range):
    """SSIM map over the valid region (``H - 6, W - 6[, C]``) of two real images, skimage's formula."""
    win = SSIM_WIN
    if min(x.shape[:2]) < win:
        raise ValueError(f"ssim: images must be at least {win}x{win}, got shape {x.shape}")
    n = win * win
    wx, wr = _windows(x, win), _windows(ref, win)
    mx, mr = sum(wx) / n, sum(wr) / n
    dx, dr = [a - mx for a in wx], [b - mr for b in wr]
    vx = sum(a * a for a in dx) / (n - 1)
    vr = sum(b * b for b in dr) / (n - 1)
    vxr = sum(a * b for a, b in zip(dx, dr)) / (n - 1)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return ((2 * mx * mr + c1) * (2 * vxr + c2)) / ((mx**2 + mr**2 + c1) * (vx + vr + c2))


@partial(jax.jit, static_argnames="crop")
def ssim(x, *, ref, data_range=None, crop=None, support=None):
    """Structural similarity as scikit-image computes it (see the module docstring)."""
    x, ref, support, data_range = _prepare(x, ref, crop, support, data_range)
    s = ssim_map(x, ref, data_range)
    pad = SSIM_WIN // 2
    valid = None if support is None else support[pad : support.shape[0] - pad, pad : support.shape[1] - pad]
    return _mean(s, valid)


def log_kernel(size=HFEN_SIZE, sigma=HFEN_SIGMA):
    """Zero-sum Laplacian-of-Gaussian kernel ``(size, size)``, as MATLAB's ``fspecial('log')``.

    ``g = exp(-r^2 / 2 sigma^2) / sum(...)``, ``h = g (r^2 - 2 sigma^2) / sigma^4``, minus its mean.
    """
    t = np.arange(size, dtype=np.float64) - (size - 1) / 2
    r2 = t[:, None] ** 2 + t[None, :] ** 2
    g = np.exp(-r2 / (2 * sigma**2))
    h = g / g.sum() * (r2 - 2 * sigma**2) / sigma**4
    return (h - h.mean()).astype(np.float32)


def _log_filter(a):
    """LoG-filter each channel of ``(H, W)`` or ``(H, W, C)``, zero-padded, output the same size."""
    planes = a[None] if a.ndim == 2 else jnp.moveaxis(a, -1, 0)
    out = jax.lax.conv_general_dilated(
        planes[:, None],
        jnp.asarray(log_kernel())[None, None],
        window_strides=(1, 1),
        padding="SAME",
        precision=jax.lax.Precision.HIGHEST,
    )[:, 0]
    return out[0] if a.ndim == 2 else jnp.moveaxis(out, 0, -1)


@partial(jax.jit, static_argnames="crop")
def hfen(x, *, ref, crop=None, support=None):
    """High-frequency error norm ``||LoG(x - ref)|| / ||LoG(ref)||`` (sigma 1.5, 15x15)."""
    x, ref, support, _ = _prepare(x, ref, crop, support)
    return jnp.sqrt(_mean(_log_filter(x - ref) ** 2, support) / _mean(_log_filter(ref) ** 2, support))


def evaluate(x, *, ref, crop=None, support=None, data_range=None) -> dict[str, float]:
    """All metrics as Python floats: ``{"psnr", "ssim", "nmse", "nrmse", "hfen"}``; SSIM is NaN (``null`` in
    JSON) for images smaller than its window."""
    shape = np.shape(ref)[:2] if crop is None else [min(c, n) for c, n in zip(crop, np.shape(ref)[:2])]
    small = min(shape) < SSIM_WIN
    return {
        "psnr": float(psnr(x, ref=ref, data_range=data_range, crop=crop, support=support)),
        "ssim": float("nan") if small else float(ssim(x, ref=ref, data_range=data_range, crop=crop, support=support)),
        "nmse": float(nmse(x, ref=ref, crop=crop, support=support)),
        "nrmse": float(nrmse(x, ref=ref, crop=crop, support=support)),
        "hfen": float(hfen(x, ref=ref, crop=crop, support=support)),
    }


def missing_kspace_recovered(x, ref, mask, band=None):
    """``1 - ||(1 - M) B (F x - F ref)|| / ||(1 - M) B F ref||`` over the last two axes (``(..., H, W)``
    complex or real images; ``mask`` and ``band`` broadcast to ``(H, W)``, ``band`` boolean)."""
    x, ref = jnp.asarray(x), jnp.asarray(ref)
    if x.shape[-2:] != ref.shape[-2:]:
        raise ValueError(f"x: expected images of shape {ref.shape[-2:]}, got {x.shape[-2:]}")
    missing = 1.0 - jnp.asarray(mask, jnp.float32)
    if band is not None:
        missing = missing * jnp.asarray(band, jnp.float32)
    k_ref = fft2c(ref.astype(jnp.complex64))
    error = jnp.linalg.norm(((fft2c(x.astype(jnp.complex64)) - k_ref) * missing).reshape(*x.shape[:-2], -1), axis=-1)
    return 1.0 - error / jnp.linalg.norm((k_ref * missing).reshape(*ref.shape[:-2], -1), axis=-1)
