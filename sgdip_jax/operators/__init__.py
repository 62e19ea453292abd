"""Pure forward models: FFTs, multi-coil MRI, inpainting, sampling masks, coil sensitivities."""

from .fft import fft2c, ifft2c
from .inpainting import Inpainting
from .mri import MultiCoilMRI

__all__ = ["fft2c", "ifft2c", "Inpainting", "MultiCoilMRI"]
