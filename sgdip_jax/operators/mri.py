"""Multi-coil Cartesian MRI: ``A = M F S``.

``x (H, W) -> y (C, H, W)``: multiply by coil maps ``S``, centred orthonormal FFT ``F``, keep the
sampled k-space locations ``M``. Adjoint ``A^H y = sum_c conj(S_c) F^H (M y_c)``. Single-coil data is
``C = 1`` with ``S = 1``. Batches of slices with their own maps and masks use ``jax.vmap``.
"""

import jax
import jax.numpy as jnp
from flax import struct

from .base import LinearOperatorMixin, conjugate_gradient
from .fft import fft2c, ifft2c

FILL_STEPS = 8  # conjugate-gradient steps of :meth:`MultiCoilMRI.fill`


@struct.dataclass
class MultiCoilMRI(LinearOperatorMixin):
    """Multi-coil MRI forward model with coil maps ``smaps (C, H, W)`` and ``mask (H, W)`` or ``(1, W)``."""

    smaps: jnp.ndarray
    mask: jnp.ndarray

    @classmethod
    def create(cls, smaps, mask):
        """Validate shapes and values (finite maps, non-empty mask); cast to complex64 maps / float32 mask.

        Value checks are skipped for traced arrays (``create`` called under ``jit`` / ``vmap``).
        """
        smaps = jnp.asarray(smaps, jnp.complex64)
        mask = jnp.asarray(mask, jnp.float32)
        if smaps.ndim != 3:
            raise ValueError(f"smaps: expected shape (C, H, W), got {tuple(smaps.shape)}")
        h, w = smaps.shape[-2:]
        if mask.ndim != 2 or mask.shape[-1] != w or mask.shape[0] not in (1, h):
            raise ValueError(
                f"mask: expected shape ({h}, {w}) or (1, {w}) to match smaps {tuple(smaps.shape)}, "
                f"got {tuple(mask.shape)}"
            )
        if not isinstance(smaps, jax.core.Tracer) and not bool(jnp.isfinite(smaps).all()):
            raise ValueError(f"smaps: contains NaN or Inf values (shape {tuple(smaps.shape)})")
        if not isinstance(mask, jax.core.Tracer) and not bool((mask != 0).any()):
            raise ValueError(f"mask: is empty (all zeros, shape {tuple(mask.shape)}); no k-space sample is kept")
        return cls(smaps=smaps, mask=mask)

    @property
    def image_shape(self):
        return self.smaps.shape[-2:]

    @property
    def image_dtype(self):
        return jnp.complex64

    def support(self):
        """``1`` where some coil map is non-zero, ``0`` elsewhere (float32 ``(H, W)``): outside the
        support ``A`` sees nothing, so every method reports 0 there (as SENSE with ESPIRiT maps),
        :func:`~.base.restrict_to_support`."""
        return jnp.any(self.smaps != 0, axis=-3).astype(jnp.float32)

    def __call__(self, x):
        return self.mask * fft2c(self.smaps * x[..., None, :, :])

    def adjoint(self, y):
        return jnp.sum(jnp.conj(self.smaps) * ifft2c(self.mask * y), axis=-3)

    def fill(self, y, steps: int = FILL_STEPS):
        """``y`` as an image with the unmeasured k-space filled from the coils' redundancy: ``steps``
        conjugate-gradient steps on ``A^H A x = A^H y`` from ``x = 0`` (SENSE stopped early: the
        first steps resolve aliasing, later ones amplify noise). Converges to the least-squares
        image; one step of it is the zero-filled image scaled, and with ``A^H A = I`` (every entry
        sampled, ``sum_c |S_c|^2 = 1``) one step is ``A^H y`` itself."""
        b = self.adjoint(y)
        return conjugate_gradient(self.normal, b, jnp.zeros_like(b), steps)
