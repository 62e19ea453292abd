"""Coil maps with a support (as ESPIRiT gives): every method reports zero where no coil sees the
image, and the DIP methods stay above the zero-filled image instead of filling that region."""

import jax.numpy as jnp
import numpy as np
import pytest

from sgdip_jax.data.samples import mri_magnitude
from sgdip_jax.methods import METHODS, run_method
from sgdip_jax.metrics import psnr
from sgdip_jax.operators import MultiCoilMRI, birdcage_maps, restrict_to_support, vdrs


@pytest.fixture(scope="module")
def disk_case():
    """48 px shoulder inside a disk; 4 coil maps that vanish outside it; 2.3x lines; light noise."""
    n = 48
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    disk = (np.hypot(yy, xx) < 0.42 * n).astype(np.float32)
    x = (mri_magnitude("shoulder", n) * disk).astype(np.complex64)
    smaps = np.asarray(birdcage_maps(4, (n, n))) * disk
    mask, _ = vdrs((n, n), acceleration=2.3, center_fraction=0.12, seed=0)
    op = MultiCoilMRI.create(smaps, mask)
    clean = np.asarray(op(jnp.asarray(x)))
    rng = np.random.default_rng(0)
    noise = 1e-3 * (rng.normal(size=clean.shape) + 1j * rng.normal(size=clean.shape))
    y = jnp.asarray(clean + np.asarray(mask) * noise, jnp.complex64)
    return op, y, x, disk


def test_support_is_where_some_coil_sees(disk_case):
    op, _, _, disk = disk_case
    np.testing.assert_array_equal(np.asarray(op.support()), disk)
    image = jnp.ones((48, 48), jnp.complex64)
    np.testing.assert_array_equal(np.asarray(restrict_to_support(op, image)), disk.astype(np.complex64))
    full = MultiCoilMRI.create(birdcage_maps(4, (48, 48)), np.ones((48, 48)))
    assert float(jnp.min(full.support())) == 1.0  # birdcage maps see everything: nothing changes


@pytest.mark.parametrize("method", ["zero-filled", "cg-sense", "tv", "l1-wavelet", "dip", "sgdip"])
def test_every_method_is_zero_outside_the_support_and_dip_beats_zero_filled(disk_case, method):
    op, y, x, disk = disk_case
    config = {"network": {"name": "unet2", "base": 8}, "iterations": 150} if METHODS[method].is_dip else {}
    result = run_method(method, op, y, config, 0, progress=False)
    assert np.all(result.image[disk == 0] == 0)
    if METHODS[method].is_dip:
        zero_filled = run_method("zero-filled", op, y, {}, 0, progress=False).image
        assert float(psnr(np.abs(result.image), ref=np.abs(x))) > float(psnr(np.abs(zero_filled), ref=np.abs(x)))


def test_espirit_from_a_small_calibration_region_chooses_a_kernel_that_fits():
    """64 px, 5 fully sampled centre lines: the 6-point default kernel does not fit; a smaller one is used."""
    from sgdip_jax.data.samples import sample_mri
    from sgdip_jax.inputs import center_line_count, estimate_maps

    case = sample_mri("shoulder", size=64, coils=4, acceleration=4, snr_db=30, seed=0)
    mask = np.asarray(case.mask)
    assert center_line_count(mask) < 6
    maps = estimate_maps("espirit", np.asarray(case.y), mask, "case")
    assert maps.shape == (4, 64, 64) and np.isfinite(maps).all() and np.abs(maps).max() > 0
