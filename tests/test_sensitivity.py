"""Coil maps from data: ESPIRiT against the true (simulated) maps and against SigPy's EspiritCalib."""

import numpy as np
import pytest
import sigpy
import sigpy.mri
from scipy import ndimage

from sgdip_jax.operators import fft2c
from sgdip_jax.operators.coils import birdcage_maps
from sgdip_jax.operators.masks import vdrs
from sgdip_jax.operators.sensitivity import espirit, lowres_maps

SIZE, COILS, CALIB = 128, 8, 24


def _simulate(image, maps, mask, noise=1e-3, seed=0):
    """``mask * (fft2c(maps * image) + n)``, complex Gaussian ``n`` at ``noise`` times the peak."""
    kspace = np.asarray(fft2c(maps * image.astype(np.complex64)))
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape)
    return (mask * (kspace + noise * np.abs(kspace).max() / np.sqrt(2) * n)).astype(np.complex64)


def _smooth_phase(shape):
    v, u = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    return np.exp(1j * (0.8 * np.sin(np.pi * v) + 0.5 * u))


def _relative_to_first_coil(maps):
    """The per-pixel phase ambiguity of coil maps removed: phase of coil 0 set to zero."""
    return maps * np.conj(maps[0] / np.abs(maps[0]))


def _rel_error(maps, ref, support):
    return np.linalg.norm((maps - ref)[:, support]) / np.linalg.norm(ref[:, support])


@pytest.mark.parametrize("coils,shape", [(8, (32, 32)), (5, (16, 24)), (12, (64, 40))])
def test_birdcage_maps_match_sigpy(coils, shape):
    """Same geometry as SigPy (already RSS-normalised) up to the global phase exp(i pi / 2)."""
    ours = birdcage_maps(coils, shape, radius=1.5)
    ref = sigpy.mri.birdcage_maps((coils, *shape), r=1.5)
    ref = ref / np.sqrt(np.sum(np.abs(ref) ** 2, axis=0))
    assert ours.dtype == np.complex64 and ours.shape == (coils, *shape)
    np.testing.assert_allclose(ours, ref * np.exp(0.5j * np.pi), atol=1e-6)


