"""Self-validation: a DIP run's settings and stopping point chosen from its own measurements.

A fraction ``rho`` (``holdout``) of the measured locations is held out of the fit: for multi-coil
MRI, k-space locations (every coil's sample there) outside the fully sampled centre, which the
coil maps and the low frequencies need; for inpainting, known pixels. The fit sees the operator
``A_f = M_f A`` and the data ``y_f = M_f y``; the held-out entries ``M_v = M - M_f`` only score the
moving-average image ``x`` of each step,

    e_val(x) = ||M_v (A x - y)|| / ||M_v y||,

the prediction error on data the fit never saw (the DIP analogue of cross-validation; cf.
ZS-SSL's k-space partition). Its noise floor is the held-out noise, so ``e_val`` falls while ``x``
approaches the image and rises once the fit starts to reproduce noise or artefacts; the run keeps
the image where ``e_val`` was smallest (:class:`sgdip_jax.engine.Selection`) and the candidate
settings whose short pilot runs reached the smallest ``e_val`` (:func:`~.common.run_dip`).
The reported image passes through the final data-consistency step with all measurements.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..operators import MultiCoilMRI

HOLDOUT = 0.1
"""The default fraction of measured locations held out (self-guided DIP's ``holdout``)."""


def measured_locations(operator) -> np.ndarray:
    """The measured locations ``(H, W)`` of ``operator.mask`` (a colour mask: its first channel)."""
    if not hasattr(operator, "mask"):
        raise ValueError(
            f"holdout: self-validation needs an operator with a sampling mask, not {type(operator).__name__}"
        )
    mask = np.asarray(operator.mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    return np.broadcast_to(mask != 0, tuple(operator.image_shape[:2]))


def _central_run(full: np.ndarray) -> np.ndarray:
    """The contiguous run of ``True`` through the centre index of ``full`` (all ``False`` if the centre is not)."""
    run = np.zeros_like(full)
    c = len(full) // 2
    if not full[c]:
        return run
    lo, hi = c, c
    while lo > 0 and full[lo - 1]:
        lo -= 1
    while hi < len(full) - 1 and full[hi + 1]:
        hi += 1
    run[lo : hi + 1] = True
    return run


def calibration_region(measured: np.ndarray) -> np.ndarray:
    """The fully sampled k-space centre of ``measured (H, W)``: the contiguous fully sampled columns
    (phase-encode lines) and rows through the centre."""
    columns = _central_run(measured.all(axis=0))
    rows = _central_run(measured.all(axis=1))
    return columns[None, :] | rows[:, None]


def holdout_masks(operator, fraction: float, key) -> tuple[np.ndarray, np.ndarray]:
    """``(fit, held_out)`` boolean location masks ``(H, W)``: ``round(fraction n)`` of the ``n``
    eligible measured locations (MRI: outside :func:`calibration_region`; when that leaves none,
    any measured one), drawn without replacement with ``key``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout: expected a fraction in (0, 1), got {fraction}")
    measured = measured_locations(operator)
    eligible = measured & ~calibration_region(measured) if isinstance(operator, MultiCoilMRI) else measured
    if not eligible.any():
        eligible = measured
    where = np.flatnonzero(eligible)
    count = max(1, round(fraction * len(where)))
    if count >= np.count_nonzero(measured):
        raise ValueError(f"holdout: {np.count_nonzero(measured)} measured locations are too few to hold {count} out")
    chosen = where[np.asarray(jax.random.permutation(key, len(where)))[:count]]
    held = np.zeros(measured.size, bool)
    held[chosen] = True
    held = held.reshape(measured.shape)
    return measured & ~held, held


def _with_locations(operator, locations: np.ndarray):
    """``operator`` measuring only ``locations (H, W)`` (a colour mask repeats them over channels)."""
    mask = np.asarray(operator.mask)
    new = locations.astype(np.float32)
    if mask.ndim == 3:
        new = np.repeat(new[..., None], mask.shape[-1], axis=-1)
    return operator.replace(mask=jnp.asarray(new))


def split(operator, y, fraction: float, key):
    """``(A_f, y_f, A_v, y_v)``: the fit's operator and data, and the held-out ones (module docstring)."""
    fit, held = holdout_masks(operator, fraction, key)
    fit_op, val_op = _with_locations(operator, fit), _with_locations(operator, held)
    return fit_op, y * fit_op.mask, val_op, y * val_op.mask


def validation_error(val_operator, y_val, image):
    """``||A_v x - y_v|| / ||y_v||`` (``y_v``: the held-out data, zero elsewhere)."""
    return jnp.linalg.norm(val_operator(image) - y_val) / jnp.maximum(jnp.linalg.norm(y_val), 1e-30)


def held_out_error(method: str, operator, y, config, key, fraction: float = HOLDOUT) -> float:
    """The held-out error of a method that fits all it is given (e.g. TV at the ``lam`` its rule
    chose): re-solved on the locations a self-validated DIP run of the same ``key`` fits, scored on
    the ones it holds out, so the numbers of both are comparable."""
    from . import run_method
    from .common import problem_keys

    fit_op, y_fit, val_op, y_val = split(operator, jnp.asarray(y), fraction, problem_keys(key)[2])
    image = run_method(method, fit_op, y_fit, config, key, progress=False).image
    return float(validation_error(val_op, y_val, jnp.asarray(image)))
