"""Centred, orthonormal 2-D FFTs over the last two axes (the fastMRI / SigPy convention).

``fft2c(x) = fftshift(fft2(ifftshift(x), norm="ortho"))``; ``ifft2c`` is its inverse and adjoint.
"""

import jax.numpy as jnp

_AXES = (-2, -1)


def fft2c(x):
    """Centred orthonormal 2-D DFT of ``x`` over its last two axes."""
    x = jnp.fft.ifftshift(x, axes=_AXES)
    return jnp.fft.fftshift(jnp.fft.fft2(x, axes=_AXES, norm="ortho"), axes=_AXES)


def ifft2c(k):
    """Centred orthonormal inverse 2-D DFT (the adjoint of :func:`fft2c`)."""
    k = jnp.fft.ifftshift(k, axes=_AXES)
    return jnp.fft.fftshift(jnp.fft.ifft2(k, axes=_AXES, norm="ortho"), axes=_AXES)
