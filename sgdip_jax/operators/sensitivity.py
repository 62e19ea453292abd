"""Coil sensitivity maps from the fully sampled centre of multi-coil k-space.

``espirit`` follows Uecker et al., "ESPIRiT - an eigenvalue approach to autocalibrating parallel MRI:
where SENSE meets GRAPPA", MRM 71:990-1001 (2014), with SigPy's ``EspiritCalib`` parameters and
conventions (the same maps to float32 precision for the same number of power iterations):

1. Calibration region: the centred ``calib_width x calib_width`` block of the k-space ``(C, H, W)``
   (rows ``H//2 - calib_width//2 ...``, likewise for columns).
2. Calibration matrix: every ``k x k`` patch (``k = kernel_size``) of all coils is a row of length
   ``C k^2``; its SVD ``U S V^H``. The rows ``v_n`` of ``V^H`` whose singular value exceeds
   ``thresh * max(S)`` span the signal subspace; each is a kernel ``v_n[c, u]``.
3. Image-domain operator: with ``g_n(x) = IFFT(zero-padded v_n)(x)`` (centred, orthonormal), the
   per-pixel Hermitian ``C x C`` matrix is ``G(x) = (H W / k^2) sum_n g_n(x) g_n(x)^H``. Its entries
   are trigonometric polynomials of degree ``k - 1``,
   ``G_cd(x) = k^-2 sum_D Q_cd(D) exp(2 pi i D . x)``, ``Q_cd(D) = sum_n sum_u v_n[c,u] conj(v_n[d,u-D])``,
   so they are evaluated exactly from the ``(2k-1)^2`` coefficients ``Q`` with separable DFTs, one
   image tile at a time, without forming ``C^2`` full-size FFTs.
4. Per pixel, ``max_iter`` power iterations ``x <- G x / ||G x||`` from ``x = 1`` give the leading
   eigenvector (the maps) and eigenvalue ``lambda = ||G x||``.
5. Maps are multiplied by ``conj(x_0) / |x_0|`` (phase relative to the first coil) and set to zero
   where ``lambda <= crop``.

``lowres_maps`` is the cheap alternative: the coil images of the Hann-windowed central
``calib_width x calib_width`` k-space block, divided by their root-sum-of-squares (and given the first
coil's phase as reference, like ESPIRiT).
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .fft import ifft2c

__all__ = ["espirit", "lowres_maps"]

# Elements of the per-pixel matrices held at once (sets the image tile per step).
_BLOCK_ELEMENTS = 1 << 18


def _centre_crop(x, size):
    """The centred ``size x size`` block of the last two axes (start ``n//2 - size//2``)."""
    h, w = x.shape[-2:]
    top, left = h // 2 - size // 2, w // 2 - size // 2
    return x[..., top : top + size, left : left + size]


def _calibration_kernels(calib, kernel_size, thresh):
    """Rows of ``V^H`` of the calibration matrix as kernels ``(K, C, k, k)``, and 0/1 weights
    ``(K,)`` keeping those with singular value ``> thresh * max``."""
    coils, n, _ = calib.shape
    m = n - kernel_size + 1
    idx = np.arange(m)[:, None] + np.arange(kernel_size)[None, :]
    patches = calib[:, idx[:, None, :, None], idx[None, :, None, :]]  # (C, m, m, k, k)
    mat = jnp.transpose(patches, (1, 2, 0, 3, 4)).reshape(m * m, coils * kernel_size**2)
    _, s, vh = jnp.linalg.svd(mat, full_matrices=False)
    keep = (s > thresh * s.max()).astype(jnp.float32)
    return vh.reshape(-1, coils, kernel_size, kernel_size), keep


def _kernel_correlation(kernels, keep):
    """``Q_cd(D) = sum_n keep_n sum_u v_n[c, u] conj(v_n[d, u - D])`` as ``(C, C, 2k-1, 2k-1)``
    with ``D = 0`` at index ``k - 1`` (circular correlation on a ``2k-1`` grid, which is exact)."""
    size = 2 * kernels.shape[-1] - 1
    spec = jnp.fft.fft2(kernels, s=(size, size))
    q = jnp.einsum("n,ncab,ndab->cdab", keep.astype(spec.dtype), spec, jnp.conj(spec))
    return jnp.fft.fftshift(jnp.fft.ifft2(q), axes=(-2, -1))


def _fourier_matrix(n, kernel_size):
    """``E[i, a] = exp(2 pi i D_a (i - n//2) / n)`` for ``D_a = -(k-1) ... k-1``."""
    shifts = np.arange(-(kernel_size - 1), kernel_size)
    pos = (np.arange(n) - n // 2) / n
    return jnp.asarray(np.exp(2j * np.pi * pos[:, None] * shifts[None, :]), jnp.complex64)


def _relative_to_first_coil(maps):
    """``maps * conj(m_0) / |m_0|`` over the coil axis ``-3`` (unchanged where ``m_0 = 0``)."""
    ref = maps[..., :1, :, :]
    mag = jnp.abs(ref)
    return maps * jnp.where(mag > 0, jnp.conj(ref) / jnp.where(mag > 0, mag, 1), 1)


def _power_iteration(g, max_iter):
    """Leading eigenvector ``(C, P)`` and eigenvalue ``(P,)`` of each Hermitian positive
    semi-definite ``g[:, :, p]`` after ``max_iter`` power iterations from ones.

    The product ``G x`` is unrolled over the coil axis so XLA compiles it to one elementwise loop
    over pixels (a reduction over a middle axis, or a batched ``dot``, is slower on CPU).
    """
    coils, _, pixels = g.shape

    def step(_, state):
        x, _ = state
        y = sum(g[:, d] * x[d] for d in range(coils))
        lam = jnp.sqrt(jnp.sum(jnp.real(y) ** 2 + jnp.imag(y) ** 2, axis=0))
        return y / jnp.maximum(lam, jnp.finfo(jnp.float32).tiny), lam

    init = (jnp.full((coils, pixels), coils**-0.5, g.dtype), jnp.zeros((pixels,), jnp.float32))
    return jax.lax.fori_loop(0, max_iter, step, init)


def _tiled_fourier_matrix(n, kernel_size, tile):
    """:func:`_fourier_matrix` zero-padded to whole tiles: ``(n_tiles, tile, 2k-1)``."""
    e = _fourier_matrix(n, kernel_size)
    tiles = -(-n // tile)
    return jnp.pad(e, ((0, tiles * tile - n), (0, 0))).reshape(tiles, tile, -1)


def _espirit_slice(kspace, thresh, crop, max_iter, calib_width, kernel_size):
    """ESPIRiT maps ``(C, H, W)`` and eigenvalues ``(H, W)`` of one k-space slice ``(C, H, W)``."""
    coils, height, width = kspace.shape
    kernels, keep = _calibration_kernels(_centre_crop(kspace, calib_width), kernel_size, thresh)
    q = _kernel_correlation(kernels, keep) / kernel_size**2
    # Square image tiles of about _BLOCK_ELEMENTS / C^2 pixels, one at a time: the matrices of a
    # tile stay in cache through all power iterations. Padding pixels get G = 0 and are cut off.
    side = max(1, math.isqrt(_BLOCK_ELEMENTS // coils**2))
    tile_h, tile_w = min(side, height), min(side, width)
    e_rows = _tiled_fourier_matrix(height, kernel_size, tile_h)  # (nh, th, 2k-1)
    e_cols = _tiled_fourier_matrix(width, kernel_size, tile_w)  # (nw, tw, 2k-1)
    n_h, n_w = e_rows.shape[0], e_cols.shape[0]
    cols = jnp.einsum("cdab,jwb->jacdw", q, e_cols)  # DFT over columns, once: (nw, 2k-1, C, C, tw)

    def tile(t):
        g = jnp.einsum("ra,acdw->cdrw", e_rows[t // n_w], cols[t % n_w])
        x, lam = _power_iteration(g.reshape(coils, coils, tile_h * tile_w), max_iter)
        return x.reshape(coils, tile_h, tile_w), lam.reshape(tile_h, tile_w)

    maps, lam = jax.lax.map(tile, jnp.arange(n_h * n_w))
    maps = maps.reshape(n_h, n_w, coils, tile_h, tile_w).transpose(2, 0, 3, 1, 4)
    maps = maps.reshape(coils, n_h * tile_h, n_w * tile_w)[:, :height, :width]
    lam = lam.reshape(n_h, n_w, tile_h, tile_w).transpose(0, 2, 1, 3)
    lam = lam.reshape(n_h * tile_h, n_w * tile_w)[:height, :width]
    return _relative_to_first_coil(maps) * (lam > crop), lam


@partial(jax.jit, static_argnames=("calib_width", "kernel_size"))
def _espirit(kspace, thresh, crop, max_iter, calib_width, kernel_size):
    """One slice ``(C, H, W)``, or a batch ``(B, C, H, W)`` mapped with ``vmap``."""
    fn = partial(_espirit_slice, calib_width=calib_width, kernel_size=kernel_size)
    if kspace.ndim == 4:
        fn = jax.vmap(fn, in_axes=(0, None, None, None))
    return fn(kspace, thresh, crop, max_iter)


@partial(jax.jit, static_argnames=("calib_width",))
def _calibration_stats(kspace, calib_width):
    """Whether ``kspace`` is finite, and the largest number over slices of all-zero (in every coil)
    columns and rows in the centred calibration block."""
    energy = jnp.sum(jnp.abs(_centre_crop(kspace, calib_width)) ** 2, axis=-3)
    empty = energy.reshape(-1, calib_width, calib_width) == 0
    cols, rows = jnp.all(empty, axis=1).sum(axis=-1), jnp.all(empty, axis=2).sum(axis=-1)
    return jnp.isfinite(kspace).all(), cols.max(), rows.max()


def _check_kspace(kspace, calib_width):
    """Validate ``(C, H, W)`` or ``(B, C, H, W)`` k-space with a fully sampled calibration block."""
    if kspace.ndim not in (3, 4):
        raise ValueError(f"kspace: expected shape (C, H, W) or (B, C, H, W), got {tuple(kspace.shape)}")
    height, width = kspace.shape[-2:]
    if int(calib_width) != calib_width or not 1 <= calib_width <= min(height, width):
        raise ValueError(
            f"calib_width: expected an integer from 1 to {min(height, width)} for kspace of shape "
            f"{tuple(kspace.shape)}, got {calib_width}"
        )
    if isinstance(kspace, jax.core.Tracer):
        return
    finite, empty_cols, empty_rows = (int(v) for v in _calibration_stats(kspace, int(calib_width)))
    if not finite:
        raise ValueError("kspace: contains NaN or Inf values")
    if empty_cols or empty_rows:
        raise ValueError(
            f"kspace: the central {calib_width}x{calib_width} calibration block has {empty_cols} "
            f"unsampled columns and {empty_rows} unsampled rows; use a calib_width no larger than "
            f"the fully sampled centre"
        )


def espirit(
    kspace,
    calib_width=24,
    kernel_size=6,
    thresh=0.02,
    crop=0.95,
    max_iter=30,
    return_eigenvalues=False,
):
    """ESPIRiT coil maps from multi-coil k-space ``(C, H, W)`` or a batch of slices ``(B, C, H, W)``.

    Args:
      kspace: complex k-space (zeros where not sampled) whose centred ``calib_width`` square is
        fully sampled.
      calib_width: side of the calibration block.
      kernel_size: side ``k`` of the k-space kernels (patches); ``2k - 1 <= min(H, W)``.
      thresh: keep singular vectors with singular value ``> thresh * max``.
      crop: zero the maps where the leading eigenvalue is ``<= crop`` (0 keeps everything).
      max_iter: power iterations per pixel. 30 (SigPy uses 100) reach float32 precision wherever
        the leading eigenvalue is well separated from the next, as inside the imaged object; pixels
        with nearly equal leading eigenvalues (noise-only background) converge slowly and need
        ``max_iter=100`` to reproduce SigPy there.
      return_eigenvalues: also return the eigenvalue map ``(H, W)`` (or ``(B, H, W)``).

    Returns:
      complex64 maps of the k-space's shape, unit norm over coils inside the crop, phase relative to
      the first coil; with ``return_eigenvalues``, ``(maps, eigenvalues)``.
    """
    kspace = jnp.asarray(kspace, jnp.complex64)
    _check_kspace(kspace, calib_width)
    if not 1 <= kernel_size <= calib_width or 2 * kernel_size - 1 > min(kspace.shape[-2:]):
        raise ValueError(
            f"kernel_size: expected 1 to {calib_width} (calib_width) with 2*kernel_size-1 <= "
            f"{min(kspace.shape[-2:])}, got {kernel_size}"
        )
    if not 0.0 <= thresh < 1.0:
        raise ValueError(f"thresh: expected a number in [0, 1), got {thresh}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter: expected a positive integer, got {max_iter}")
    maps, lam = _espirit(
        kspace,
        float(thresh),
        float(crop),
        int(max_iter),
        calib_width=int(calib_width),
        kernel_size=int(kernel_size),
    )
    return (maps, lam) if return_eigenvalues else maps


@partial(jax.jit, static_argnames=("calib_width",))
def _lowres(kspace, calib_width):
    height, width = kspace.shape[-2:]
    window = jnp.asarray(np.hanning(calib_width + 2)[1:-1], jnp.float32)
    top, left = height // 2 - calib_width // 2, width // 2 - calib_width // 2
    low = (
        jnp.zeros_like(kspace)
        .at[..., top : top + calib_width, left : left + calib_width]
        .set(_centre_crop(kspace, calib_width) * window[:, None] * window[None, :])
    )
    images = ifft2c(low)
    rss = jnp.sqrt(jnp.sum(jnp.abs(images) ** 2, axis=-3, keepdims=True))
    maps = images / jnp.maximum(rss, jnp.finfo(jnp.float32).tiny)
    return _relative_to_first_coil(maps)


def lowres_maps(kspace, calib_width=24):
    """Quick coil maps: low-resolution coil images divided by their root-sum-of-squares.

    The centred ``calib_width`` square of k-space ``(C, H, W)`` or ``(B, C, H, W)``, weighted by a
    separable Hann window (against Gibbs ringing) and zero-filled, is transformed to coil images
    ``I_c``; the maps are ``I_c / sqrt(sum_c |I_c|^2)`` times ``conj(I_0) / |I_0|``. Unit norm over
    coils at every pixel (no background crop).
    """
    kspace = jnp.asarray(kspace, jnp.complex64)
    _check_kspace(kspace, calib_width)
    return _lowres(kspace, int(calib_width))
