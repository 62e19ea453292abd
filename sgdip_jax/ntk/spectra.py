"""Spectra of NTKs without forming them, and the kernel in the Fourier basis.

Top-k eigenpairs of a symmetric positive semi-definite operator given only by ``matvec`` (e.g.
``K v`` from :func:`sgdip_jax.ntk.ntk_vp_fn`, or ``A K A^T v`` from :func:`sandwich`):

* :func:`lanczos_eigh`: ``m`` Lanczos steps with full re-orthogonalisation (two Gram-Schmidt passes
  against every stored vector), Ritz pairs of the ``m x m`` tridiagonal matrix.
  Memory: the basis, ``(m + 1) n`` floats (``n = 2 * 128 * 128`` outputs and ``m = 64``: 8.5 MB in
  float32), plus what one ``matvec`` needs (one forward + one backward pass of the network). The dense
  kernel would take ``4 n^2`` bytes (4.3 GB at 128 x 128 x 2) and its Jacobian ``4 n P`` bytes.
* :func:`randomized_eigh`: randomized subspace iteration (Halko, Martinsson & Tropp 2011) with
  ``k + oversample`` vectors per block product, for hardware that prefers batched products.

Fourier basis: for a real network output ``(H, W, C)`` with ``C = 2`` (real, imag) or ``C = 1`` (real),
``F_r`` maps it to the real and imaginary parts of ``fft2c`` of the complex image, ``(H, W, 2)``.
``F_r`` is orthogonal for ``C = 2``, and ``K_hat = F_r K F_r^T`` is the kernel acting on k-space.
A k-space location ``k`` owns the two real indices ``2k, 2k + 1``; for a sampled set ``Omega``, the
unsampled frequencies move during training only through ``K_hat[Omega^c, Omega]``, measured by
:func:`coupling` from the dense ``K_hat``, or by :func:`coupling_vp` from kernel-vector products
(``K_hat[:, Omega] G = F_r K F_r^T G`` for probe columns ``G`` supported on ``Omega``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..operators.fft import fft2c, ifft2c

__all__ = [
    "lanczos_eigh",
    "randomized_eigh",
    "sandwich",
    "fourier_real",
    "fourier_real_t",
    "fourier_kernel",
    "coupling",
    "coupling_vp",
]


def _start_vector(key, n, dtype):
    v = jax.random.normal(key, (n,), dtype)
    return v / jnp.linalg.norm(v)


def lanczos_eigh(
    matvec: Callable, n: int, k: int, num_iter: int | None = None, key=None, dtype=jnp.float32
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Top-``k`` eigenpairs ``(w (k,), V (n, k))`` of a symmetric PSD operator, ``w`` descending.

    ``num_iter`` Lanczos steps (default ``min(n, max(2k + 20, 3k))``). On breakdown (an invariant
    subspace is found) the recursion restarts from a fresh random vector orthogonal to the basis.
    """
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1 <= k <= n = {n}, got {k}")
    m = min(n, max(2 * k + 20, 3 * k)) if num_iter is None else int(num_iter)
    if not k <= m <= n:
        raise ValueError(f"num_iter: expected k <= num_iter <= n ({k} .. {n}), got {m}")
    key = jax.random.PRNGKey(0) if key is None else key
    key, sub = jax.random.split(key)
    basis = jnp.zeros((m + 1, n), dtype).at[0].set(_start_vector(sub, n, dtype))
    tol = jnp.finfo(dtype).eps * 100

    def orthogonalise(w, basis, j):
        live = (jnp.arange(m + 1) <= j)[:, None]
        for _ in range(2):
            w = w - (live * basis).T @ ((live * basis) @ w)
        return w

    def step(j, carry):
        basis, alpha, beta, key = carry
        q = basis[j]
        w = matvec(q).astype(dtype)
        a = jnp.vdot(q, w)
        w = orthogonalise(w, basis, j)
        b = jnp.linalg.norm(w)
        key, sub = jax.random.split(key)
        fresh = orthogonalise(_start_vector(sub, n, dtype), basis, j)
        broke = b <= tol * jnp.maximum(jnp.abs(alpha).max(), jnp.abs(a))
        nxt = jnp.where(broke, fresh / jnp.linalg.norm(fresh), w / jnp.where(broke, 1.0, b))
        return basis.at[j + 1].set(nxt), alpha.at[j].set(a), beta.at[j].set(jnp.where(broke, 0.0, b)), key

    init = (basis, jnp.zeros((m,), dtype), jnp.zeros((m,), dtype), key)
    basis, alpha, beta, _ = jax.lax.fori_loop(0, m, step, init)
    tri = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    theta, s = jnp.linalg.eigh(tri)
    order = jnp.argsort(-theta)[:k]
    return theta[order], basis[:m].T @ s[:, order]