@pytest.mark.parametrize("shape", [(33, 33), (45, 37)])
def test_birdcage_maps_properties(shape):
    """Odd sizes (where SigPy centres its grid at n / 2 instead of the FFT centre n // 2)."""
    maps = birdcage_maps(8, shape)
    np.testing.assert_allclose(np.sum(np.abs(maps) ** 2, axis=0), 1.0, rtol=1e-6)
    centre = maps[:, shape[0] // 2, shape[1] // 2]
    np.testing.assert_allclose(np.angle(centre), 0.0, atol=1e-6)  # phase measured from the coil direction
    # coil 0 sits at +x (right): its magnitude falls from the right edge to the left edge
    row = np.abs(maps[0, shape[0] // 2])
    assert np.all(np.diff(row) > 0)
    # smooth: the finite-difference gradient in field-of-view units ([-1, 1]) stays bounded
    for axis in (-2, -1):
        assert np.abs(np.diff(maps, axis=axis)).max() * shape[axis] / 2 < 10
    if shape[0] == shape[1]:  # rotating the image by 90 degrees maps coil c to coil c + C/4
        for c in range(8):
            np.testing.assert_allclose(np.rot90(maps[c], -1), maps[(c + 2) % 8], atol=1e-6)
    with pytest.raises(ValueError, match="radius"):
        birdcage_maps(8, shape, radius=0.9)


@pytest.fixture(scope="module")
def case():
    """Shepp-Logan with a smooth phase, 8 birdcage coils, 4x VDRS lines with a 24-line full centre."""
    image = np.abs(sigpy.shepp_logan((SIZE, SIZE))) * _smooth_phase((SIZE, SIZE))
    maps = birdcage_maps(COILS, (SIZE, SIZE))
    mask, _ = vdrs((SIZE, SIZE), acceleration=4, center_fraction=CALIB / SIZE, seed=0)
    kspace = _simulate(image, maps, mask)
    support = ndimage.binary_erosion(np.abs(image) > 0, iterations=2)
    est, eig = (np.asarray(a) for a in espirit(kspace, calib_width=CALIB, return_eigenvalues=True))
    return dict(kspace=kspace, maps=maps, support=support, est=est, eig=eig)


def test_espirit_recovers_true_maps(case):
    est, eig, support = case["est"], case["eig"], case["support"]
    assert est.shape == (COILS, SIZE, SIZE) and est.dtype == np.complex64
    assert _rel_error(est, _relative_to_first_coil(case["maps"]), support) < 0.05
    # the eigenvalue crop keeps the object and zeroes far background
    assert np.all(eig[support] > 0.95)
    corners = np.zeros((SIZE, SIZE), bool)
    corners[:8, :8] = True
    assert np.all(est[:, corners] == 0)
    kept = eig > 0.95
    np.testing.assert_allclose(np.sum(np.abs(est[:, kept]) ** 2, axis=0), 1.0, rtol=1e-5)
    assert np.allclose(est[0, kept].imag, 0, atol=1e-6) and np.all(est[0, kept].real > 0)


def test_espirit_matches_sigpy(case):
    ref, ref_eig = sigpy.mri.app.EspiritCalib(
        case["kspace"].astype(np.complex128), calib_width=CALIB, output_eigenvalue=True, show_pbar=False
    ).run()
    support = case["support"]
    assert _rel_error(case["est"], ref, support) < 0.02
    assert np.abs(case["eig"] - ref_eig)[:, support].max() < 1e-3
    # with SigPy's 100 power iterations, also the slowly converging noise-only pixels agree
    est, eig = espirit(case["kspace"], calib_width=CALIB, max_iter=100, return_eigenvalues=True)
    assert np.linalg.norm(np.asarray(est) - ref) < 1e-4 * np.linalg.norm(ref)
    np.testing.assert_array_equal(np.asarray(eig) > 0.95, ref_eig[0] > 0.95)


@pytest.mark.parametrize("coils,shape,calib,kernel", [(4, (45, 37), 16, 5), (32, (33, 40), 12, 4)])
def test_espirit_odd_sizes_and_coil_counts(coils, shape, calib, kernel):
    """Odd sizes and 4 / 32 coils against SigPy (fully sampled k-space, same parameters)."""
    v, u = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    image = ((u / 0.8) ** 2 + (v / 0.7) ** 2 < 1) * (1 + 0.4 * u) * _smooth_phase(shape)
    kspace = _simulate(image, birdcage_maps(coils, shape), 1.0)
    est, eig = espirit(kspace, calib_width=calib, kernel_size=kernel, return_eigenvalues=True)
    ref, ref_eig = sigpy.mri.app.EspiritCalib(
        kspace.astype(np.complex128),
        calib_width=calib,
        kernel_width=kernel,
        output_eigenvalue=True,
        show_pbar=False,
    ).run()
    assert est.shape == kspace.shape
    assert np.abs(np.asarray(eig) - ref_eig).max() < 1e-3
    assert np.linalg.norm(np.asarray(est) - ref) < 1e-3 * np.linalg.norm(ref)


def test_espirit_batch_and_scale(case):
    """A batch of slices gives each slice's maps; maps do not depend on the k-space scale."""
    other = case["kspace"][:, ::-1, :]  # a different (flipped-readout) slice
    batch = np.asarray(espirit(np.stack([case["kspace"], other]), calib_width=CALIB))
    np.testing.assert_allclose(batch[0], case["est"], atol=1e-5)
    np.testing.assert_allclose(batch[1], espirit(other, calib_width=CALIB), atol=1e-5)
    np.testing.assert_allclose(espirit(7.0 * case["kspace"], calib_width=CALIB), case["est"], atol=1e-4)


def test_lowres_maps():
    """On a smooth object the RSS-normalised low-resolution coil images are close to the true maps."""
    v, u = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 64), indexing="ij")
    r2 = (u / 0.7) ** 2 + (v / 0.8) ** 2
    image = np.clip(1.5 * (1 - r2), 0, 1) * _smooth_phase((64, 64))  # smooth edge
    maps = birdcage_maps(COILS, (64, 64))
    est = np.asarray(lowres_maps(_simulate(image, maps, 1.0), calib_width=24))
    np.testing.assert_allclose(np.sum(np.abs(est) ** 2, axis=0), 1.0, rtol=1e-4)
    assert np.allclose(est[0].imag, 0, atol=1e-6)
    assert _rel_error(est, _relative_to_first_coil(maps), r2 < 0.8) < 0.03


def test_errors(case):
    narrow, _ = vdrs((SIZE, SIZE), acceleration=4, center_fraction=10 / SIZE, seed=0)
    missing = int(np.sum(narrow[0, SIZE // 2 - CALIB // 2 : SIZE // 2 + CALIB // 2] == 0))
    assert missing > 0
    with pytest.raises(ValueError, match=f"calibration block has {missing} unsampled columns"):
        espirit(case["kspace"] * narrow, calib_width=CALIB)
    with pytest.raises(ValueError, match="calibration block"):
        lowres_maps(case["kspace"] * narrow, calib_width=CALIB)
    with pytest.raises(ValueError, match=f"block has {missing} unsampled columns"):  # one bad slice
        espirit(np.stack([case["kspace"], case["kspace"] * narrow]), calib_width=CALIB)
    bad = case["kspace"].copy()
    bad[0, 5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        espirit(bad)
    with pytest.raises(ValueError, match=r"expected shape \(C, H, W\)"):
        espirit(case["kspace"][0])
    with pytest.raises(ValueError, match="calib_width"):
        espirit(case["kspace"][:, :20, :20])
    with pytest.raises(ValueError, match="kernel_size"):
        espirit(case["kspace"], kernel_size=30)
    with pytest.raises(ValueError, match="thresh"):
        espirit(case["kspace"], thresh=1.5)
