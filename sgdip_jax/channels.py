"""The one conversion between complex images and the real channels-last tensors networks see.

A complex image ``(..., H, W)`` becomes ``(..., H, W, 2)`` holding (real, imag).
"""

import jax.numpy as jnp


def complex_to_channels(x):
    """``(..., H, W)`` complex -> ``(..., H, W, 2)`` real (real, imag)."""
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


def channels_to_complex(t):
    """``(..., H, W, 2)`` real -> ``(..., H, W)`` complex64."""
    return (t[..., 0] + 1j * t[..., 1]).astype(jnp.complex64)
