"""Choosing the regularisation weight ``lam`` of the classical methods from the data alone.

Two rules; neither looks at a reference image.

**Generalised cross-validation** (``lam="auto"``, the default; no noise level needed). With
``n`` real measured entries (two per complex entry) and ``x_lam`` the reconstruction,

    GCV(lam) = ||A x_lam - y||^2 / (1 - df(lam) / n)^2,

where ``df = tr d(A x_lam)/dy`` (the effective degrees of freedom) is estimated by one Monte-Carlo
probe, ``df ~ <b, A x_lam(y + eps b) - A x_lam(y)> / eps`` with ``b`` standard normal on the
measured entries (Ramani, Nielsen, Fessler, IEEE TMI 2012). ``GCV`` is evaluated on a log grid of
``lam`` (:data:`GRID_POINTS` points, two solves each), then at two points around the minimum.
Under white noise its minimiser is that of the predicted risk ``E||A (x_lam - x)||^2``.

**Discrepancy principle** (``lam="discrepancy"``; needs the noise level ``sigma``, the standard
deviation of the complex noise of one measured entry, ``E|n_i|^2 = sigma^2``): with ``m`` measured
entries, ``||A x_lam - y||^2 = tau m sigma^2`` by bisection over ``log lam``. Morozov's ``tau = 1``
over-regularises at MRI undersampling (the fit absorbs about ``df`` noise dimensions); ``tau =``
:data:`TAU`. When ``sigma`` is not given, :func:`estimate_sigma` estimates it from ``y``:

* multi-coil MRI: the sampled k-space entries in the four outer corners (``|k| > 3/4`` of the
  half-width along both axes, all coils); ``|n|`` is Rayleigh with median ``sigma sqrt(ln 2)``, so
  ``sigma_hat = median |y_corner| / sqrt(ln 2)``. Image content in the corners biases it upwards.
* inpainting: differences of horizontally adjacent known pixels have variance ``2 sigma^2`` plus the
  image's own differences: ``sigma_hat = 1.4826 MAD(d) / sqrt(2)``.

Both rules are compared with the best ``lam`` of a grid (an oracle) in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

RULES = ("auto", "discrepancy")
GRID_POINTS = 9  # log grid with a factor sqrt(10) between neighbours
REFINE = 10.0**0.25  # the two extra points around the grid minimum
PROBE_SCALE = 0.01  # eps = PROBE_SCALE * rms of the measured real entries
TAU = 0.8
BISECTIONS = 10


def measured(operator, y):
    """Boolean array of ``y``'s shape: where the operator's mask is non-zero."""
    from ..operators import measured_entries

    return measured_entries(operator, np.shape(y))


def measured_count(operator, y) -> int:
    """``m``: the number of measured (complex or real) entries of ``y``."""
    return int(measured(operator, y).sum())


def gcv_lambda(solve, forward, y, where, lo: float, hi: float):
    """``(lam, result, table)`` minimising GCV over a log grid in ``[lo, hi]`` plus two refinements.

    ``solve(lam, y) -> result`` with ``result.image``; ``forward(image) -> A image``; ``where``: the
    measured entries of ``y``. ``table``: ``[{"lam", "gcv", "df", "residual"}]`` in evaluation order.
    """
    y = jnp.asarray(y)
    where = jnp.asarray(where)
    complex_data = jnp.iscomplexobj(y)
    n = int(where.sum()) * (2 if complex_data else 1)
    key = jax.random.PRNGKey(0)
    b = jax.random.normal(key, y.shape, jnp.complex64) * np.sqrt(2) if complex_data else jax.random.normal(key, y.shape)
    b = jnp.where(where, b, 0).astype(y.dtype)
    rms = float(jnp.sqrt(jnp.sum(jnp.abs(y) ** 2) / max(n, 1)))
    eps = PROBE_SCALE * rms if rms > 0 else PROBE_SCALE
    table, results = [], {}

    def evaluate(lam):
        result = solve(lam, y)
        ax = forward(jnp.asarray(result.image))
        residual = float(jnp.sum(jnp.abs(ax - y) ** 2))
        probe = forward(jnp.asarray(solve(lam, y + eps * b).image))
        df = float(jnp.real(jnp.vdot(b, probe - ax))) / eps
        gcv = residual / max(1.0 - df / n, 1e-6) ** 2
        table.append({"lam": lam, "gcv": gcv, "df": df, "residual": residual})
        results[lam] = result
        return gcv

    grid = np.logspace(np.log10(lo), np.log10(hi), GRID_POINTS)
    values = [evaluate(float(lam)) for lam in grid]
    centre = float(grid[int(np.argmin(values))])
    for lam in (centre / REFINE, centre * REFINE):
        evaluate(float(lam))
    best = min(table, key=lambda row: row["gcv"])
    return best["lam"], results[best["lam"]], table


def estimate_sigma(operator, y) -> float:
    """Noise level of ``y`` from the data alone (see the module docstring)."""
    from ..operators import Inpainting, MultiCoilMRI

    y = np.asarray(y)
    if isinstance(operator, MultiCoilMRI):
        h, w = y.shape[-2:]
        outer_h = np.abs(np.arange(h) - h // 2) > 0.75 * (h / 2)
        outer_w = np.abs(np.arange(w) - w // 2) > 0.75 * (w / 2)
        sampled = np.broadcast_to(np.asarray(operator.mask) != 0, (h, w))
        corner = sampled & outer_h[:, None] & outer_w[None, :]
        values = np.abs(y[..., corner])
        if values.size == 0:
            raise ValueError("estimate_sigma: no sampled k-space entry in the outer corners; give sigma")
        return float(np.median(values) / np.sqrt(np.log(2.0)))
    if isinstance(operator, Inpainting):
        known = np.asarray(operator.mask) != 0
        both = known[:, 1:] & known[:, :-1]
        d = (y[:, 1:] - y[:, :-1])[both]
        if d.size == 0:
            raise ValueError("estimate_sigma: no two adjacent known pixels; give sigma")
        return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0))
    raise ValueError(f"estimate_sigma: no estimator for {type(operator).__name__}; give sigma")


def discrepancy_lambda(solve, residual, lo: float, hi: float, target: float, steps: int = BISECTIONS):
    """``(lam, result, residual)`` with ``residual(result) ~ target`` by bisection of ``log lam`` in
    ``[lo, hi]``; ``solve(lam) -> result``, ``residual(result)`` non-decreasing in ``lam``. Returns the
    solve whose residual is closest to ``target`` in ratio (an end of the range when it lies outside)."""
    best = None

    def keep(lam):
        nonlocal best
        result = solve(lam)
        value = float(residual(result))
        gap = abs(np.log(max(value, 1e-300) / max(target, 1e-300)))
        if best is None or gap < best[0]:
            best = (gap, lam, result, value)
        return value

    if keep(lo) >= target or keep(hi) <= target:
        return best[1], best[2], best[3]
    a, b = np.log(lo), np.log(hi)
    for _ in range(steps):
        mid = 0.5 * (a + b)
        if keep(float(np.exp(mid))) < target:
            a = mid
        else:
            b = mid
    return best[1], best[2], best[3]
