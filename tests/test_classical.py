"""Classical baselines against SigPy (same lambda, same case), closed forms and an independent
dual solver.

SigPy case: the bundled shoulder image at 96x96, 8 simulated coils, 4x VDRS, 30 dB SNR.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdip_jax.methods import classical as C
from sgdip_jax.methods.result import Result
from sgdip_jax.metrics import psnr
from sgdip_jax.operators import Inpainting, MultiCoilMRI, fft2c

sp = pytest.importorskip("sigpy")
mr = pytest.importorskip("sigpy.mri")
pywt = pytest.importorskip("pywt")

TV_LAM = 1e-3  # within the useful range of this case (best PSNR near 3e-4 for both methods)
WAVELET_LAM = 1e-3


@pytest.fixture(scope="module")
def case():
    from sgdip_jax.data.samples import sample_mri

    case = sample_mri(name="shoulder", size=96, coils=8, acceleration=4, snr_db=30, seed=0)
    x = np.asarray(case.x, np.complex64)
    return {
        "x": x,
        "y": np.asarray(case.y, np.complex64),
        "smaps": np.asarray(case.smaps, np.complex64),
        "mask": np.broadcast_to(np.asarray(case.mask, np.float32), x.shape).copy(),
        "op": case.operator(),
    }


def _sigpy_tv_objective(case, image, lam):
    """``1/2||A x - y||^2 + lam ||G x||_1`` with SigPy's own operators."""
    a = mr.linop.Sense(case["smaps"], weights=case["mask"])
    g = sp.linop.FiniteDifference(image.shape)
    return 0.5 * np.sum(np.abs(a(image) - case["y"]) ** 2) + lam * np.sum(np.abs(g(image)))


def _db(image, case):
    return float(psnr(image, ref=case["x"]))


# ----------------------------------------------------------------------------- SigPy comparisons


@pytest.mark.parametrize("lam, iters", [(0.0, 30), (0.05, 60)])
def test_cg_sense_matches_sigpy(case, lam, iters):
    ref = mr.app.SenseRecon(
        case["y"], case["smaps"], lamda=lam, weights=case["mask"], max_iter=iters, show_pbar=False
    ).run()
    ours = C.cg_sense(case["op"], case["y"], C.CGSenseConfig(lam=lam, iterations=iters), jax.random.PRNGKey(0))
    assert np.linalg.norm(ours.image - ref) / np.linalg.norm(ref) < 1e-3
    # the cheap objective CG records is the objective of its iterate
    residual = case["op"](ours.image) - case["y"]
    direct = 0.5 * np.sum(np.abs(residual) ** 2) + 0.5 * lam * np.sum(np.abs(ours.image) ** 2)
    assert ours.history["objective"][-1] == pytest.approx(float(direct), rel=1e-3)
    assert np.all(np.diff(ours.history["objective"]) <= 1e-5 * abs(ours.history["objective"][0]))


@pytest.mark.xla_optimized
def test_cg_sense_converges_and_stays_at_a_long_budget(case):
    """3000 iterations: CG reaches SigPy's converged solution and stays there (no drift, no NaN once
    the residual is at round-off; SigPy's own CG in complex64 reaches NaN by then, so its reference
    is taken at 300 iterations, where it has converged)."""
    lam = 0.01
    ref = mr.app.SenseRecon(
        case["y"], case["smaps"], lamda=lam, weights=case["mask"], max_iter=300, show_pbar=False
    ).run()
    ours = C.cg_sense(case["op"], case["y"], C.CGSenseConfig(lam=lam, iterations=3000), jax.random.PRNGKey(0))
    assert np.isfinite(ours.image).all()
    assert np.linalg.norm(ours.image - ref) / np.linalg.norm(ref) < 1e-3
    objective = ours.history["objective"]
    assert abs(objective[-1] - objective[300]) <= 1e-5 * abs(objective[0])


@pytest.mark.xla_optimized
def test_tv_matches_sigpy(case):
    # SigPy's default PDHG steps (sigma = 1, tau = 1/||[A; G]||^2) need several thousand iterations
    # here; steps with tau / sigma = 100 (sigma tau ||[A; G]||^2 < 1, ||[A; G]||^2 <= 9) converge
    # in a few hundred. Any valid steps give the same minimiser.
    ref = mr.app.TotalVariationRecon(
        case["y"],
        case["smaps"],
        TV_LAM,
        weights=case["mask"],
        max_iter=600,
        sigma=0.99 / 30,
        tau=0.99 * 10 / 3,
        show_pbar=False,
    ).run()
    ours = C.tv(case["op"], case["y"], C.TVConfig(lam=TV_LAM, iterations=600), target=case["x"])
    ref_db, ours_db = _db(ref, case), _db(ours.image, case)
    print(f"TV lam={TV_LAM}: ours {ours_db:.2f} dB, SigPy {ref_db:.2f} dB")
    assert abs(ours_db - ref_db) < 0.5
    assert ours_db > _db(C.zero_filled(case["op"], case["y"]).image, case) + 5
    obj_ours = _sigpy_tv_objective(case, ours.image, TV_LAM)
    obj_ref = _sigpy_tv_objective(case, ref, TV_LAM)
    assert obj_ours <= obj_ref * (1 + 2e-3)
    assert ours.history["objective"][-1] == pytest.approx(obj_ours, rel=1e-4)
    assert ours.history["psnr"][-1] == pytest.approx(ours_db, abs=1e-4)