def randomized_eigh(
    matvec: Callable, n: int, k: int, oversample: int = 10, power_iters: int = 2, key=None, dtype=jnp.float32
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Top-``k`` eigenpairs of a symmetric PSD operator by randomized subspace iteration.

    ``matvec`` acts on one vector and is ``vmap``-ed over blocks of ``k + oversample`` vectors;
    ``power_iters`` extra block products sharpen the subspace. Memory ``O(n (k + oversample))``.
    """
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1 <= k <= n = {n}, got {k}")
    size = min(n, k + oversample)
    key = jax.random.PRNGKey(0) if key is None else key
    block = jax.vmap(lambda v: matvec(v).astype(dtype), in_axes=1, out_axes=1)
    q, _ = jnp.linalg.qr(block(jax.random.normal(key, (n, size), dtype)))
    for _ in range(power_iters):
        q, _ = jnp.linalg.qr(block(q))
    b = q.T @ block(q)
    theta, s = jnp.linalg.eigh((b + b.T) / 2)
    order = jnp.argsort(-theta)[:k]
    return theta[order], q @ s[:, order]


def sandwich(kernel_vp: Callable, A) -> Callable:
    """``v -> A K A^T v`` from ``kernel_vp(u) = K u`` and a :class:`~sgdip_jax.ntk.kernel_regime.LinearMap` ``A``."""
    return lambda v: A.matvec(kernel_vp(A.rmatvec(v)))


def fourier_real(v: jnp.ndarray, image_hw: tuple[int, int], channels: int) -> jnp.ndarray:
    """``F_r``: flat real outputs ``(..., H W C)`` -> flat real k-space ``(..., H W 2)`` ([Re, Im] of
    ``fft2c`` of the complex image; ``C = 2`` reads (real, imag), ``C = 1`` a real image)."""
    if channels not in (1, 2):
        raise ValueError(f"channels: expected 1 (real) or 2 (real, imag), got {channels}")
    h, w = image_hw
    x = v.reshape(v.shape[:-1] + (h, w, channels))
    z = x[..., 0] + 1j * x[..., 1] if channels == 2 else x[..., 0].astype(jnp.complex64)
    k = fft2c(z)
    return jnp.stack([k.real, k.imag], axis=-1).reshape(v.shape[:-1] + (h * w * 2,))


def fourier_real_t(k: jnp.ndarray, image_hw: tuple[int, int], channels: int) -> jnp.ndarray:
    """``F_r^T``: flat real k-space ``(..., H W 2)`` -> flat real outputs ``(..., H W C)``, the real
    (and, for ``C = 2``, imaginary) part of ``ifft2c``; ``F_r^T = F_r^{-1}`` for ``C = 2``."""
    if channels not in (1, 2):
        raise ValueError(f"channels: expected 1 (real) or 2 (real, imag), got {channels}")
    h, w = image_hw
    t = k.reshape(k.shape[:-1] + (h, w, 2))
    x = ifft2c(t[..., 0] + 1j * t[..., 1])
    parts = [x.real, x.imag] if channels == 2 else [x.real]
    return jnp.stack(parts, axis=-1).reshape(k.shape[:-1] + (h * w * channels,))


def fourier_kernel(K, image_hw: tuple[int, int], channels: int = 2) -> jnp.ndarray:
    """``K_hat = F_r K F_r^T`` of shape ``(2 H W, 2 H W)``, rows/columns ordered (k-space location, Re/Im)."""
    K = jnp.asarray(K, jnp.float32)
    h, w = image_hw
    if K.shape != (h * w * channels,) * 2:
        expected = (h * w * channels,) * 2
        raise ValueError(f"K: expected shape {expected} for image {image_hw} x {channels} channels, got {K.shape}")
    half = fourier_real(K, image_hw, channels)  # K F_r^T (rows transformed)
    return fourier_real(half.T, image_hw, channels).T


def coupling(K_hat, mask) -> float:
    """``||K_hat[Omega^c, Omega]||_F / ||K_hat[Omega, Omega]||_F`` for the sampled set ``Omega = {mask > 0}``."""
    mask = np.asarray(mask).reshape(-1) > 0
    if mask.all() or not mask.any():
        raise ValueError("mask: coupling needs both sampled and unsampled k-space locations")
    real = np.repeat(mask, 2)
    K_hat = jnp.asarray(K_hat)
    sampled, unsampled = np.flatnonzero(real), np.flatnonzero(~real)
    off = jnp.linalg.norm(K_hat[np.ix_(unsampled, sampled)])
    on = jnp.linalg.norm(K_hat[np.ix_(sampled, sampled)])
    return float(off / on)


def coupling_vp(
    kernel_vp: Callable,
    mask,
    image_hw: tuple[int, int],
    channels: int = 2,
    probes: int | None = None,
    key=None,
    block_size: int = 64,
) -> float:
    """:func:`coupling` without the kernel, from ``kernel_vp(v) = K v`` (flat outputs, e.g.
    :func:`~sgdip_jax.ntk.ntk_vp_fn`).

    The columns ``K_hat[:, Omega] G = F_r K F_r^T G`` of probe vectors ``G`` supported on the sampled
    real indices give both norms at once: ``||K_hat[Omega^c, Omega] G||_F^2`` and
    ``||K_hat[Omega, Omega] G||_F^2``. ``probes=None``: ``G = I`` (exact, one product per sampled real
    index); ``probes = p``: ``p`` Gaussian columns, for which ``E ||B g||^2 = ||B||_F^2`` (Hutchinson),
    so the ratio of the two sums converges to the coupling (relative error about ``1 / sqrt(p)``).
    Products run ``block_size`` at a time (``jax.vmap`` of ``kernel_vp``).
    """
    sampled = np.repeat(np.asarray(mask).reshape(-1) > 0, 2)
    if sampled.all() or not sampled.any():
        raise ValueError("mask: coupling needs both sampled and unsampled k-space locations")
    if sampled.size != 2 * image_hw[0] * image_hw[1]:
        raise ValueError(f"mask: expected {image_hw[0] * image_hw[1]} k-space locations, got {sampled.size // 2}")
    index = np.flatnonzero(sampled)
    count = index.size if probes is None else probes
    if count < 1:
        raise ValueError(f"probes: expected a positive count or None (exact), got {probes}")
    key = jax.random.PRNGKey(0) if key is None else key

    # (b, |Omega|) probe coefficients -> (b, 2 H W) columns of K_hat; the kernel-vector product is
    # batched outside the compiled Fourier maps, so the network's parameters are not folded in as constants.
    to_outputs = jax.jit(
        lambda g: fourier_real_t(jnp.zeros((g.shape[0], sampled.size), g.dtype).at[:, index].set(g), image_hw, channels)
    )
    to_kspace = jax.jit(lambda v: fourier_real(v, image_hw, channels))
    batched_vp = jax.vmap(kernel_vp)

    def columns(g):
        return to_kspace(batched_vp(to_outputs(g)))

    on = off = 0.0
    for start in range(0, count, block_size):
        b = min(block_size, count - start)
        if probes is None:
            g = np.zeros((b, index.size), np.float32)
            g[np.arange(b), start + np.arange(b)] = 1.0
        else:
            g = jax.random.normal(jax.random.fold_in(key, start), (b, index.size), jnp.float32)
        cols = np.asarray(columns(jnp.asarray(g)), np.float64)
        on += float(np.sum(cols[:, sampled] ** 2))
        off += float(np.sum(cols[:, ~sampled] ** 2))
    return float(np.sqrt(off / on))
