"""Metrics against scikit-image, SciPy and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file
from scipy.ndimage import gaussian_laplace
from skimage.data import astronaut, camera
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from sgdip_jax.metrics import evaluate, hfen, log_kernel, missing_kspace_recovered, nmse, nrmse, psnr, ssim
from sgdip_jax.operators import fft2c, ifft2c


def _pair(ref, noise, seed):
    """float32 reference and noisy copy; skimage gets the same values in float64."""
    rng = np.random.default_rng(seed)
    ref = np.asarray(ref, np.float32)
    x = (ref + noise * ref.max() * rng.standard_normal(ref.shape)).astype(np.float32)
    return x, ref


def _skimage(x, ref, channel_axis=None):
    x64, r64 = x.astype(np.float64), ref.astype(np.float64)
    kw = dict(data_range=r64.max())
    return (
        peak_signal_noise_ratio(r64, x64, **kw),
        structural_similarity(r64, x64, channel_axis=channel_axis, **kw),
        normalized_root_mse(r64, x64),
    )


def _check(x, ref, channel_axis=None):
    p, s, n = _skimage(x, ref, channel_axis)
    assert float(psnr(x, ref=ref)) == pytest.approx(p, abs=1e-3)
    assert float(ssim(x, ref=ref)) == pytest.approx(s, abs=1e-4)
    assert float(nrmse(x, ref=ref)) == pytest.approx(n, rel=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    h=st.integers(7, 40),
    w=st.integers(7, 40),
    scale=st.floats(1e-3, 1e4),
    offset=st.floats(0.0, 2.0),
    noise=st.floats(1e-3, 0.5),
    seed=st.integers(0, 2**31),
)
def test_random_images_match_skimage(h, w, scale, offset, noise, seed):
    rng = np.random.default_rng(seed)
    ref = scale * (offset + rng.uniform(size=(h, w)))
    _check(*_pair(ref, noise, seed + 1))


def test_real_mr_image_matches_skimage():
    ref = dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    for noise in (0.01, 0.1):
        _check(*_pair(ref, noise, 0))


def test_natural_grey_and_colour_match_skimage():
    _check(*_pair(camera()[::4, ::4] / 255.0, 0.05, 1))
    _check(*_pair(astronaut()[::4, ::4] / 255.0, 0.05, 2), channel_axis=-1)


def test_complex_inputs_use_magnitude():
    rng = np.random.default_rng(3)
    x, ref = _pair(rng.uniform(size=(24, 20)), 0.1, 4)
    phase_x, phase_r = np.exp(1j * rng.uniform(0, 6, x.shape)), np.exp(1j * rng.uniform(0, 6, x.shape))
    got = evaluate(x * phase_x, ref=ref * phase_r)
    want = evaluate(np.abs(x), ref=ref)
    assert got == pytest.approx(want, rel=1e-5)


def test_explicit_data_range():
    x, ref = _pair(np.random.default_rng(5).uniform(size=(16, 16)), 0.1, 6)
    want = peak_signal_noise_ratio(ref.astype(float), x.astype(float), data_range=2.0)
    assert float(psnr(x, ref=ref, data_range=2.0)) == pytest.approx(want, abs=1e-3)
    want = structural_similarity(ref.astype(float), x.astype(float), data_range=2.0)
    assert float(ssim(x, ref=ref, data_range=2.0)) == pytest.approx(want, abs=1e-4)


def test_crop_is_fastmri_centre_crop():
    x, ref = _pair(np.random.default_rng(7).uniform(size=(31, 26)), 0.1, 8)
    # fastMRI center_crop: start (n - size) // 2
    xc, rc = x[5:25, 3:23], ref[5:25, 3:23]
    p, s, n = _skimage(xc, rc)
    assert float(psnr(x, ref=ref, crop=(20, 20))) == pytest.approx(p, abs=1e-3)
    assert float(ssim(x, ref=ref, crop=20)) == pytest.approx(s, abs=1e-4)
    assert float(nrmse(x, ref=ref, crop=20)) == pytest.approx(n, rel=1e-5)


def test_support_restricts_the_mean():
    rng = np.random.default_rng(9)
    x, ref = _pair(rng.uniform(size=(30, 28)), 0.1, 10)
    support = rng.uniform(size=x.shape) < 0.6
    r64, x64 = ref.astype(float), x.astype(float)
    want = peak_signal_noise_ratio(r64[support], x64[support], data_range=r64.max())
    assert float(psnr(x, ref=ref, support=support)) == pytest.approx(want, abs=1e-3)
    assert float(nrmse(x, ref=ref, support=support)) == pytest.approx(
        normalized_root_mse(r64[support], x64[support]), rel=1e-5
    )
    _, smap = structural_similarity(r64, x64, data_range=r64.max(), full=True)
    valid = np.s_[3:-3, 3:-3]
    want = smap[valid][support[valid]].mean()
    assert float(ssim(x, ref=ref, support=support)) == pytest.approx(want, abs=1e-4)


def test_hfen_matches_scipy_laplacian_of_gaussian():
    ref = dcmread(get_testdata_file("MR_small.dcm")).pixel_array.astype(np.float64)
    x, ref32 = _pair(ref, 0.05, 11)
    log = lambda a: gaussian_laplace(a, 1.5, mode="constant", truncate=7 / 1.5)  # 15x15 support
    want = np.linalg.norm(log(x.astype(float) - ref)) / np.linalg.norm(log(ref))
    assert float(hfen(x, ref=ref32)) == pytest.approx(want, rel=1e-3)
    assert float(hfen(ref32, ref=ref32)) == 0.0
    assert abs(log_kernel().sum()) < 1e-6
    colour, noisy = astronaut()[:40, :40] / 255.0, _pair(astronaut()[:40, :40] / 255.0, 0.05, 12)[0]
    want = np.sqrt(
        sum(np.linalg.norm(log(noisy[..., c] - colour[..., c])) ** 2 for c in range(3))
        / sum(np.linalg.norm(log(colour[..., c])) ** 2 for c in range(3))
    )
    assert float(hfen(noisy, ref=colour.astype(np.float32))) == pytest.approx(want, rel=1e-3)


def test_jit_and_vmap_over_a_batch():
    rng = np.random.default_rng(13)
    refs = rng.uniform(size=(3, 16, 16)).astype(np.float32)
    xs = (refs + 0.1 * rng.standard_normal(refs.shape)).astype(np.float32)
    batched = jax.jit(jax.vmap(lambda a, b: jnp.stack([psnr(a, ref=b), ssim(a, ref=b), hfen(a, ref=b)])))(xs, refs)
    for i in range(3):
        assert np.allclose(
            batched[i], [psnr(xs[i], ref=refs[i]), ssim(xs[i], ref=refs[i]), hfen(xs[i], ref=refs[i])], rtol=1e-5
        )


def test_evaluate_returns_floats_and_perfect_scores():
    ref = np.random.default_rng(14).uniform(size=(12, 12)).astype(np.float32)
    scores = evaluate(ref, ref=ref)
    assert all(type(v) is float for v in scores.values())
    assert scores["psnr"] == np.inf and scores["ssim"] == pytest.approx(1.0)
    assert scores["nrmse"] == 0.0 and scores["hfen"] == 0.0


def test_reference_is_a_keyword_and_nmse_is_fastmris():
    """fastMRI and scikit-image take ``(gt, pred)``; ours take ``(x, ref=gt)``, so a swapped
    positional call fails instead of changing PSNR. NMSE is fastMRI's ``||gt - pred||^2 / ||gt||^2``."""
    rng = np.random.default_rng(15)
    gt = rng.uniform(size=(16, 16)).astype(np.float32)
    pred = (gt + 0.1 * rng.standard_normal(gt.shape)).astype(np.float32)
    for metric in (psnr, ssim, nmse, nrmse, hfen, evaluate):
        with pytest.raises(TypeError):
            metric(pred, gt)
    want = np.linalg.norm(gt.astype(np.float64) - pred) ** 2 / np.linalg.norm(gt.astype(np.float64)) ** 2
    assert float(nmse(pred, ref=gt)) == pytest.approx(want, rel=1e-5)
    assert evaluate(pred, ref=gt)["nmse"] == pytest.approx(evaluate(pred, ref=gt)["nrmse"] ** 2, rel=1e-5)
    assert float(psnr(pred, ref=gt)) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=gt.max()), rel=1e-5)


