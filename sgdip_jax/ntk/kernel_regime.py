"""Kernel-regime (linearised) training dynamics of ``L(theta) = 1/2 ||A f(theta) - y||^2``.

With the network replaced by its linearisation ``f(theta) = f(0) + J (theta - theta_0)`` and the kernel
``K = J J^H`` held constant, write ``G = A K A^H = U diag(lambda) U^H`` and ``r = A f - y``. Then

    gradient flow  (d theta/dt = -eta grad L):   r(t) = exp(-eta G t) r(0)
    gradient descent (step eta, t iterations):   r(t) = (I - eta G)^t r(0)
    outputs:  f(t) = f(0) - K A^H U diag(g_t(lambda)) U^H r(0),   g_t(lambda) = (1 - d_t(lambda)) / lambda

with ``d_t = exp(-eta lambda t)`` (flow) or ``(1 - eta lambda)^t`` (descent), which for flow is
``f(0) - K A^H G^+ (I - exp(-eta G t)) (A f(0) - y)``. The limit (``eta lambda_max < 2`` for descent) is
``f(inf) = f(0) - K A^H G^+ (A f(0) - y)``; for noiseless ``y = A x*``,
``f(inf) - x* = (I - P)(f(0) - x*)`` with ``P = K A^H G^+ A``.

The dense algebra here runs in NumPy float64 on kernels that fit in memory (``N_out`` up to a few
thousand); spectra of larger kernels come from :mod:`sgdip_jax.ntk.spectra`. Complex-valued forward
models acting on real network outputs are handled through their real representation
(:func:`operator_map` stacks real and imaginary parts), so ``K``, ``A`` and ``G`` are real.
:func:`gradient_descent` trains the actual network with the same loss for comparison.

Without a dense kernel (large ``N_out``): ``gradient_descent(..., linearized=True)`` trains the
linearisation itself, whose iterates are exactly the discrete kernel-regime trajectory above at the
cost of one JVP and one VJP per step, and :func:`kernel_limit` solves ``G u = A f(0) - y`` by
conjugate residuals on kernel-vector products for ``f(inf)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..channels import from_channels
from ..operators import measured_entries
from .spectra import sandwich

__all__ = [
    "LinearMap",
    "operator_map",
    "dense_matrix",
    "KernelRegime",
    "NullSpace",
    "null_space_fraction",
    "gradient_descent",
    "kernel_limit",
]


class LinearMap(NamedTuple):
    """A real-linear map ``R^n -> R^m`` given by ``matvec`` and its transpose ``rmatvec``."""

    matvec: Callable
    rmatvec: Callable
    shape: tuple[int, int]


def operator_map(op, out_shape: Sequence[int]) -> LinearMap:
    """Real representation of a forward operator applied to flattened network outputs.

    ``f`` (flat, ``prod(out_shape)`` with ``out_shape = (1, H, W, C)`` channels-last) ->
    ``op(from_channels(f, op))`` restricted to the measured entries
    (:func:`~sgdip_jax.operators.measured_entries`) and, for complex measurements, stacked as
    ``[Re; Im]``: the operator's real-linear view, which the kernel algebra needs. For single-coil
    MRI the rows are orthonormal. ``rmatvec`` is the exact transpose (``jax.linear_transpose``).
    """
    out_shape = tuple(int(s) for s in out_shape)
    if len(out_shape) != 4 or out_shape[0] != 1:
        raise ValueError(f"out_shape: expected (1, H, W, C), got {out_shape}")
    n = math.prod(out_shape)
    image = jax.ShapeDtypeStruct(out_shape[1:], jnp.float32)
    meas = jax.eval_shape(lambda t: op(from_channels(t, op)), image)
    keep = jnp.asarray(np.flatnonzero(measured_entries(op, meas.shape)))
    is_complex = jnp.issubdtype(meas.dtype, jnp.complexfloating)

    def matvec(v):
        y = op(from_channels(v.reshape(out_shape[1:]), op)).reshape(-1)[keep]
        return jnp.concatenate([y.real, y.imag]) if is_complex else y

    rmatvec_t = jax.linear_transpose(matvec, jax.ShapeDtypeStruct((n,), jnp.float32))
    m = keep.size * (2 if is_complex else 1)
    return LinearMap(jax.jit(matvec), jax.jit(lambda w: rmatvec_t(w)[0]), (m, n))


def dense_matrix(A, block_size: int = 512) -> np.ndarray:
    """``A`` as a float64 NumPy matrix: an array is converted, a :class:`LinearMap` is applied to the
    identity ``block_size`` columns at a time."""
    if not isinstance(A, LinearMap):
        return np.asarray(A, dtype=np.result_type(np.asarray(A).dtype, np.float64))
    m, n = A.shape
    cols = jax.vmap(A.matvec)
    out = np.empty((m, n), np.float64)
    for start in range(0, n, block_size):
        stop = min(n, start + block_size)
        eye = jnp.eye(stop - start, n, k=start, dtype=jnp.float32)
        out[:, start:stop] = np.asarray(cols(eye), np.float64).T
    return out


def _adjoint(a: np.ndarray) -> np.ndarray:
    return a.conj().T


class KernelRegime:
    """Predictions of linearised training for kernel ``K`` (n x n, Hermitian PSD) and forward ``A`` (m x n).

    ``rcond``: eigenvalues of ``G = A K A^H`` below ``rcond * lambda_max`` are treated as zero (the
    pseudo-inverse ``G^+``); directions with zero eigenvalue are never fitted.
    """

    def __init__(self, K, A, rcond: float = 1e-10):
        K = dense_matrix(K)
        A = dense_matrix(A)
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise ValueError(f"K: expected a square matrix, got shape {K.shape}")
        if A.ndim != 2 or A.shape[1] != K.shape[0]:
            raise ValueError(f"A: expected shape (m, {K.shape[0]}), got {A.shape}")
        self.K, self.A = K, A
        self.KAH = K @ _adjoint(A)
        G = A @ self.KAH
        lam, U = np.linalg.eigh((G + _adjoint(G)) / 2)
        lam, U = lam[::-1], U[:, ::-1]
        self.keep = lam > rcond * max(lam[0], 0.0)
        self.eigvals = np.where(self.keep, lam, 0.0)
        self.U = U

    @property
    def lambda_max(self) -> float:
        """Largest eigenvalue of ``A K A^H`` (gradient descent converges for ``eta < 2 / lambda_max``)."""
        return float(self.eigvals[0])

    def _decay(self, t: np.ndarray, eta: float, discrete: bool) -> np.ndarray:
        """``d_t(lambda)`` for each ``t`` (rows) and eigenvalue (columns); 1 on the null space of ``G``."""
        t = np.asarray(t, np.float64)[:, None]
        lam = self.eigvals[None, :]
        d = (1.0 - eta * lam) ** t if discrete else np.exp(-eta * lam * t)
        return np.where(self.keep[None, :], d, 1.0)

    def residual(self, r0, t, eta: float = 1.0, discrete: bool = False) -> np.ndarray:
        """``r(t) = A f(t) - y`` for each time / iteration in ``t``: shape ``(len(t), m)``."""
        coef = _adjoint(self.U) @ np.asarray(r0)
        return (self._decay(t, eta, discrete) * coef[None, :]) @ self.U.T

    def outputs(self, f0, y, t, eta: float = 1.0, discrete: bool = False) -> np.ndarray:
        """``f(t)`` for each time / iteration in ``t``: shape ``(len(t), n)``."""
        f0 = np.asarray(f0)
        coef = _adjoint(self.U) @ (self.A @ f0 - np.asarray(y))
        inv = np.where(self.keep, 1.0 / np.where(self.keep, self.eigvals, 1.0), 0.0)
        g = (1.0 - self._decay(t, eta, discrete)) * inv[None, :]
        return f0[None, :] - (g * coef[None, :]) @ (self.KAH @ self.U).T

    def pinv_G(self) -> np.ndarray:
        """``G^+`` on the kept eigenvalues."""
        inv = np.where(self.keep, 1.0 / np.where(self.keep, self.eigvals, 1.0), 0.0)
        return (self.U * inv[None, :]) @ _adjoint(self.U)

    def limit(self, f0, y) -> np.ndarray:
        """``f(inf) = f(0) - K A^H G^+ (A f(0) - y)``."""
        f0 = np.asarray(f0)
        return f0 - self.KAH @ (self.pinv_G() @ (self.A @ f0 - np.asarray(y)))

    def projector(self) -> np.ndarray:
        """``P = K A^H G^+ A`` (an oblique projection onto ``range(K A^H)``; ``(I - P)`` maps
        ``f(0) - x*`` to the limiting error for noiseless data)."""
        return self.KAH @ self.pinv_G() @ self.A


class NullSpace:
    """The null space of ``A`` (``m x n``, dense or a :class:`LinearMap`): the right-singular directions
    with singular value at most ``rcond * s_max``, computed once; :meth:`fraction` is then cheap and
    :meth:`at` gives the null space at another ``rcond`` from the same decomposition.

    ``m <= n``: from the SVD of ``A``. ``m > n`` (e.g. many coils): from ``eigh(A^T A)``, an ``n x n``
    problem, much cheaper than the SVD there, which resolves singular values down to about
    ``sqrt(10 n eps) s_max`` (``4e-6`` for ``n = 8192``); ``rcond`` is raised to that floor.
    """

    def __init__(self, A, rcond: float = 1e-10):
        A = dense_matrix(A)
        m, n = A.shape
        if m <= n:
            _, s, self._basis = np.linalg.svd(A, full_matrices=False)  # rows: right-singular vectors
            self._gain, self._floor = s / s[0], 0.0
        else:
            lam, v = np.linalg.eigh(_adjoint(A) @ A)
            self._basis = _adjoint(v)
            self._gain = np.sqrt(np.clip(lam / lam[-1], 0.0, None))
            self._floor = np.sqrt(10 * n * np.finfo(lam.dtype).eps)
        self._n = n
        self.rows = self._basis[self._gain > max(rcond, self._floor)]  # orthonormal basis of the row space

    def at(self, rcond: float) -> NullSpace:
        """The null space with singular values up to ``rcond * s_max`` (no new decomposition)."""
        other = copy.copy(self)
        other.rows = self._basis[self._gain > max(rcond, self._floor)]
        return other

    @property
    def dim(self) -> int:
        """Dimension of the null space."""
        return self._n - self.rows.shape[0]

    def fraction(self, e):
        """``||Pi_null(A) e||^2 / ||e||^2`` for one vector ``(n,)`` (a float) or rows ``(k, n)`` (``(k,)``)."""
        e = np.asarray(e)
        flat = np.atleast_2d(e)
        rest = flat - (flat @ self.rows.T) @ self.rows.conj()
        total = np.sum(np.abs(flat) ** 2, axis=-1)
        frac = np.sum(np.abs(rest) ** 2, axis=-1) / np.where(total > 0, total, 1.0)
        return float(frac[0]) if e.ndim == 1 else frac


def null_space_fraction(A, e, rcond: float = 1e-10):
    """``||Pi_null(A) e||^2 / ||e||^2``: the fraction of the energy of ``e`` in the null space of ``A``.

    ``e`` is one vector ``(n,)`` (returns a float) or several as rows ``(k, n)`` (returns ``(k,)``).
    """
    return NullSpace(A, rcond).fraction(e)


def gradient_descent(
    f: Callable, params, A: LinearMap, y, eta: float, record: Sequence[int], linearized: bool = False
) -> np.ndarray:
    """Train ``params`` by plain gradient descent on ``1/2 ||A f(params) - y||^2`` with step ``eta``.

    ``f(params)`` returns the flat network output; returns the outputs after each iteration count in
    ``record`` (sorted, 0 allowed), shape ``(len(record), n)``. One compiled loop, run once per segment.
    ``linearized=True`` trains ``f(theta_0) + J (theta - theta_0)`` instead (``jax.linearize`` at the
    given ``params``): the kernel-regime prediction with ``K = J J^T``, without forming ``K``.
    """
    record = [int(r) for r in record]
    if sorted(record) != record or (record and record[0] < 0):
        raise ValueError(f"record: expected sorted non-negative iteration counts, got {record}")
    y = jnp.asarray(y, jnp.float32)
    if linearized:
        theta0 = params
        out0, tangent = jax.linearize(f, theta0)
        f = lambda p: out0 + tangent(jax.tree.map(jnp.subtract, p, theta0))  # noqa: E731

    def loss(p):
        r = A.matvec(f(p)) - y
        return 0.5 * jnp.vdot(r, r)

    @jax.jit
    def run(p, steps):
        def body(_, q):
            g = jax.grad(loss)(q)
            return jax.tree.map(lambda a, b: a - eta * b, q, g)

        return jax.lax.fori_loop(0, steps, body, p)

    output = jax.jit(f)
    outs, done = [], 0
    for r in record:
        params = run(params, r - done)
        done = r
        outs.append(np.asarray(output(params), np.float64))
    return np.stack(outs)


def kernel_limit(kernel_vp: Callable, A: LinearMap, f0, y, maxiter: int = 200, tol: float = 1e-6):
    """``f(inf) = f(0) - K A^T u`` with ``G u = A f(0) - y`` (``G = A K A^T``, from ``kernel_vp(v) = K v``,
    e.g. :func:`~sgdip_jax.ntk.ntk_vp_fn`), by at most ``maxiter`` conjugate-residual steps (one
    kernel-vector product each), stopping at ``||G u - b|| <= tol ||b||``.

    Conjugate residuals (CG's variant for symmetric ``G`` that minimises ``||G u - b||`` over the Krylov
    space) keep the data residual non-increasing, so a solve cut short is the best fit reachable in
    ``maxiter`` products; plain CG's residual is not monotone and, with the condition numbers of network
    kernels (``1e6`` and more) in float32, can end above where it started.

    Returns ``(f_inf, rel)`` with ``rel = ||A f_inf - y|| / ||y||``: 0 when the data are fitted exactly;
    directions of ``G`` with tiny eigenvalues stay unfitted (as in training that stops early), which
    ``rel`` shows.
    """
    f0, y = jnp.asarray(f0, jnp.float32), jnp.asarray(y, jnp.float32)
    G = sandwich(kernel_vp, A)
    b = A.matvec(f0) - y
    stop = (tol * jnp.linalg.norm(b)) ** 2

    def cond(state):
        k, _, r, *_ = state
        return (k < maxiter) & (jnp.vdot(r, r) > stop)

    def body(state):
        k, u, r, Gr, p, Gp = state
        rGr = jnp.vdot(r, Gr)
        alpha = rGr / jnp.vdot(Gp, Gp)
        u, r = u + alpha * p, r - alpha * Gp
        Gr_next = G(r)
        beta = jnp.vdot(r, Gr_next) / rGr
        return k + 1, u, r, Gr_next, r + beta * p, Gr_next + beta * Gp

    Gb = G(b)
    _, u, *_ = jax.lax.while_loop(cond, body, (0, jnp.zeros_like(b), b, Gb, b, Gb))
    f_inf = f0 - kernel_vp(A.rmatvec(u))
    rel = float(jnp.linalg.norm(A.matvec(f_inf) - y) / jnp.linalg.norm(y))
    return np.asarray(f_inf, np.float64), rel
