"""Orthogonal Daubechies wavelet transforms in JAX (periodic boundary), the PyWavelets layout.

One analysis level along an axis of even length ``N`` with the decomposition low-pass filter ``h``
(length ``L``) and high-pass ``g[j] = (-1)^(j+1) h[L-1-j]`` is

    a[k] = sum_j h[j] x[(2k + L/2 - j) mod N],    d[k] = sum_j g[j] x[(2k + L/2 - j) mod N],

which is ``pywt.dwt(x, wavelet, mode="periodization")``. The level is an orthogonal ``(N, N)`` matrix
(rows of ``a`` stacked over rows of ``d``) applied along the axis as one matrix product: ``O(N)``
work per sample instead of ``O(L)``, but a few large products compile in a fraction of the time of
``L`` shifted copies per level and run fast at the image sizes used here (up to about 1000). Its
inverse is its transpose, so ``||W x|| = ||x||``. A 2-D level filters
along both axes; :func:`wavedec2` returns ``[cA_n, (cH_n, cV_n, cD_n), ..., (cH_1, cV_1, cD_1)]`` like
``pywt.wavedec2`` (``cH``: detail along ``axes[0]``, approximation along ``axes[1]``; ``cV`` the
reverse; ``cD`` detail along both). The coefficient list is a pytree, so ``jax.tree_util.tree_map``
applies elementwise maps (e.g. soft thresholding) to every band. Complex inputs transform their real
and imaginary parts alike (the filters are real).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# Decomposition low-pass filters (PyWavelets' ``Wavelet(name).dec_lo``).
_DEC_LO = {
    "haar": (0.7071067811865476, 0.7071067811865476),
    "db2": (-0.12940952255126037, 0.2241438680420134, 0.8365163037378079, 0.48296291314453416),
    "db4": (
        -0.010597401785069032,
        0.0328830116668852,
        0.030841381835560764,
        -0.18703481171909309,
        -0.027983769416859854,
        0.6308807679298589,
        0.7148465705529157,
        0.2303778133088965,
    ),
}

WAVELETS = tuple(_DEC_LO)


def filters(wavelet: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Decomposition filters ``(dec_lo, dec_hi)`` of ``wavelet`` (one of :data:`WAVELETS`)."""
    if wavelet not in _DEC_LO:
        raise ValueError(f"wavelet: expected one of {WAVELETS}, got {wavelet!r}")
    lo = _DEC_LO[wavelet]
    n = len(lo)
    hi = tuple((-1) ** (j + 1) * lo[n - 1 - j] for j in range(n))
    return lo, hi


def max_level(shape, wavelet: str = "db4", axes=(-2, -1)) -> int:
    """PyWavelets' default depth: ``floor(log2(n / (L - 1)))`` for the shortest transformed axis."""
    n = min(shape[a] for a in axes)
    length = len(filters(wavelet)[0])
    return int(math.floor(math.log2(n / (length - 1)))) if n >= length - 1 else 0


@functools.cache
def _level_matrix(wavelet: str, n: int) -> np.ndarray:
    """The orthogonal ``(n, n)`` matrix of one level on length ``n``: rows ``k`` give ``a[k]``,
    rows ``n/2 + k`` give ``d[k]``."""
    lo, hi = filters(wavelet)
    s = len(lo) // 2
    t = np.zeros((n, n), np.float64)
    for k in range(n // 2):
        for j, (hl, hh) in enumerate(zip(lo, hi)):
            t[k, (2 * k + s - j) % n] += hl
            t[n // 2 + k, (2 * k + s - j) % n] += hh
    return t.astype(np.float32)


def _apply(x, m, axis):
    """``m`` applied along ``axis`` of ``x`` in full float32 precision (complex ``x``: to the
    real and imaginary parts as one real product)."""
    v = jnp.moveaxis(x, axis, -1)
    if jnp.iscomplexobj(v):
        v = jnp.stack([jnp.real(v), jnp.imag(v)])
    v = jnp.matmul(v, m.T, precision=jax.lax.Precision.HIGHEST)
    if jnp.iscomplexobj(x):
        v = jax.lax.complex(v[0], v[1])
    return jnp.moveaxis(v, -1, axis)


def _dwt(x, wavelet, axis):
    """One analysis level along ``axis``: ``(approximation, detail)``, each half as long."""
    n = x.shape[axis]
    return jnp.split(_apply(x, _level_matrix(wavelet, n), axis), 2, axis=axis)


def _idwt(a, d, wavelet, axis):
    """Inverse (= adjoint, the matrix is orthogonal) of :func:`_dwt`."""
    c = jnp.concatenate([a, d], axis=axis)
    return _apply(c, _level_matrix(wavelet, c.shape[axis]).T, axis)


def dwt2(x, wavelet: str = "db4", axes=(-2, -1)):
    """One 2-D level: ``cA, (cH, cV, cD)`` as ``pywt.dwt2(..., mode="periodization")``."""
    lo0, hi0 = _dwt(x, wavelet, axes[0])
    ca, cv = _dwt(lo0, wavelet, axes[1])
    ch, cd = _dwt(hi0, wavelet, axes[1])
    return ca, (ch, cv, cd)


def idwt2(ca, details, wavelet: str = "db4", axes=(-2, -1)):
    """Inverse of :func:`dwt2`."""
    ch, cv, cd = details
    lo0 = _idwt(ca, cv, wavelet, axes[1])
    hi0 = _idwt(ch, cd, wavelet, axes[1])
    return _idwt(lo0, hi0, wavelet, axes[0])


@functools.partial(jax.jit, static_argnames=("wavelet", "level", "axes"))
def wavedec2(x, wavelet: str = "db4", level: int | None = None, axes=(-2, -1)):
    """Orthogonal multilevel 2-D decomposition ``W x`` over ``axes``.

    ``level=None`` uses :func:`max_level`. Both transformed sizes must be divisible by ``2**level``.
    """
    x = jnp.asarray(x)
    axes = tuple(a % x.ndim for a in axes)
    level = max_level(x.shape, wavelet, axes) if level is None else level
    for a in axes:
        if level < 0 or x.shape[a] % (2**level):
            raise ValueError(
                f"wavedec2: axis {a} of size {x.shape[a]} must be divisible by 2**level = "
                f"2**{level} (level >= 0); pad the image or lower the level"
            )
    details = []
    for _ in range(level):
        x, det = dwt2(x, wavelet, axes)
        details.append(det)
    return [x] + details[::-1]


@functools.partial(jax.jit, static_argnames=("wavelet", "axes"))
def waverec2(coeffs, wavelet: str = "db4", axes=(-2, -1)):
    """Inverse (= adjoint) of :func:`wavedec2`: ``W^H c``."""
    x = coeffs[0]
    axes = tuple(a % x.ndim for a in axes)
    for det in coeffs[1:]:
        x = idwt2(x, det, wavelet, axes)
    return x