def test_bad_inputs():
    a = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="shape"):
        psnr(a, ref=np.zeros((8, 9)))
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(np.ones((6, 9)), ref=np.ones((6, 9)))
    with pytest.raises(ValueError, match="support"):
        psnr(a, ref=a, support=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="crop"):
        psnr(a, ref=a, crop=9)


@settings(max_examples=20, deadline=None)
@given(hw=st.sampled_from([(4, 4), (8, 6), (16, 16)]), seed=st.integers(0, 2**16), keep=st.floats(0.1, 0.9))
def test_missing_kspace_recovered_is_0_for_zero_filled_and_1_for_the_truth(hw, seed, keep):
    h, w = hw
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))).astype(np.complex64)
    mask = (rng.random((h, w)) < keep).astype(np.float32)
    mask.flat[0], mask.flat[-1] = 1.0, 0.0  # both sets non-empty
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x), norm="ortho"))  # fft2c, written with numpy
    zero_filled = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(mask * k), norm="ortho"))
    assert float(missing_kspace_recovered(zero_filled, x, mask)) == pytest.approx(0.0, abs=1e-5)
    assert float(missing_kspace_recovered(x, x, mask)) == pytest.approx(1.0, abs=1e-6)
    # Whatever x holds on the measured k-space does not count; half the missing k-space is half the error.
    other = rng.standard_normal((h, w)) * mask
    half = np.asarray(ifft2c(jnp.asarray(np.asarray(fft2c(jnp.asarray(x))) * (1 + mask) / 2 + other)))
    assert float(missing_kspace_recovered(half, x, mask)) == pytest.approx(0.5, abs=1e-5)
    # Per band: a band's value only depends on that band; a batch is evaluated image by image.
    band = rng.random((h, w)) < 0.5
    band.flat[-1] = True
    both = missing_kspace_recovered(np.stack([zero_filled, x]), x, mask, band)
    np.testing.assert_allclose(np.asarray(both), [0.0, 1.0], atol=1e-5)


@pytest.mark.parametrize("factor", [1e-20, 1e-10, 1e10, 1e20])
def test_metrics_do_not_depend_on_the_units(factor):
    """Every metric is a ratio: images in other units give the same values (float32 would overflow
    or underflow in the squares without working in units of the reference's maximum)."""
    rng = np.random.default_rng(16)
    ref = rng.uniform(size=(24, 24)).astype(np.float32)
    x = (ref + 0.05 * rng.standard_normal(ref.shape)).astype(np.float32)
    want = evaluate(x, ref=ref)
    got = evaluate(x * np.float32(factor), ref=ref * np.float32(factor))
    assert got == pytest.approx(want, rel=1e-4)
    explicit = float(psnr(x * np.float32(factor), ref=ref * np.float32(factor), data_range=2 * factor))
    assert explicit == pytest.approx(float(psnr(x, ref=ref, data_range=2.0)), rel=1e-5)
