"""Data I/O: case files (``.npz``), fastMRI HDF5, DICOM / image files, bundled real samples."""

from .case import Case, load_case, save_case, validate_case
from .fastmri import FastMRIData, read_fastmri, rss, write_fastmri
from .images import load_image, spectral_resample
from .samples import sample_image, sample_mri, simulate_measurements

__all__ = [
    "Case",
    "load_case",
    "save_case",
    "validate_case",
    "FastMRIData",
    "read_fastmri",
    "rss",
    "write_fastmri",
    "load_image",
    "spectral_resample",
    "sample_image",
    "sample_mri",
    "simulate_measurements",
]
