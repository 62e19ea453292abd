"""Pure forward models: FFTs, multi-coil MRI, inpainting, sampling masks, coil sensitivities."""

from .base import LinearOperator, measured_entries, restrict_to_support
from .coils import birdcage_maps
from .fft import fft2c, ifft2c
from .inpainting import Inpainting
from .masks import bernoulli_pixels, box, equispaced_lines, parse_mask_spec, random_lines, vdrs
from .mri import MultiCoilMRI
from .sensitivity import espirit, lowres_maps

__all__ = [
    "LinearOperator",
    "measured_entries",
    "restrict_to_support",
    "fft2c",
    "ifft2c",
    "Inpainting",
    "MultiCoilMRI",
    "vdrs",
    "random_lines",
    "equispaced_lines",
    "bernoulli_pixels",
    "box",
    "parse_mask_spec",
    "birdcage_maps",
    "espirit",
    "lowres_maps",
]
