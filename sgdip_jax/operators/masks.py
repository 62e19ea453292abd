"""Seeded sampling masks for MRI (phase-encode lines) and inpainting (pixels).

Every function takes the mask ``shape`` ``(H, W)``, its parameters by keyword (line masks:
``acceleration=``, ``center_fraction=``, ``seed=``), and returns ``(mask, acceleration)``: a float32
0/1 array of that shape and the achieved acceleration ``mask.size / mask.sum()``. Line masks set
whole columns: the last axis ``W`` is the phase-encode direction (fastMRI's convention). The centre of
k-space is at column ``W // 2`` (centred FFT); a fully sampled centre of ``n`` lines starts at column
``(W - n + 1) // 2``, as in fastMRI. Randomness comes from ``numpy.random.default_rng(seed)``.
Rounding uses Python's ``round`` (half to even), as fastMRI does.
"""

import math

import numpy as np

__all__ = [
    "default_center_fraction",
    "vdrs",
    "random_lines",
    "equispaced_lines",
    "bernoulli_pixels",
    "box",
    "parse_mask_spec",
    "MASK_TYPES",
]


def default_center_fraction(acceleration: float) -> float:
    """The fully sampled centre's share of the lines when none is given: ``0.32 / acceleration``
    (fastMRI's 0.08 at 4x and 0.04 at 8x; the centre is a quarter of the sampled lines)."""
    return 0.32 / acceleration


