"""Choosing ``lam`` from the data: GCV (``"auto"``) against the best ``lam`` of a grid (an oracle) on
small open cases and against its closed form for a linear estimator; the discrepancy principle's
bisection; the noise-level estimators against known noise."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from sgdip_jax.data.samples import sample_mri
from sgdip_jax.methods import classical as C
from sgdip_jax.methods import parameter_choice as P
from sgdip_jax.metrics import psnr
from sgdip_jax.operators import Inpainting, MultiCoilMRI
from sgdip_jax.operators.masks import vdrs


def test_kspace_estimator_recovers_sigma_of_pure_noise():
    rng = np.random.default_rng(0)
    sigma = 0.37
    mask, _ = vdrs((96, 96), acceleration=4, center_fraction=0.08, seed=1)
    op = MultiCoilMRI.create(np.ones((4, 96, 96), np.complex64) / 2, mask)
    noise = sigma * (rng.standard_normal((4, 96, 96)) + 1j * rng.standard_normal((4, 96, 96))) / np.sqrt(2)
    y = np.asarray(mask) * noise
    assert P.estimate_sigma(op, y) == pytest.approx(sigma, rel=0.06)


def test_kspace_estimator_on_simulated_cases_is_close_to_the_known_sigma():
    # The corners also hold the image's own high frequencies (and the source image's own noise),
    # so the estimate is biased upwards, more at high SNR (benchmarks/RESULTS.md).
    for snr_db, upper in ((20, 1.3), (30, 1.6)):
        case = sample_mri("shoulder", size=64, coils=8, acceleration=4, snr_db=snr_db, seed=0)
        ratio = P.estimate_sigma(case.operator(), case.y) / case.sigma
        assert 0.9 < ratio < upper, (snr_db, ratio)


def test_pixel_estimator_recovers_sigma_of_noise_on_a_smooth_image():
    rng = np.random.default_rng(1)
    sigma = 0.05
    u = np.linspace(0, 1, 128)
    clean = np.outer(np.sin(2 * u), np.cos(u))
    mask = (rng.random((128, 128)) < 0.6).astype(np.float32)
    op = Inpainting.create(mask)
    y = mask * (clean + sigma * rng.standard_normal(clean.shape))
    assert P.estimate_sigma(op, y) == pytest.approx(sigma, rel=0.08)


def test_bisection_meets_the_target_and_clamps_outside_the_range():
    solve = lambda lam: lam  # residual(lam) = lam^2 is increasing
    residual = lambda r: r**2
    lam, result, value = P.discrepancy_lambda(solve, residual, 1e-4, 1e2, 4.0, steps=30)
    assert lam == pytest.approx(2.0, rel=1e-6) and result == lam and value == pytest.approx(4.0, rel=1e-5)
    assert P.discrepancy_lambda(solve, residual, 1e-4, 1e2, 1e-12)[0] == 1e-4
    assert P.discrepancy_lambda(solve, residual, 1e-4, 1e2, 1e9)[0] == 1e2


def test_gcv_degrees_of_freedom_match_the_trace_of_a_linear_estimator():
    """Tikhonov denoising ``x = y / (1 + lam)`` (inpainting with a full mask): ``df = n / (1 + lam)``.
    The probe gives ``||b||^2 / (1 + lam)`` exactly, with ``E||b||^2 = n``."""
    rng = np.random.default_rng(2)
    y = rng.standard_normal((32, 32)).astype(np.float32)
    op = Inpainting.create(np.ones((32, 32), np.float32))
    solve = lambda lam, data: C.cg_sense(op, data, C.CGSenseConfig(lam=lam, iterations=5))
    lam, result, table = P.gcv_lambda(solve, op, y, P.measured(op, y), 1e-2, 1e2)
    probe = [row["df"] * (1 + row["lam"]) for row in table]
    np.testing.assert_allclose(probe, probe[0], rtol=1e-3)
    assert probe[0] == pytest.approx(y.size, rel=4 * np.sqrt(2 / y.size))
    assert len(table) == P.GRID_POINTS + 2 and lam == min(table, key=lambda r: r["gcv"])["lam"]
    np.testing.assert_allclose(result.image, y / (1 + lam), rtol=1e-4)


def test_auto_records_gcv_and_reproduces_with_the_chosen_lam():
    case = sample_mri("shoulder", size=48, coils=4, acceleration=4, snr_db=25, seed=0)
    op = case.operator()
    result = C.tv(op, case.y, C.TVConfig(iterations=200))
    assert result.config["lam_rule"]["rule"] == "gcv" and len(result.config["lam_rule"]["table"]) == P.GRID_POINTS + 2
    again = C.tv(op, case.y, dataclasses.replace(C.TVConfig(iterations=200), lam=result.config["lam"]))
    np.testing.assert_allclose(again.image, result.image, atol=1e-6)


def test_discrepancy_meets_its_target_and_records_the_rule():
    case = sample_mri("shoulder", size=48, coils=4, acceleration=4, snr_db=25, seed=0)
    op = case.operator()
    result = C.tv(op, case.y, C.TVConfig(lam="discrepancy", iterations=200), sigma=case.sigma)
    rule = result.config["lam_rule"]
    assert rule["sigma_source"] == "given" and rule["sigma"] == pytest.approx(case.sigma)
    m = P.measured_count(op, case.y)
    assert m == int(np.asarray(case.mask).sum()) * 4
    assert rule["residual_ratio"] == pytest.approx(P.TAU, rel=0.05)
    residual = float(jnp.sum(jnp.abs(op(jnp.asarray(result.image)) - case.y) ** 2))
    assert residual / (m * case.sigma**2) == pytest.approx(rule["residual_ratio"], rel=1e-3)
    estimated = C.tv(op, case.y, C.TVConfig(lam="discrepancy", iterations=200))
    assert estimated.config["lam_rule"]["sigma_source"] == "estimated"


GRID = np.logspace(-5, -1.5, 15)


@pytest.mark.xla_optimized
@pytest.mark.parametrize(
    "sample, acceleration, snr_db, method",
    [
        ("shoulder", 4, 30, C.tv),
        ("shoulder", 8, 20, C.tv),
        ("head", 4, 30, C.tv),
        ("head", 8, 20, C.l1_wavelet),
        ("shoulder", 4, 30, C.cg_sense),
    ],
)
def test_auto_is_within_half_a_db_of_the_best_lam_of_a_grid(sample, acceleration, snr_db, method):
    case = sample_mri(sample, size=64, coils=8, acceleration=acceleration, snr_db=snr_db, seed=0)
    op = case.operator()
    scale = 1.0 / float(np.max(np.abs(np.asarray(op.adjoint(case.y)))))  # the pipeline's units
    y, x = case.y * scale, np.abs(case.x) * scale
    config = {C.tv: C.TVConfig(), C.l1_wavelet: C.L1WaveletConfig(), C.cg_sense: C.CGSenseConfig()}[method]
    grid = np.r_[0.0, np.logspace(-4, 0, 9)] if method is C.cg_sense else GRID
    best = max(float(psnr(np.abs(method(op, y, dataclasses.replace(config, lam=float(v))).image), ref=x)) for v in grid)
    auto = float(psnr(np.abs(method(op, y, config).image), ref=x))
    assert auto > best - 0.5, (auto, best)
