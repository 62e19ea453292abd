"""Facts about this installation: package versions, JAX devices, where the sample data come from
(``sgdip info``, and the environment recorded in every ``metrics.json``)."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

from . import __version__

PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "numpy",
    "h5py",
    "matplotlib",
    "tqdm",
    "pydicom",
    "pydicom-data",
    "scikit-image",
    "Pillow",
    "PyWavelets",
)


def device() -> dict[str, str]:
    """Platform, kind and count of the default JAX devices."""
    import jax

    dev = jax.devices()[0]
    return {"platform": dev.platform, "device": getattr(dev, "device_kind", str(dev)), "count": jax.device_count()}


def environment() -> dict[str, Any]:
    """Versions and device, as recorded with every result."""
    import jax

    return {"sgdip_jax": __version__, "jax": jax.__version__, "python": platform.python_version(), **device()}


def version(package: str) -> str:
    """The installed version of ``package``, or ``"not installed"``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def sample_path(file: str) -> str:
    """Where pydicom-data (or, for the head, matplotlib) keeps ``file`` (or why it is not there)."""
    if file.endswith(".ima.gz"):  # the head: matplotlib's sample data
        from matplotlib.cbook import get_sample_data

        try:
            with get_sample_data(file) as f:
                return str(getattr(f, "name", file))
        except (OSError, ValueError):
            return "not found in matplotlib's sample data"
    try:
        from pydicom.data import get_testdata_file

        path = get_testdata_file(file)
    except ImportError:
        return "pydicom not installed (pip install 'sgdip-jax[data]')"
    return str(path) if path else "not found (pip install pydicom-data)"


def info_lines() -> list[str]:
    """What ``sgdip info`` prints: versions, devices and the sample data."""
    import jax

    from .data.samples import IMAGE_SAMPLES, MRI_SAMPLES

    lines = [f"sgdip-jax {__version__} (python {platform.python_version()}, {platform.platform()})"]
    lines += [f"  {package:<13} {version(package)}" for package in PACKAGES]
    lines.append(f"devices (default backend {jax.default_backend()}):")
    lines += [f"  {dev.id}: {dev.platform} {getattr(dev, 'device_kind', '')}" for dev in jax.devices()]
    lines.append("sample data (offline; multi-coil k-space is simulated from real magnitude images):")
    lines += [f"  MR '{n}': {file}, {text}; {sample_path(file)}" for n, (file, text) in MRI_SAMPLES.items()]
    lines += [f"  image '{n}': {package} data.{function}()" for n, (package, function) in IMAGE_SAMPLES.items()]
    return lines
