"""The one conversion between an operator's images and the real channels-last tensors networks see.

The layout follows the image domain alone (``operator.image_shape`` and ``image_dtype``), so the
operators carry no network convention: a complex image ``(..., H, W)`` becomes ``(..., H, W, 2)``
holding (real, imag); a real ``(H, W)`` image one channel; a real ``(H, W, C)`` image stays as it is.
"""

import jax.numpy as jnp
import numpy as np


def complex_to_channels(x):
    """``(..., H, W)`` complex -> ``(..., H, W, 2)`` real (real, imag)."""
    return jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)


def channels_to_complex(t):
    """``(..., H, W, 2)`` real -> ``(..., H, W)`` complex64."""
    return (t[..., 0] + 1j * t[..., 1]).astype(jnp.complex64)


def _is_complex(operator) -> bool:
    return np.issubdtype(np.dtype(operator.image_dtype), np.complexfloating)


def n_channels(operator) -> int:
    """Channels of the network tensor of ``operator``'s images: 2 (complex), 1 (real ``(H, W)``), or ``C``."""
    if _is_complex(operator):
        return 2
    shape = tuple(operator.image_shape)
    return 1 if len(shape) == 2 else shape[-1]


def to_channels(x, operator):
    """An image of ``operator``'s image domain as a real ``(..., H, W, channels)`` tensor."""
    if _is_complex(operator):
        return complex_to_channels(x)
    return x[..., None] if len(tuple(operator.image_shape)) == 2 else x


def from_channels(t, operator):
    """Inverse of :func:`to_channels`."""
    if _is_complex(operator):
        return channels_to_complex(t)
    return t[..., 0] if len(tuple(operator.image_shape)) == 2 else t
