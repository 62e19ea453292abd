"""Smoke test: each theory-validation script in analysis/ runs at its smallest configuration
(``--quick``) and writes a parseable JSON summary and the PNG figures it lists."""

import importlib.util
import json
from pathlib import Path

import jax
import matplotlib.image
import numpy as np
import pytest

ANALYSIS = Path(__file__).resolve().parent.parent / "analysis"


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"analysis_{name}", ANALYSIS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_outputs(out: Path, summary: dict):
    written = json.loads((out / "summary.json").read_text())
    assert written["figures"] == summary["figures"] and len(written["figures"]) >= 3
    for name in written["figures"]:
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 50
    return written


@pytest.mark.slow
def test_ntk_error_subspace(tmp_path):
    """The noiseless problems (the default); ``--snr`` runs the same analysis on noisy copies of one."""
    script = load_script("ntk_error_subspace")
    assert script.noisy_problems([20.0]) == {f"{script.NOISY}, 20 dB": (8, 4.0, 20.0)}
    summary = script.main(["--quick", "--out", str(tmp_path)])
    written = check_outputs(tmp_path, summary)
    ((label, problem),) = written["problems"].items()
    assert problem["snr_db"] is None and "dB" not in label
    for per_net in written["results"].values():
        for r in per_net.values():
            # The conjugate-residual limit fits the data better than the initial output does.
            assert 0.0 <= r["data_residual_kernel_limit"] < r["data_residual_predicted"][0]
            for key in ("null_fraction_trained", "effective_null_fraction_trained", "null_fraction_kernel_limit"):
                assert np.all((np.asarray(r[key]) >= 0.0) & (np.asarray(r[key]) <= 1.0))
            assert np.all(np.isfinite(r["gap"][1:])) and len(r["psnr_trained"]) == len(r["iterations"])


@pytest.mark.slow
def test_ntk_frequency_recovery(tmp_path):
    summary = load_script("ntk_frequency_recovery").main(["--quick", "--out", str(tmp_path)])
    written = check_outputs(tmp_path, summary)
    assert set(written["results"]) == {"unet2", "deep_decoder"}
    assert "sgdip" in written["results"]["unet2"] and "sgdip" not in written["results"]["deep_decoder"]
    for r in written["results"].values():
        assert r["coupling"] > 0
        run = r["dip"]
        assert len(run["recovered"]) == len(run["iterations"]) == len(run["psnr"])
        assert np.all(np.asarray(run["recovered"]) <= 1) and len(run["recovered_bands"][-1]) == 4


@pytest.mark.slow
def test_spectral_bias(tmp_path):
    summary = load_script("spectral_bias").main(["--quick", "--out", str(tmp_path)])
    written = check_outputs(tmp_path, summary)
    for name in ("K", "AKAt"):
        assert max(written["spectra"][name]["lanczos_rel_error"]) < 1e-2
    (snr,) = written["snr"].values()  # --quick: the first SNR only
    assert set(snr["dip"]) == set(snr["control"]) == {"dip", "sgdip"}
    assert len(written["spectra"]["AKAt"]["lanczos_mean_radius"]) == 3
    # A = I measures every entry, so its measured-entry errors are the errors over all of k-space.
    for r in snr["control"].values():
        np.testing.assert_allclose(r["measured_band_errors_final"], r["band_errors_final"], rtol=1e-4)
    assert "measured_bands_20dB.png" in written["figures"]


def test_measured_band_errors_and_halfway_iterations():
    script = load_script("spectral_bias")
    common = script.common
    problem = common.make_problem("8 coils, 4x", 16, 8, snr_db=20.0)
    x = problem.x
    errors = script.measured_band_errors(np.stack([np.zeros_like(x), 0.5 * x, x]), problem)
    np.testing.assert_allclose(errors, [[1.0] * 4, [0.5] * 4, [0.0] * 4], atol=1e-5)
    # Only the measured entries count: with one coil (A = M F) changing an unmeasured k-space location
    # changes nothing.
    problem = common.make_problem("1 coil, 4x", 16, 1)
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x), norm="ortho"))
    unmeasured = np.argwhere(problem.mask == 0)[0]
    kspace[tuple(unmeasured)] += 10.0
    changed = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace), norm="ortho"))
    np.testing.assert_allclose(script.measured_band_errors(changed[None], problem), 0.0, atol=1e-4)
    steps = np.array([10, 20, 30, 40])
    band_errors = np.array([[1.0, 1.0], [0.2, 0.9], [0.1, 0.5], [0.1, 0.2]])
    assert script.halfway_iterations(steps, band_errors) == [20, 30]  # targets 0.55 and 0.6


@pytest.mark.slow
def test_overfitting(tmp_path):
    variants = ["paper", "+ema0.95", "+selfval", "dip"]
    argv = ["--quick", "--out", str(tmp_path), "--variants", *variants]
    summary = load_script("overfitting").main(argv)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["figures"] == summary["figures"] == ["overfitting.png"]
    runs = {r["variant"]: r for r in written["runs"]}
    assert list(runs) == variants
    for r in runs.values():
        assert r["ema"]["drop"] == pytest.approx(r["ema"]["peak"] - r["ema"]["at_5x"])
        assert r["ema"]["drop"] >= 0 and r["raw"]["drop"] >= 0
    assert "reported" in runs["+selfval"] and "reported" not in runs["paper"]
    # The moving average is a read-out: the iterates do not depend on its weight (up to the rounding of
    # the rescaling, which the script reads off the moving average).
    lines = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    raw = {r["variant"]: r["raw_curve"] for r in lines}
    np.testing.assert_allclose(raw["paper"], raw["+ema0.95"], rtol=1e-6)
    assert raw["paper"] != raw["+selfval"]
    # A second call reuses the stored runs instead of running them again.
    assert load_script("overfitting").main(argv)["runs"] == written["runs"]


def test_tracked_frames_are_the_reported_run_s():
    """Through an extension the frames count on; a restart keeps only the restarted run's frames."""
    common = load_script("spectral_bias").common
    from sgdip_jax.config import NetworkConfig
    from sgdip_jax.methods import SGDIPConfig

    problem = common.make_problem("8 coils, 20 dB", 16, 8, snr_db=20.0)
    network = NetworkConfig(name="unet1", base=4)
    for restart_before in (0.0, 1.0):  # never / whenever the smallest held-out error is not the last step
        config = SGDIPConfig(network=network, iterations=20, chunk=5, extend=1.0, restart_before=restart_before)
        tracked = common.run_tracked("sgdip", problem, config, jax.random.PRNGKey(0))
        result = tracked.result
        np.testing.assert_array_equal(tracked.iterations, np.arange(5, result.iterations + 1, 5))
        assert len(result.history["psnr"]) == result.iterations
        np.testing.assert_allclose(
            common.psnr(tracked.ema[-1:], ref=problem.x)[0], result.history["psnr"][-1], atol=1e-3
        )
