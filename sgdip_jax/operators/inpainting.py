"""Inpainting: ``A = diag(m)`` with a 0/1 pixel mask, for grey ``(H, W)`` or colour ``(H, W, 3)`` images.

The operator is self-adjoint and idempotent (``A^H A = A``, ``||A|| = 1`` unless the mask is empty).
"""

import jax.numpy as jnp
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
