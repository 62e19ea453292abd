"""Inpainting: ``A = diag(m)`` with a 0/1 pixel mask, for grey ``(H, W)`` or colour ``(H, W, 3)`` images.

The operator is self-adjoint and idempotent (``A^H A = A``, ``||A|| = 1`` unless the mask is empty).
:meth:`Inpainting.fill` gives a smooth first guess of the missing pixels from the measured ones.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from .base import LinearOperatorMixin


@struct.dataclass
class Inpainting(LinearOperatorMixin):
    """Pixel-mask operator; ``mask`` has the image's shape: ``(H, W)`` grey or ``(H, W, 3)`` colour."""

    mask: jnp.ndarray

    @classmethod
    def create(cls, mask, channels=None):
        """From a ``(H, W)`` mask; ``channels=3`` repeats it over colour channels."""
        mask = jnp.asarray(mask, jnp.float32)
        if mask.ndim != 2:
            raise ValueError(f"mask: expected shape (H, W), got {tuple(mask.shape)}")
        if channels is not None:
            mask = jnp.repeat(mask[..., None], channels, axis=-1)
        return cls(mask=mask)

    @property
    def image_shape(self):
        return self.mask.shape

    @property
    def image_dtype(self):
        return jnp.float32

    def __call__(self, x):
        return self.mask * x

    def adjoint(self, y):
        return self.mask * y

    def fill(self, y):
        """The measured pixels of ``y`` kept and the missing ones filled by normalised Gaussian
        convolution, ``(g * (m y)) / (g * m)``, of width ``s = 1 / sqrt(mean m)`` px (the mean spacing of
        the measured pixels); a pixel with little measured weight near it (below a tenth of the
        largest) takes the value at twice the width, and so on up to the image size."""
        m = self.mask
        levels = max(1, int(np.ceil(np.log2(max(m.shape[:2])))))
        width = 1.0 / jnp.sqrt(jnp.maximum(jnp.mean(m), 1e-6))
        fill, todo = jnp.zeros_like(y), jnp.ones(m.shape, bool)
        for level in range(levels):
            weight = _gaussian_blur(m, width * 2.0**level)
            value = _gaussian_blur(m * y, width * 2.0**level) / jnp.maximum(weight, 1e-12)
            ready = todo & ((weight > 0.1 * jnp.max(weight)) | (level == levels - 1))
            fill, todo = jnp.where(ready, value, fill), todo & ~ready
        return m * y + (1 - m) * fill


def _gaussian_blur(x, sigma):
    """Gaussian blur (std ``sigma`` px, zero padding) of the first two axes of ``x``, separable."""

    def along(axis, v):
        n = v.shape[axis]
        t = jnp.arange(-((n - 1) // 2), (n - 1) // 2 + 1, dtype=jnp.float32)
        g = jnp.exp(-0.5 * (t / sigma) ** 2)
        moved = jnp.moveaxis(v, axis, -1)
        rows = moved.reshape(-1, n)
        out = jax.vmap(lambda row: jnp.convolve(row, g / jnp.sum(g), mode="same"))(rows)
        return jnp.moveaxis(out.reshape(moved.shape), -1, axis)

    return along(1, along(0, x))