def test_l1_wavelet_matches_sigpy(case):
    ref = mr.app.L1WaveletRecon(
        case["y"], case["smaps"], WAVELET_LAM, weights=case["mask"], max_iter=300, show_pbar=False
    ).run()
    ours = C.l1_wavelet(case["op"], case["y"], C.L1WaveletConfig(lam=WAVELET_LAM, iterations=300))
    ref_db, ours_db = _db(ref, case), _db(ours.image, case)
    print(f"L1-wavelet lam={WAVELET_LAM}: ours {ours_db:.2f} dB, SigPy {ref_db:.2f} dB")
    assert abs(ours_db - ref_db) < 0.5
    assert ours_db > _db(C.zero_filled(case["op"], case["y"]).image, case) + 5


def test_zero_filled_is_the_coil_combined_adjoint(case):
    result = C.zero_filled(case["op"], case["y"], target=case["x"])
    coil_images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(case["y"], axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    expected = np.sum(np.conj(case["smaps"]) * coil_images, axis=0)
    np.testing.assert_allclose(result.image, expected, atol=1e-5 * np.abs(expected).max())
    assert result.method == "zero-filled" and result.iterations == 0
    assert result.history["psnr"][0] == pytest.approx(_db(expected, case), abs=1e-3)


# ----------------------------------------------------------------------------- closed forms


def _grey(size=32):
    from skimage.data import camera
    from skimage.transform import resize

    return resize(camera()[100:356, 150:406] / 255.0, (size, size), anti_aliasing=True).astype(np.float32)


def _colour(size=32):
    from skimage.data import astronaut
    from skimage.transform import resize

    return resize(astronaut()[:256, 128:384] / 255.0, (size, size, 3), anti_aliasing=True).astype(np.float32)


def test_cg_inpainting_closed_form():
    rng = np.random.default_rng(0)
    mask = (rng.random((16, 16)) < 0.5).astype(np.float32)
    op = Inpainting.create(mask)
    y = mask * _grey(16)
    result = C.cg_sense(op, y, C.CGSenseConfig(lam=0.5, iterations=3))
    np.testing.assert_allclose(result.image, y / 1.5, atol=1e-6)


@pytest.mark.parametrize("name", ["haar", "db4"])
def test_l1_wavelet_denoising_closed_form(name):
    """A = unitary single-coil full sampling: the minimiser is W^H soft(W f, lam) (pywt)."""
    rng = np.random.default_rng(1)
    f = (_grey(32) * np.exp(1j * rng.uniform(0, 0.5, (32, 32)))).astype(np.complex64)
    op = MultiCoilMRI.create(np.ones((1, 32, 32), np.complex64), np.ones((32, 32), np.float32))
    lam = 0.05
    config = C.L1WaveletConfig(lam=lam, iterations=20, wavelet=name, levels=2)
    result = C.l1_wavelet(op, fft2c(jnp.asarray(f))[None], config)
    coeffs = pywt.wavedec2(f.astype(np.complex128), name, mode="periodization", level=2)
    arr, slices = pywt.coeffs_to_array(coeffs)
    shrunk = arr * np.maximum(1 - lam / np.maximum(np.abs(arr), 1e-30), 0)
    shrunk = pywt.array_to_coeffs(shrunk, slices, output_format="wavedec2")
    expected = pywt.waverec2(shrunk, name, mode="periodization")
    np.testing.assert_allclose(result.image, expected, atol=1e-5)


def _dual_tv_denoise(f, lam, axes, isotropic, iters=3000):
    """Independent solver: projected gradient on the dual of min 1/2||x-f||^2 + lam||G x||_1,
    max_{|q| <= lam} 1/2||f||^2 - 1/2||f - G^T q||^2 (NumPy, step 1/8). Returns the dual value."""

    def g(x):
        return np.stack([x - np.roll(x, 1, axis=a) for a in axes])

    def gt(q):
        return sum(q[i] - np.roll(q[i], -1, axis=a) for i, a in enumerate(axes))

    q = np.zeros((len(axes),) + f.shape)
    for _ in range(iters):
        q = q + g(f - gt(q)) / 8.0
        size = np.sqrt(np.sum(q**2, axis=0, keepdims=True)) if isotropic else np.abs(q)
        q = q / np.maximum(1.0, size / lam)
    return 0.5 * np.sum(f**2) - 0.5 * np.sum((f - gt(q)) ** 2)


def _tv_primal(x, f, lam, axes, isotropic):
    g = np.stack([x - np.roll(x, 1, axis=a) for a in axes])
    mag = np.sqrt(np.sum(g**2, axis=0)) if isotropic else np.abs(g)
    return 0.5 * np.sum((x - f) ** 2) + lam * np.sum(mag)


@pytest.mark.parametrize("isotropic", [False, True])
@pytest.mark.parametrize("colour", [False, True])
def test_tv_denoising_duality_gap(isotropic, colour):
    """Full-mask inpainting is denoising; the duality gap against an independent dual solution is ~0."""
    rng = np.random.default_rng(2)
    clean = _colour(24) if colour else _grey(24)
    f = (clean + 0.1 * rng.standard_normal(clean.shape)).astype(np.float32)
    op = Inpainting.create(np.ones(clean.shape[:2], np.float32), channels=3 if colour else None)
    lam = 0.08
    result = C.tv(op, f, C.TVConfig(lam=lam, iterations=600, isotropic=isotropic), target=clean)
    axes = (0, 1)
    primal = _tv_primal(result.image.astype(np.float64), f.astype(np.float64), lam, axes, isotropic)
    dual = _dual_tv_denoise(f.astype(np.float64), lam, axes, isotropic)
    assert primal - dual <= 2e-4 * primal
    assert result.history["objective"][-1] == pytest.approx(primal, rel=1e-4)
    assert result.history["psnr"][-1] > float(psnr(f, ref=clean)) + 3


@pytest.mark.parametrize("method", [C.tv, C.l1_wavelet])
def test_inpainting_colour_beats_masked_input(method):
    rng = np.random.default_rng(3)
    clean = _colour(30)  # 30 is not a multiple of 2**levels: the wavelet pads
    mask = (rng.random((30, 30)) < 0.5).astype(np.float32)
    op = Inpainting.create(mask, channels=3)
    y = op(jnp.asarray(clean))
    if method is C.tv:
        config = C.TVConfig(lam=0.02, iterations=300)
    else:
        config = C.L1WaveletConfig(lam=0.02, iterations=200, levels=2)
    result = method(op, y, config, target=clean)
    assert result.image.shape == clean.shape and result.image.dtype == np.float32
    assert result.history["psnr"][-1] > float(psnr(y, ref=clean)) + 8


# ----------------------------------------------------------------------------- API


def test_progress_chunks_match_one_scan():
    rng = np.random.default_rng(4)
    clean = _grey(16)
    op = Inpainting.create((rng.random((16, 16)) < 0.7).astype(np.float32))
    y = op(jnp.asarray(clean))
    config = C.TVConfig(lam=0.02, iterations=120)
    a = C.tv(op, y, config, target=clean)
    b = C.tv(op, y, config, target=clean, progress=True)
    assert len(b.history["objective"]) == 120 and len(b.history["psnr"]) == 120
    np.testing.assert_allclose(a.image, b.image, atol=1e-6)
    np.testing.assert_allclose(a.history["objective"], b.history["objective"], rtol=1e-6)


def test_best_lambda_picks_the_highest_psnr():
    rng = np.random.default_rng(5)
    clean = _grey(24)
    op = Inpainting.create(np.ones((24, 24), np.float32))
    y = (clean + 0.1 * rng.standard_normal(clean.shape)).astype(np.float32)
    lams = [1e-4, 0.05, 5.0]
    best, table = C.best_lambda(C.tv, op, y, clean, lams, C.TVConfig(iterations=200))
    assert [row["lam"] for row in table] == lams
    values = [row["psnr"] for row in table]
    assert best.config["lam"] == lams[int(np.argmax(values))] == 0.05
    assert max(values) == pytest.approx(float(psnr(best.image, ref=clean)), abs=1e-5)
    with pytest.raises(ValueError, match="method: expected one of"):
        C.best_lambda(C.zero_filled, op, y, clean, lams)


def test_result_fields_and_round_trip(tmp_path):
    op = Inpainting.create(np.ones((16, 16), np.float32))
    y = _grey(16)
    config = C.L1WaveletConfig(lam=0.01, iterations=5, wavelet="db2")
    result = C.l1_wavelet(op, y, config, jax.random.PRNGKey(7))
    assert result.method == "l1-wavelet" and result.iterations == 5 and result.seed == 7
    assert result.config == dataclasses.asdict(config)
    assert result.ema_image is result.image and "psnr" not in result.history
    assert result.history["objective"].shape == (5,)
    result.save(tmp_path / "r.npz")
    loaded = Result.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(loaded.image, result.image)
    assert loaded.config == result.config
    assert C.cg_sense(op, y, C.CGSenseConfig(iterations=2), 3).seed == 3


def test_errors_name_the_problem():
    op = Inpainting.create(np.ones((16, 16), np.float32))
    y = np.zeros((16, 16), np.float32)
    with pytest.raises(ValueError, match="config: expected TVConfig"):
        C.tv(op, y, C.CGSenseConfig())
    with pytest.raises(ValueError, match='TVConfig.lam: expected "auto", "discrepancy" or a finite number >= 0'):
        C.tv(op, y, C.TVConfig(lam=-1.0))
    with pytest.raises(ValueError, match="CGSenseConfig.iterations: expected an integer >= 1"):
        C.cg_sense(op, y, C.CGSenseConfig(iterations=0))
    with pytest.raises(ValueError, match="y: expected measurements of shape"):
        C.cg_sense(op, np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="target: expected shape"):
        C.zero_filled(op, y, target=np.zeros((8, 8)))
    with pytest.raises(ValueError, match="wavelet: expected one of"):
        C.l1_wavelet(op, y, C.L1WaveletConfig(wavelet="sym4"))


# ----------------------------------------------------------------------------- JAX transformations


def test_fixed_lam_solvers_trace_under_jit_grad_and_vmap():
    """With a numeric ``lam`` and no progress bar the solvers are JAX functions: ``jax.jit`` gives the
    eager images, ``jax.grad`` through CG-SENSE matches a central difference of the (quadratic, once
    converged) objective, and ``jax.vmap`` over problems with their own masks gives each one's image."""
    from sgdip_jax.data.samples import sample_mri

    cases = [sample_mri("shoulder", size=32, coils=4, acceleration=4, snr_db=30, seed=s) for s in (0, 1)]
    op, y = cases[0].operator(), jnp.asarray(cases[0].y)
    configs = {C.tv: C.TVConfig(lam=1e-3, iterations=20), C.l1_wavelet: C.L1WaveletConfig(lam=1e-3, iterations=10)}
    configs[C.cg_sense] = C.CGSenseConfig(lam=1e-2, iterations=10)
    for solver, config in configs.items():
        eager = solver(op, y, config).image
        np.testing.assert_allclose(jax.jit(lambda y, f=solver, c=config: f(op, y, c).image)(y), eager, atol=1e-5)

    converged = C.CGSenseConfig(lam=0.5, iterations=40)

    def energy(y):
        return jnp.sum(jnp.abs(C.cg_sense(op, y, converged).image) ** 2)

    direction = jnp.asarray(cases[1].y)
    h = 1e-2
    finite = (energy(y + h * direction) - energy(y - h * direction)) / (2 * h)
    grad = jax.grad(energy)(y)
    assert float(jnp.real(jnp.sum(grad * direction))) == pytest.approx(float(finite), rel=1e-3)

    ops = jax.tree.map(lambda *a: jnp.stack(a), *[c.operator() for c in cases])
    ys = jnp.stack([jnp.asarray(c.y) for c in cases])
    batched = jax.vmap(lambda op, y: C.tv(op, y, configs[C.tv]).image)(ops, ys)
    for i, c in enumerate(cases):
        np.testing.assert_allclose(batched[i], C.tv(c.operator(), c.y, configs[C.tv]).image, atol=1e-5)


@pytest.mark.xla_optimized
@pytest.mark.parametrize("factor", [1e-20, 1e20])
def test_results_do_not_depend_on_the_units_of_y(factor):
    """k-space in other units gives the same image in those units and the same lam rule's choice
    (in the units lam has: y's for TV and L1-wavelet, none for CG-SENSE's Tikhonov weight)."""
    from sgdip_jax.data.samples import sample_mri

    case = sample_mri("shoulder", size=32, coils=4, acceleration=4, snr_db=30, seed=0)
    for solver, power in ((C.tv, 1), (C.l1_wavelet, 1), (C.cg_sense, 0)):
        base = solver(case.operator(), case.y)
        scaled = solver(case.operator(), case.y * np.complex64(factor))
        assert np.isfinite(scaled.image).all() and np.isfinite(scaled.history["objective"]).all()
        error = np.linalg.norm(scaled.image / factor - base.image) / np.linalg.norm(base.image)
        assert error < 1e-4, solver.__name__
        assert scaled.config["lam"] == pytest.approx(base.config["lam"] * factor**power, rel=1e-5)
