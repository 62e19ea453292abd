"""Data I/O: bundled samples, case files, the fastMRI reader, image files, spectral resampling."""

import shutil
import socket

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from sgdip_jax.data import (
    Case,
    load_case,
    load_image,
    read_fastmri,
    rss,
    sample_image,
    sample_mri,
    save_case,
    simulate_measurements,
    spectral_resample,
    validate_case,
    write_fastmri,
)
from sgdip_jax.metrics import center_crop, psnr
from sgdip_jax.operators import MultiCoilMRI, fft2c


def _np_fft2c(x):
    """Centred orthonormal FFT written with NumPy (independent of the package's fft2c)."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), norm="ortho"), axes=axes)


def _np_ifft2c(k):
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=axes), norm="ortho"), axes=axes)


# ---------------------------------------------------------------- bundled MR sample

SMALL = dict(name="small", size=64, coils=4)  # one set of shapes, so eager JAX ops compile once


def test_sample_mri_shoulder_default():
    case, noise = sample_mri("shoulder", return_noise=True)
    y, smaps, mask, x = case.y, case.smaps, case.mask, case.x
    assert y.shape == smaps.shape == (8, 320, 320) and mask.shape == x.shape == (320, 320)
    assert (y.dtype, smaps.dtype, mask.dtype, x.dtype) == (np.complex64,) * 2 + (np.float32, np.complex64)
    # y is exactly mask * (fft2c(smaps * x) + noise)
    assert np.array_equal(y, np.asarray(mask * (fft2c(jnp.asarray(smaps) * x) + noise)))
    # and that is the forward model written independently, up to float32 rounding
    assert np.allclose(y, mask * (_np_fft2c(smaps * x) + noise), atol=1e-5)
    # SNR over the sampled entries is exactly the requested 30 dB; sigma is the noise std
    clean = mask * _np_fft2c(smaps.astype(np.complex128) * x)
    assert 20 * np.log10(np.linalg.norm(clean) / np.linalg.norm(mask * noise)) == pytest.approx(30, abs=1e-3)
    assert np.sqrt(np.mean(np.abs(noise) ** 2)) == pytest.approx(case.sigma, rel=0.01)
    assert np.abs(np.mean(noise)) < 0.01 * case.sigma
    assert np.var(noise.real) == pytest.approx(np.var(noise.imag), rel=0.02)
    # magnitude normalised to 1, unit-RSS maps, 4x line mask with the 8 % centre
    assert np.abs(x).max() == pytest.approx(1.0)
    assert np.allclose(np.sqrt(np.sum(np.abs(smaps) ** 2, 0)), 1, atol=1e-5)
    assert np.all(mask == mask[:1]) and mask.mean() == pytest.approx(0.25)
    assert mask[0, 160 - 12 : 160 + 12].all()
    zero_filled = case.operator().adjoint(y)
    assert 25 <= float(psnr(zero_filled, ref=x)) <= 31
    meta = case.meta
    assert meta["source"] == "simulated from a real magnitude image"
    assert meta["source_file"] == "MR2_UNCR.dcm"
    assert (meta["acceleration"], meta["snr_db"], meta["coils"], meta["seed"]) == (4, 30, 8, 0)
    assert meta["center_fraction"] == pytest.approx(0.08)
    validate_case(case, "sample")


def test_sample_mri_is_seeded_and_configurable():
    a = sample_mri(**SMALL, acceleration=8, seed=1, mask_type="equispaced")
    b = sample_mri(**SMALL, acceleration=8, seed=1, mask_type="equispaced")
    c = sample_mri(**SMALL, acceleration=8, seed=2, mask_type="equispaced")
    assert np.array_equal(a.y, b.y) and np.array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x) and not np.array_equal(a.y, c.y)
    assert a.y.shape == (4, 64, 64) and a.meta["center_fraction"] == pytest.approx(0.04)
    assert a.meta["mask_type"] == "equispaced" and a.meta["source_file"] == "MR_small.dcm"
    # the magnitude is the real image, only the phase is synthetic
    assert np.allclose(np.abs(a.x), np.abs(c.x), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="unknown sample"):
        sample_mri("knee", size=64)
    with pytest.raises(ValueError, match="mask_type"):
        sample_mri("small", size=64, mask_type="spiral")


def test_simulate_measurements_snr():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 64)) + 1j * rng.standard_normal((64, 64))).astype(np.complex64)
    smaps = (rng.standard_normal((4, 64, 64)) + 1j * rng.standard_normal((4, 64, 64))).astype(np.complex64)
    mask = (rng.uniform(size=(64, 64)) < 0.5).astype(np.float32)
    for snr in (0.0, 17.5, 40.0):
        y, noise, sigma = simulate_measurements(x, smaps, mask, snr, jax.random.PRNGKey(3))
        clean = mask * _np_fft2c(smaps * x)
        assert 20 * np.log10(np.linalg.norm(clean) / np.linalg.norm(mask * noise)) == pytest.approx(snr, abs=1e-3)
        assert np.allclose(y, clean + mask * noise, atol=1e-5)


# ---------------------------------------------------------------- spectral resampling


@pytest.mark.parametrize("n_in, n_out", [(32, 20), (20, 32), (31, 18), (18, 31), (17, 17)])
def test_spectral_resample_band_limited(n_in, n_out):
    # a band-limited periodic function sampled at u = (n - N//2) / N resamples exactly
    def f(n, shift):
        u = (np.arange(n) - n // 2) / n
        return np.cos(2 * np.pi * 3 * u + 0.4) + 0.5 * np.sin(2 * np.pi * 5 * u) + shift

    img = np.outer(f(n_in, 2.0), f(n_in + 1, 1.0)).astype(np.float32)
    want = np.outer(f(n_out, 2.0), f(n_out + 3, 1.0))
    got = spectral_resample(img, (n_out, n_out + 3))
    assert got.dtype == np.float32 and np.allclose(got, want, atol=1e-4)
    complex_img = img * np.exp(0.3j).astype(np.complex64)
    assert np.allclose(spectral_resample(complex_img, (n_out, n_out + 3)), want * np.exp(0.3j), atol=1e-4)


def test_spectral_resample_constant_and_round_trip():
    assert np.allclose(spectral_resample(np.full((9, 12), 2.5, np.float32), 7), 2.5, atol=1e-5)
    img = np.random.default_rng(0).uniform(size=(2, 15, 16)).astype(np.float32)
    assert np.allclose(spectral_resample(spectral_resample(img, 40), (15, 16)), img, atol=1e-5)
    # even-size Nyquist bins are folded / split, so a real image stays real both ways
    for size in (40, (9, 8)):
        assert np.abs(spectral_resample(img.astype(np.complex64), size).imag).max() < 1e-6
    colour = np.moveaxis(img, 0, -1)
    assert np.allclose(spectral_resample(colour, 40, axes=(0, 1))[..., 1], spectral_resample(img[1], 40), atol=1e-6)


# ---------------------------------------------------------------- case files


def _small_case():
    return sample_mri(**SMALL)


def test_case_round_trip(tmp_path):
    case = _small_case()
    path = tmp_path / "case.npz"
    save_case(path, case)
    back = load_case(path)
    for field in ("y", "smaps", "mask", "x"):
        assert np.array_equal(getattr(back, field), getattr(case, field))
        assert getattr(back, field).dtype == getattr(case, field).dtype
    assert back.sigma == pytest.approx(case.sigma) and back.meta == case.meta
    op = back.operator()
    assert isinstance(op, MultiCoilMRI)
    assert np.allclose(op(back.x), back.mask * _np_fft2c(back.smaps * back.x), atol=1e-5)
    with pytest.raises(FileExistsError, match="case.npz"):
        save_case(path, case)
    save_case(path, case, overwrite=True)
    # minimal case: no x, sigma or meta; a (1, W) line mask is expanded to (H, W)
    minimal = Case(y=case.y, smaps=case.smaps, mask=case.mask[:1])
    save_case(tmp_path / "min.npz", minimal)
    back = load_case(tmp_path / "min.npz")
    assert back.x is None and back.sigma is None and back.meta == {} and back.mask.shape == (64, 64)


def _bad(case, **changes):
    fields = dict(y=case.y, smaps=case.smaps, mask=case.mask, x=case.x, sigma=case.sigma, meta=case.meta)
    fields.update(changes)
    return Case(**fields)


def _with_nan(a, value=np.nan):
    a = a.copy()
    a[0, 0, 0] = value
    return a


BAD_CASES = {
    "maps shape": (lambda c: _bad(c, smaps=c.smaps[:, :8]), r"'smaps' must match k-space 'y' \(4, 64, 64\)"),
    "mask size": (lambda c: _bad(c, mask=c.mask[:8]), r"'mask' must be float32 \(64, 64\)"),
    "nan y": (lambda c: _bad(c, y=_with_nan(c.y)), "'y' contains 1 NaN/Inf"),
    "inf smaps": (lambda c: _bad(c, smaps=_with_nan(c.smaps, np.inf)), "'smaps' contains 1 NaN/Inf"),
    "empty mask": (lambda c: _bad(c, y=0 * c.y, mask=0 * c.mask), "'mask' is all zero"),
    "non-binary mask": (lambda c: _bad(c, mask=0.5 * c.mask), "'mask' must hold only 0 and 1"),
    "y off mask": (lambda c: _bad(c, y=c.y + 1), "'y' is non-zero where 'mask' is 0"),
    "real y": (lambda c: _bad(c, y=c.y.real), "'y' must be complex64"),
    "x shape": (lambda c: _bad(c, x=c.x[:3]), r"'x' must have shape \(64, 64\)"),
    "sigma": (lambda c: _bad(c, sigma=-1.0), "'sigma' must be a finite scalar"),
}


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_case_errors_name_file_and_field(tmp_path, name):
    make, message = BAD_CASES[name]
    bad = make(_small_case())
    with pytest.raises(ValueError, match=message):
        validate_case(bad, "bad.npz")
    # the same problem in a file written without validation is caught on load, naming the file
    arrays = {k: getattr(bad, k) for k in ("y", "smaps", "mask", "x", "sigma")}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="bad.npz: field " + message):
        load_case(tmp_path / "bad.npz")


def test_case_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_case(tmp_path / "nowhere.npz")
    case = _small_case()
    np.savez(tmp_path / "nomaps.npz", y=case.y, mask=case.mask)
    with pytest.raises(ValueError, match=r"nomaps.npz: missing key\(s\) \['smaps'\]"):
        load_case(tmp_path / "nomaps.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="text.npz: not a NumPy file"):
        load_case(tmp_path / "text.npz")


# ---------------------------------------------------------------- fastMRI HDF5


def _kspace(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def test_fastmri_multicoil_round_trip(tmp_path):
    kspace = _kspace((3, 4, 40, 26))
    mask = (np.arange(26) % 3 == 0).astype(np.float32)
    path = tmp_path / "file_brain_AXT2_0.h5"
    write_fastmri(path, kspace, mask=mask, recon_size=(20, 20), attrs={"acceleration": 3})
    data = read_fastmri(path)
    assert data.multicoil and data.slices == (0, 1, 2)
    assert data.kspace.dtype == np.complex64 and np.array_equal(data.kspace, kspace)
    assert np.array_equal(data.mask, mask)
    # target: fastMRI's centre crop (start (n - 20) // 2) of the RSS of the coil images
    images = _np_ifft2c(kspace)
    want = np.sqrt(np.sum(np.abs(images) ** 2, axis=1))[:, 10:30, 3:23]
    assert np.allclose(data.reconstruction_rss, want, rtol=1e-4, atol=1e-6)
    assert data.reconstruction_esc is None
    assert data.encoded_size == (40, 26, 1) and data.recon_size == (20, 20, 1)
    assert data.attrs["acquisition"] == "CORPD_FBK" and data.attrs["acceleration"] == 3
    assert data.attrs["max"] == pytest.approx(want.max(), rel=1e-5)
    one = read_fastmri(path, slice=1)
    assert one.slices == (1,) and np.array_equal(one.kspace, kspace[1:2])
    some = read_fastmri(path, slice=[2, 0, -1])
    assert some.slices == (2, 0, 2) and np.array_equal(some.kspace, kspace[[2, 0, 2]])
    assert np.array_equal(some.reconstruction_rss, data.reconstruction_rss[[2, 0, 2]])
    with pytest.raises(ValueError, match="slice 3 out of range for 3 slices"):
        read_fastmri(path, slice=3)


def test_fastmri_singlecoil_round_trip(tmp_path):
    kspace = _kspace((2, 24, 18), seed=1)
    esc = np.random.default_rng(2).uniform(size=(2, 16, 16)).astype(np.float32)
    path = tmp_path / "file1000001.h5"
    write_fastmri(path, kspace, reconstruction_esc=esc, recon_size=(16, 16))
    data = read_fastmri(path, slice=[1])
    assert not data.multicoil and data.kspace.shape == (1, 24, 18)
    assert np.array_equal(data.kspace, kspace[1:])
    assert np.array_equal(data.reconstruction_esc, esc[1:])
    assert np.allclose(data.reconstruction_rss[0], np.abs(_np_ifft2c(kspace[1]))[4:20, 1:17], atol=1e-5)
    assert data.mask is None


def test_fastmri_rejects_bad_files(tmp_path):
    path = tmp_path / "no_kspace.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("reconstruction_rss", data=np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match=r"no_kspace.h5: missing dataset 'kspace'"):
        read_fastmri(path)
    (tmp_path / "text.h5").write_text("plain text")
    with pytest.raises(ValueError, match="text.h5: not an HDF5 file"):
        read_fastmri(tmp_path / "text.h5")
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_fastmri(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((4, 4), np.complex64))
    with pytest.raises(ValueError, match="flat.h5: 'kspace' must be"):
        read_fastmri(tmp_path / "flat.h5")


def test_center_crop_and_rss():
    a = np.arange(7 * 6).reshape(7, 6)
    assert np.array_equal(center_crop(a, (4, 3)), a[1:5, 1:4])  # fastMRI: (n - size) // 2
    assert np.array_equal(center_crop(a, 2), a[2:4, 2:4])
    assert np.array_equal(center_crop(a[..., None], (4, 3), axes=(0, 1))[..., 0], a[1:5, 1:4])
    with pytest.raises(ValueError, match="does not fit"):
        center_crop(a, 8)
    coils = _kspace((3, 5, 4))
    assert np.allclose(rss(coils, axis=0), np.linalg.norm(coils, axis=0), rtol=1e-6)


# ---------------------------------------------------------------- DICOM and image files


def test_dicom_files(tmp_path):
    mr = get_testdata_file("MR_small.dcm")
    img = load_image(mr)
    assert img.dtype == np.float32 and np.array_equal(img, pydicom.dcmread(mr).pixel_array)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    want = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    assert np.array_equal(load_image(get_testdata_file("CT_small.dcm")), want)
    assert load_image(get_testdata_file("emri_small.dcm")).shape == (10, 64, 64)  # multi-frame
    rgb = pydicom.dcmread(get_testdata_file("SC_rgb.dcm")).pixel_array
    assert np.allclose(load_image(get_testdata_file("SC_rgb.dcm"), grey=True), rgb @ [0.299, 0.587, 0.114], rtol=1e-5)
    # recognised by the DICM magic without a suffix
    shutil.copy(mr, tmp_path / "IM0001")
    assert np.array_equal(load_image(tmp_path / "IM0001"), img)
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(ValueError, match="broken.dcm: unreadable DICOM"):
        load_image(tmp_path / "broken.dcm")


def test_image_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    rgb = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    deep = rng.integers(0, 65536, (12, 10), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb).save(tmp_path / "c.tiff")
    Image.fromarray(deep).save(tmp_path / "d.png")
    assert np.allclose(load_image(tmp_path / "g.png"), grey / 255, atol=1e-7)
    assert np.allclose(load_image(tmp_path / "c.png"), rgb / 255, atol=1e-7)
    assert np.allclose(load_image(tmp_path / "c.tiff"), rgb / 255, atol=1e-7)
    assert np.allclose(load_image(tmp_path / "d.png"), deep / 65535, atol=1e-7)
    luminance = np.asarray(Image.fromarray(rgb).convert("L")) / 255  # Pillow rounds to 8 bits
    assert np.allclose(load_image(tmp_path / "c.png", grey=True), luminance, atol=1 / 255)
    assert load_image(tmp_path / "g.png", grey=False).shape == (12, 10, 3)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="bad.png: unreadable image"):
        load_image(tmp_path / "bad.png")
    (tmp_path / "data.xyz").write_text("?")
    with pytest.raises(ValueError, match="data.xyz: unsupported image format"):
        load_image(tmp_path / "data.xyz")
    with pytest.raises(FileNotFoundError, match="none.png"):
        load_image(tmp_path / "none.png")


def test_sample_images_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name, colour in [("astronaut", 1), ("coffee", 1), ("chelsea", 1), ("camera", 0), ("ascent", 0), ("aero", 0)]:
        img = sample_image(name, 32)
        assert img.dtype == np.float32 and img.shape == ((32, 32, 3) if colour else (32, 32))
        assert 0 <= img.min() and img.max() <= 1 and img.std() > 0.05
    full = sample_image("coffee")
    assert full.shape == (400, 600, 3) and full.max() <= 1
    assert sample_image("chelsea", (16, 24)).shape == (16, 24, 3)
    with pytest.raises(ValueError, match="unknown image"):
        sample_image("lena")
