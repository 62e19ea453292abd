"""Simulated birdcage coil sensitivities.

Pixel ``(i, j)`` of an ``(H, W)`` image sits at ``p = (u, v) = ((j - W//2) / (W/2), (i - H//2) / (H/2))``
(the field of view spans ``[-1, 1]^2``, the centred-FFT origin at 0). Coil ``c`` of ``C`` sits at
``q_c = radius * (cos phi_c, sin phi_c)``, ``phi_c = 2 pi c / C``. Its sensitivity, written with
complex numbers ``p = u + i v``, is

    S_c(p) ~ exp(i arg((q_c - p) e^{-i phi_c})) / |q_c - p|,

magnitude falling off as one over the distance, phase the angle to the coil measured from the coil's
own direction (zero at the centre of the field of view), and the maps are normalised so that
``sqrt(sum_c |S_c|^2) = 1`` at every pixel. For even ``H`` and ``W`` this is SigPy's
``sigpy.mri.birdcage_maps`` times the global phase ``exp(i pi / 2)``; for odd sizes SigPy centres the
grid at ``n / 2`` instead of ``n // 2``.
"""

import numpy as np

__all__ = ["birdcage_maps"]


def birdcage_maps(coils, shape, radius=1.5):
    """Birdcage coil maps, complex64 ``(coils, H, W)`` with unit root-sum-of-squares at every pixel.

    ``radius`` is in units of half the field of view and must exceed 1 (coils outside the image).
    """
    shape = tuple(int(s) for s in shape)
    if int(coils) != coils or coils < 1:
        raise ValueError(f"coils: expected a positive integer, got {coils}")
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape: expected (H, W) with positive sizes, got {shape}")
    if not radius > 1.0:
        raise ValueError(f"radius: expected > 1 (coils outside the field of view), got {radius}")
    height, width = shape
    v = (np.arange(height) - height // 2) / (height / 2)
    u = (np.arange(width) - width // 2) / (width / 2)
    p = u[None, None, :] + 1j * v[None, :, None]
    direction = np.exp(2j * np.pi * np.arange(int(coils)) / coils)[:, None, None]
    d = radius * direction - p
    maps = np.exp(1j * np.angle(d * np.conj(direction))) / np.abs(d)
    maps /= np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    return maps.astype(np.complex64)