def _check_shape(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape: expected (H, W) with positive sizes, got {shape}")
    return shape


def _check_lines(acceleration, center_fraction):
    if not acceleration >= 1.0:
        raise ValueError(f"acceleration: expected a number >= 1, got {acceleration}")
    if not 0.0 <= center_fraction < 1.0:
        raise ValueError(f"center_fraction: expected a number in [0, 1), got {center_fraction}")


def _check_budget(n_center, width, acceleration, center_fraction):
    if n_center > width / acceleration:
        raise ValueError(
            f"center_fraction={center_fraction} gives {n_center} centre lines, more than the "
            f"{width / acceleration:g} lines that acceleration={acceleration} allows for width {width}"
        )


def _center_lines(width, n_center):
    lines = np.zeros(width, bool)
    start = (width - n_center + 1) // 2
    lines[start : start + n_center] = True
    return lines


def _finish(mask):
    mask = np.asarray(mask, np.float32)
    if not mask.any():
        raise ValueError(f"mask of shape {mask.shape} is empty: no sample is kept")
    return mask, float(mask.size / mask.sum(dtype=np.float64))


def _line_mask(lines, height):
    return _finish(np.broadcast_to(lines, (height, lines.size)))


def vdrs(shape, *, acceleration=4.0, center_fraction=0.08, seed=0):
    """Variable-density random sampling of phase-encode lines (the reference code's 1-D scheme).

    A fully sampled centre of ``floor(center_fraction * W)`` lines plus lines drawn uniformly without
    replacement from the remaining columns until ``round(W / acceleration)`` lines are sampled, so the
    line count is exact. ``vdrs((640, 372), acceleration=4, center_fraction=0.08)`` samples 93 lines
    with the central 29 full.
    """
    height, width = _check_shape(shape)
    _check_lines(acceleration, center_fraction)
    n_center = math.floor(center_fraction * width + 1e-9)
    n_total = round(width / acceleration)
    _check_budget(n_center, width, acceleration, center_fraction)
    lines = _center_lines(width, n_center)
    rng = np.random.default_rng(seed)
    lines[rng.choice(np.flatnonzero(~lines), n_total - n_center, replace=False)] = True
    return _line_mask(lines, height)


def random_lines(shape, *, acceleration=4.0, center_fraction=0.08, seed=0):
    """fastMRI's ``RandomMaskFunc``: ``n_c = round(W * center_fraction)`` centre lines, and every
    column independently with probability ``p = (W / acceleration - n_c) / (W - n_c)``, so the
    *expected* number of lines is ``W / acceleration``."""
    height, width = _check_shape(shape)
    _check_lines(acceleration, center_fraction)
    n_center = round(width * center_fraction)
    _check_budget(n_center, width, acceleration, center_fraction)
    prob = (width / acceleration - n_center) / (width - n_center)
    rng = np.random.default_rng(seed)
    lines = (rng.uniform(size=width) < prob) | _center_lines(width, n_center)
    return _line_mask(lines, height)


def equispaced_lines(shape, *, acceleration=4.0, center_fraction=0.08, seed=0, offset=None):
    """fastMRI's equispaced mask with acceleration matching (``EquispacedMaskFractionFunc``).

    ``n_c = round(W * center_fraction)`` centre lines plus the columns ``round(offset + j * a)``,
    ``0 <= offset + j * a < W - 1``, spaced by the adjusted acceleration
    ``a = acceleration * (W - n_c) / (W - acceleration * n_c)``, which solves
    ``n_c + (W - n_c) / a = W / acceleration``. ``offset`` is drawn from ``[0, round(a))`` unless given.
    """
    height, width = _check_shape(shape)
    _check_lines(acceleration, center_fraction)
    n_center = round(width * center_fraction)
    if n_center * acceleration >= width:
        raise ValueError(
            f"center_fraction={center_fraction} gives {n_center} centre lines, which leaves no "
            f"outer lines at acceleration={acceleration} for width {width}"
        )
    spacing = acceleration * (width - n_center) / (width - acceleration * n_center)
    if offset is None:
        offset = int(np.random.default_rng(seed).integers(0, round(spacing)))
    elif not 0 <= offset < width - 1:
        raise ValueError(f"offset: expected an integer in [0, {width - 1}), got {offset}")
    lines = _center_lines(width, n_center)
    lines[np.round(np.arange(offset, width - 1, spacing)).astype(int)] = True
    return _line_mask(lines, height)


def bernoulli_pixels(shape, missing=0.5, seed=0):
    """Pixel mask for inpainting: each pixel is missing (0) independently with probability ``missing``."""
    shape = _check_shape(shape)
    if not 0.0 <= missing < 1.0:
        raise ValueError(f"missing: expected a probability in [0, 1), got {missing}")
    return _finish(np.random.default_rng(seed).uniform(size=shape) >= missing)


def box(shape, size):
    """Pixel mask for inpainting with a centred square hole of side ``size`` (rows and columns
    ``(H - size) // 2 ...`` and ``(W - size) // 2 ...`` are missing)."""
    height, width = _check_shape(shape)
    if int(size) != size or not 0 <= size <= min(height, width):
        raise ValueError(f"size: expected an integer in [0, {min(height, width)}], got {size}")
    size = int(size)
    mask = np.ones((height, width), np.float32)
    top, left = (height - size) // 2, (width - size) // 2
    mask[top : top + size, left : left + size] = 0
    return _finish(mask)


# kind -> (function, parameter names in spec order, number required, seeded)
_SPECS = {
    "vdrs": (vdrs, ("acceleration", "center_fraction"), 1, True),
    "random": (random_lines, ("acceleration", "center_fraction"), 1, True),
    "equispaced": (equispaced_lines, ("acceleration", "center_fraction"), 1, True),
    "bernoulli": (bernoulli_pixels, ("missing",), 1, True),
    "box": (box, ("size",), 1, False),
}
_FORMATS = "vdrs:ACC[:CF], random:ACC[:CF], equispaced:ACC[:CF], bernoulli:MISSING, box:SIZE"


def parse_mask_spec(spec, shape, seed=0):
    """Build a mask from a string such as ``"vdrs:4"``, ``"random:4:0.08"``, ``"equispaced:8:0.04"``,
    ``"bernoulli:0.5"`` or ``"box:64"`` (line masks: acceleration, then optional centre fraction).

    Returns ``(mask, acceleration)`` like the mask functions; raises ``ValueError`` naming the spec.
    """
    kind, *values = str(spec).strip().split(":")
    if kind not in _SPECS:
        raise ValueError(f"mask spec {spec!r}: unknown kind {kind!r}; expected one of {_FORMATS}")
    fn, names, n_required, seeded = _SPECS[kind]
    if not n_required <= len(values) <= len(names):
        raise ValueError(
            f"mask spec {spec!r}: {kind} takes {n_required} to {len(names)} values "
            f"({', '.join(names)}); expected one of {_FORMATS}"
        )
    try:
        kwargs = {name: float(value) for name, value in zip(names, values)}
    except ValueError:
        raise ValueError(f"mask spec {spec!r}: values must be numbers; expected one of {_FORMATS}") from None
    if seeded:
        kwargs["seed"] = seed
    try:
        return fn(shape, **kwargs)
    except ValueError as err:
        raise ValueError(f"mask spec {spec!r}: {err}") from None


MASK_TYPES = {"vdrs": vdrs, "random": random_lines, "equispaced": equispaced_lines}
"""The line masks by name (``--mask-type``): ``f(shape, acceleration=, center_fraction=, seed=)``."""
