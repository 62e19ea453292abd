"""Smoke tests of the benchmark scripts: ``--quick`` runs end to end in a subprocess within a time
bound, prints its markdown tables and writes its JSON. The numbers of the classical anchors are
recomputed here with NumPy FFTs and scikit-image (not the library) from the same problems."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import inpaint_biharmonic

from sgdip_jax.config import NetworkConfig
from sgdip_jax.data import sample_mri
from sgdip_jax.inputs import problem_from_case
from sgdip_jax.methods import SGDIPConfig, method_config, sgdip_task
from sgdip_jax.reconstruct import WARM_START

ROOT = Path(__file__).resolve().parent.parent
QUALITY = ROOT / "benchmarks" / "quality.py"
SPEED = ROOT / "benchmarks" / "speed.py"
SWEEP = ROOT / "benchmarks" / "sweep.py"
TINY_UNET = NetworkConfig(name="unet1", base=4)
TIME_BOUND = 300  # seconds per script run: a hang guard, far above a quick run


def load_script(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script executes
    spec.loader.exec_module(module)
    return module


q = load_script(QUALITY, "benchmark_quality")


def run_script(script, *args, cwd=ROOT):
    proc = subprocess.run(
        [sys.executable, str(script), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=TIME_BOUND
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One JAX compilation cache for the module, so the sweep's default variant reuses the quick run's programs."""
    return tmp_path_factory.mktemp("jax_cache")


def png_ok(path):
    image = matplotlib.image.imread(path)
    return image.ndim == 3 and min(image.shape[:2]) > 50


def zero_filled_numpy(y, smaps):
    """``sum_c conj(S_c) F^H y_c`` with NumPy's centred orthonormal inverse FFT."""
    coil_images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(y, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return np.sum(np.conj(smaps) * coil_images, axis=0)


@pytest.mark.xla_optimized
@pytest.mark.slow
def test_quality_quick(tmp_path, cache):
    out = tmp_path / "quality"
    stdout = run_script(QUALITY, "--quick", "--overfit", "--out", out, "--cache", cache)
    for title in ("## mri", "## inpainting", "## overfitting"):
        assert title in stdout
    data = json.loads((out / "quality.json").read_text())
    assert "--quick" in data["meta"]["command"] and data["meta"]["date"]
    mri = {r["method"]: r for r in data["mri"]}
    inpainting = {r["method"]: r for r in data["inpainting"]}
    assert list(mri) == list(q.MRI_METHODS) and list(inpainting) == list(q.INPAINT_METHODS)
    for section, rows in (("mri", mri), ("inpainting", inpainting)):
        for method, r in rows.items():
            assert f"| {r['problem']} | {method} | {r['psnr']:.2f} | {r['ssim']:.4f} |" in stdout
            assert math.isfinite(r["psnr"]) and -1.0 <= r["ssim"] <= 1.0
            if method in q.DIP_METHODS:
                history = r["psnr_history"]
                assert r["iterations"] == len(history) >= q.QUICK["iters"]  # self-validation may extend a run
                if not r["config"]["data_consistency"]:
                    # The reported image is the EMA after the last step, whose PSNR the engine recorded last.
                    assert r["psnr"] == pytest.approx(history[-1], abs=0.01)
                    assert r["oracle_psnr"] == max(history) >= r["psnr"] - 1e-4  # float32 rounding of the two PSNRs
                else:  # the reported image is the EMA after the final data-consistency step; the history is before it
                    assert r["oracle_psnr"] == max(history)
                assert history[r["oracle_iteration"] - 1] == r["oracle_psnr"]
            if method.endswith(q.ORACLE):
                best = max(r["lam_table"], key=lambda e: e["psnr"])
                assert r["lam"] == best["lam"] and r["psnr"] == pytest.approx(best["psnr"], abs=1e-3)
                assert (
                    r["psnr"] >= rows[method.removesuffix(q.ORACLE)]["psnr"] - 0.05
                )  # auto is not better than the grid's best
            elif method in q.CLASSICAL[section]:
                assert "auto: GCV" in r["setting"] and r["lam"] > 0

    # Zero-filled MRI and the inpainting anchors, recomputed with NumPy / scikit-image.
    size = q.QUICK["size"]
    problem = q.mri_problem("4x30", size, "motion", 0)
    reference = np.abs(problem.target)
    zf = np.abs(zero_filled_numpy(problem.y, np.asarray(problem.operator.smaps)))
    assert mri["zero-filled"]["psnr"] == pytest.approx(
        peak_signal_noise_ratio(reference, zf, data_range=reference.max()), abs=1e-3
    )
    assert mri["zero-filled"]["ssim"] == pytest.approx(
        structural_similarity(reference, zf, data_range=reference.max()), abs=1e-4
    )
    problem = q.inpainting_problem("camera", "p50", size, 0)
    assert abs(data["problems"][problem.label]["missing_fraction"] - 0.5) < 0.15
    image, mask = problem.target, np.asarray(problem.operator.mask)
    for method, estimate in (("masked", image * mask), ("biharmonic", inpaint_biharmonic(image * mask, mask == 0))):
        assert inpainting[method]["psnr"] == pytest.approx(
            peak_signal_noise_ratio(image, estimate, data_range=image.max()), abs=1e-3
        )

    # Overfitting runs: 3x the iterations, and the first 1x iterates are those of the table's run.
    overfit = {r["method"]: r for r in data["overfit"]}
    assert set(overfit) == {"dip", "sgdip"}
    for method, r in overfit.items():
        n = q.QUICK["iters"]
        assert len(r["psnr_history"]) == 3 * n and r["iterations_1x"] == n
        assert r["psnr_at_3x"] == r["psnr_history"][-1] and r["psnr_at_1x"] == r["psnr_history"][n - 1]
        np.testing.assert_allclose(r["psnr_history"][:n], mri[method]["psnr_history"][:n], atol=1e-3)
    for name in ("images_4x30", "psnr_4x30", "overfit_4x30", "images_camera_p50", "psnr_camera_p50"):
        assert png_ok(out / f"{name}.png"), name


@pytest.mark.slow
def test_sweep_records_every_run_resumes_and_tabulates(tmp_path):
    out = tmp_path / "sweep"
    argv = [
        "--size",
        "32",
        "--network",
        "unet1",
        "--base",
        "4",
        "--iters",
        "10",
        "--factor",
        "2",
        "--cases",
        "shoulder-4x30",
        "camera-p50",
        "--variants",
        "dip",
        "c0.5",
        "--out",
        out,
    ]
    stdout = run_script(SWEEP, *argv)
    rows = [json.loads(line) for line in (out / "sweep.jsonl").read_text().splitlines()]
    runs = [(v, c) for v in ("dip", "c0.5") for c in ("shoulder-4x30", "camera-p50")]
    assert [(r["variant"], r["case"]) for r in rows] == runs
    for r in rows:
        assert r["iters"] == 10 and r["factor"] == 2 and len(r["psnr_every_10"]) == 2
        assert r["peak"] >= max(r["psnr_T"], r["psnr_3T"]) - 1e-9
    assert rows[2]["config"]["noise_scale"] == 0.5 and rows[0]["method"] == "dip"
    assert rows[3]["config"]["z_init"] == "auto"  # the MRI defaults, z from the filled masked image
    assert "c0.5" in stdout
    again = run_script(SWEEP, *argv)  # finished runs are skipped
    assert len((out / "sweep.jsonl").read_text().splitlines()) == 4 and "c0.5" not in again
    table = run_script(SWEEP, "--size", "32", "--out", out, "--table")
    assert "| c0.5 (unet1/4) | shoulder-4x30 |" in table and "worst margin" in table and "| shoulder-4x30 | " in table
    assert "(biharmonic) |" in table and "tv " in table and "l1-wavelet " in table
    assert png_ok(out / "psnr_shoulder-4x30.png") and png_ok(out / "psnr_camera-p50.png")


def test_quality_refuses_to_overwrite(tmp_path):
    out = tmp_path / "q"
    out.mkdir()
    (out / "quality.json").write_text("{}")
    again = subprocess.run(
        [sys.executable, str(QUALITY), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIME_BOUND,
    )
    assert again.returncode == 2 and "exists" in again.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cases", "9x30"], "unknown"),
        (["--methods", "magic"], "unknown"),
        (["--images", "lena"], "unknown"),
    ],
)
def test_quality_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        q.parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_motion_reference_is_a_moved_copy():
    """The ref-dip reference is the true magnitude moved by the stated rotation and shift (checked
    against scikit-image's warp), with fresh phase and noise at the case's level."""
    from skimage.transform import AffineTransform, warp

    rows, cols = np.mgrid[:48, :48]
    x = np.exp(-((rows - 14) ** 2 + (cols - 34) ** 2) / 18.0) + np.exp(-((rows - 30) ** 2 + (cols - 12) ** 2) / 32.0)
    x = x.astype(np.complex64)
    ref = q.motion_reference(x, 0.0, 0)
    h, w = x.shape
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    # (col, row) coordinates with rows downward: rotate about the centre by -angle, then shift.
    motion = (
        AffineTransform(translation=-centre)
        + AffineTransform(rotation=-np.deg2rad(q.REF_ROTATION_DEG))
        + AffineTransform(translation=centre + [q.REF_SHIFT[1] * w, q.REF_SHIFT[0] * h])
    )
    expected = warp(np.abs(x), motion.inverse, order=3, mode="constant")
    assert np.max(np.abs(np.abs(ref) - expected)) < 0.01
    assert np.max(np.abs(np.abs(ref) - np.abs(x))) > 0.1  # the motion is visible at this tolerance
    assert np.std(np.angle(ref[np.abs(ref) > 0.5])) > 0.01  # its own phase
    noisy = q.motion_reference(x, 0.1, 0)
    assert np.std(noisy - ref) == pytest.approx(0.1, rel=0.1)


def test_lowres_reference_uses_only_the_centre_block():
    """Lines 14-17 are the contiguous sampled block around column 16; lines 2, 7 and 25 are not in it."""
    from sgdip_jax.data.case import Case

    rng = np.random.default_rng(1)
    shape, coils = (24, 32), 3
    x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    smaps = (rng.standard_normal((coils, *shape)) + 1j * rng.standard_normal((coils, *shape))).astype(np.complex64)
    smaps /= np.sqrt(np.sum(np.abs(smaps) ** 2, axis=0))
    lines = np.zeros(shape[1], np.float32)
    lines[[2, 7, 14, 15, 16, 17, 25]] = 1
    mask = np.broadcast_to(lines, shape).astype(np.float32)
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(smaps * x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    case = Case(y=(mask * kspace).astype(np.complex64), smaps=smaps, mask=mask)
    centre = np.zeros_like(lines)
    centre[14:18] = 1
    expected = zero_filled_numpy(centre * kspace, smaps)
    np.testing.assert_allclose(q.lowres_reference(case), expected, atol=1e-5)


GPU_SUITE = ROOT / "benchmarks" / "gpu_suite.py"


@pytest.mark.slow
def test_gpu_suite_dry_run_runs_every_part_and_reads_the_targets(tmp_path):
    """``gpu_suite.py --dry-run`` with a relative OUT: every part (speed at K = 4 in three precisions,
    cold, then warm, then K = 1; throughput; quality curves) exits 0 and leaves its rows in
    suite.json, one fresh process and empty cache per speed setting; only suite.json and suite.log
    are under OUT; the targets are read from the rows."""
    stdout = run_script(GPU_SUITE, "--dry-run", "--out", "dry", cwd=tmp_path)
    out = tmp_path / "dry"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == ["suite.json", "suite.log"]
    suite = json.loads((out / "suite.json").read_text())
    parts = suite["parts"]
    assert list(parts) == ["speed_paper", "speed_paper_warm", "speed_paper_k1", "throughput", "quality"]
    assert all(p["returncode"] == 0 and not p["stopped_at_cap"] and p["rows"] for p in parts.values()), stdout
    speed = parts["speed_paper"]["rows"]
    assert [r["setting"] for r in speed] == [f"16x16 C4 unet1/4 K4 {p}" for p in ("tf32", "bf16", "fp32")]
    for r in speed + parts["speed_paper_k1"]["rows"]:
        assert r["jax_error"] is None and r.get("torch_error") is None, r
        assert r["cache_entries_before"] == 0 and r["compile_s"] > 0 and r["jax_s_per_it"] > 0
        assert r["params"] > 0 and r["flops_per_it"] > 0
        assert (r.get("torch_s_per_it") is None) == (suite["runs"][0]["packages"]["torch"] is None)
    assert [r["setting"] for r in parts["speed_paper_k1"]["rows"]] == ["16x16 C4 unet1/4 K1 tf32"]
    (warm,) = parts["speed_paper_warm"]["rows"]
    assert warm["setting"] == speed[0]["setting"] and warm["cache_entries_before"] > 0
    assert warm["jax_error"] is None and "torch_s_per_it" not in warm  # --no-torch
    batches = parts["throughput"]["rows"]["batch_sizes"]
    assert [r["batch"] for r in batches] == [1, 2]
    # a default run: the budget, plus a pilot for each candidate beyond the first where self-validation chooses
    defaults = method_config("sgdip")
    operator = problem_from_case(sample_mri("shoulder", size=16, coils=8, acceleration=4.0, seed=0)).operator
    candidates = math.prod(len(v) for v in sgdip_task(defaults).choices(operator).values())
    steps = defaults.iterations + (candidates - 1) * defaults.pilot
    for r in batches:
        assert r["per_iteration_s"] > 0 and r["fixed_s"] >= 0 and r["run_steps"] == steps
        expected = 3600 * r["batch"] / (r["fixed_s"] + steps * r["per_iteration_s"])
        assert r["slices_per_hour"] == pytest.approx(expected, rel=1e-9)
    # a 16-slice volume: 16 default runs from scratch, or one and 15 warm-started slices of 0.1 x 1000 steps
    volume, (single,) = parts["throughput"]["rows"]["volume"], batches[:1]
    fixed, per_it = single["fixed_s"], single["per_iteration_s"]
    assert (volume["slices"], volume["warm_steps"]) == (16, math.ceil(WARM_START * defaults.iterations))
    assert volume["volumes_per_hour_cold"] == pytest.approx(3600 / (16 * (fixed + steps * per_it)), rel=1e-9)
    warm_volume_s = 16 * fixed + per_it * (steps + 15 * volume["warm_steps"])
    assert volume["volumes_per_hour_warm"] == pytest.approx(3600 / warm_volume_s, rel=1e-9)
    quality = parts["quality"]["rows"]
    assert [(r["case"], r["method"]) for r in quality["mri"]] == [("4x20", "tv")]
    assert [r["method"] for r in quality["overfit"]] == ["dip", "sgdip"]
    assert all(len(r["psnr_history"]) == 18 for r in quality["overfit"])
    targets = suite["targets"]
    assert targets["cold_start_s"]["value"] == pytest.approx(speed[0]["compile_s"] + speed[0]["jax_s_per_it"])
    assert targets["warm_start_s"]["value"] == pytest.approx(warm["compile_s"] + warm["jax_s_per_it"])
    assert targets["s_for_4000_iterations_K4_tf32"]["value"] > 0 and "ratio_to_torch_K4_fp32" in targets
    assert suite["runs"][0]["packages"]["jax"] and suite["runs"][0]["device"]["backend"] == "cpu"
    assert "cold_start_s" in stdout and "===== quality: exit 0" in (out / "suite.log").read_text()


def test_gpu_suite_stops_a_part_at_its_cap_and_a_rerun_keeps_the_other_parts(tmp_path):
    def suite(*argv):
        argv = [sys.executable, str(GPU_SUITE), "--dry-run", "--out", str(out), *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIME_BOUND)

    out = tmp_path / "capped"
    proc = suite("--parts", "quality", "throughput", "--cap", "quality=1", "--cap", "throughput=1")
    assert proc.returncode == 1
    parts = json.loads((out / "suite.json").read_text())["parts"]
    assert list(parts) == ["quality", "throughput"]
    assert all(p["stopped_at_cap"] and p["returncode"] != 0 and p["wall_s"] < 10 for p in parts.values())
    assert "stopped at its cap" in proc.stdout
    skipped = suite("--parts", "quality", "--budget", "5")  # less of the budget left than a part needs
    assert skipped.returncode == 1 and "quality: skipped" in skipped.stdout
    again = suite("--parts", "throughput", "--cap", "throughput=1")
    data = json.loads((out / "suite.json").read_text())
    assert len(data["runs"]) == 3 and "budget left" in data["runs"][1]["skipped"]["quality"]
    assert data["parts"]["quality"]["run"] == 0 and data["parts"]["throughput"]["run"] == 2  # kept, replaced
    assert again.returncode == 1 and sorted(p.name for p in out.iterdir()) == ["suite.json", "suite.log"]


def test_distribution_shift_runs_the_chosen_cases_and_refuses_unknown_ones(tmp_path, capsys):
    """``--cases`` picks cases of any group by their table name; an unknown case or method stops
    the script with a message naming it (argparse's exit status 2) before any reconstruction."""
    ds = load_script(ROOT / "benchmarks" / "distribution_shift.py", "benchmark_distribution_shift")
    out = tmp_path / "ds.json"
    ds.main(
        ["--size", "32", "--methods", "zero-filled", "--cases", "shoulder-4x30", "shoulder-12x30", "--out", str(out)]
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(r["group"], r["case"], r["acceleration"], r["snr_db"]) for r in rows] == [
        ("out of distribution", "shoulder", 4, 30),
        ("untrained condition", "shoulder", 12, 30),
    ]
    assert all(math.isfinite(r["metrics"]["zero-filled"]["psnr"]) for r in rows)
    for argv, message in (
        (["--cases", "shoulder-5x30"], "no case shoulder-5x30; the cases are brain-axial-"),
        (["--methods", "zero-filed"], "invalid choice: 'zero-filed'"),
    ):
        with pytest.raises(SystemExit) as exit_:
            ds.main(["--size", "32", *argv, "--out", str(tmp_path / "bad.json")])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "bad.json").exists()


def test_final_image_draw_mean_and_data_consistency():
    """``draw_mean`` of a linear network is its value at the mean input, ``2 (z + c max|z| / 2)`` for
    uniform noise (standard error 2 c max|z| / sqrt(12 N)); on an inpainting run the columns after
    the data-consistency step hold the known pixels exactly and the others differ from them."""
    fc = load_script(ROOT / "benchmarks" / "data_consistency.py", "benchmark_final_image")
    z = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 8, 8, 2)), jnp.float32)
    calls = []

    def linear(params, net_state, x):
        calls.append(x.shape[0])
        return 2.0 * x, net_state

    config = SGDIPConfig(noise_scale=0.5)
    mean = fc.draw_mean(linear, None, None, z, config, draws=4096, batch=1000, key=jax.random.PRNGKey(0))
    assert calls == [1000] * 5  # ceil(4096 / 1000) passes of the batch size
    expected = 2.0 * (z[0] + 0.25 * jnp.max(jnp.abs(z)))
    np.testing.assert_allclose(mean, expected, atol=4 * 2 * 0.5 / np.sqrt(12 * 5000))

    case = fc.make_case("camera-p50", 32, 0)
    images = fc.final_images(case, SGDIPConfig(network=TINY_UNET, iterations=3, data_consistency=False), 4, 2, 0)
    assert list(images) == list(fc.COLUMNS)
    known = np.asarray(case.operator.mask) != 0
    for column, image in images.items():
        kept = np.allclose(np.asarray(image)[known], np.asarray(case.y)[known], atol=1e-6)
        assert kept == column.endswith("DC"), column


def test_noise_weighted_data_consistency_interpolates_between_none_and_the_hard_step():
    """``sigma = 0``: every ring's Wiener weight is 1, the hard step; ``sigma`` above every ring's
    residual: weight 0, ``x`` kept; in between, rings whose residual power exceeds ``sigma^2`` move."""
    fc = load_script(ROOT / "benchmarks" / "data_consistency.py", "benchmark_final_image")
    case = fc.make_case("shoulder-4x20", 32, 0)
    op, y = case.operator, jnp.asarray(case.y)
    x = jnp.asarray(case.reference, jnp.complex64) * 0.9
    np.testing.assert_allclose(fc.weighted_data_consistency(op, x, y, 0.0), fc.data_consistency(op, x, y), atol=1e-5)
    np.testing.assert_allclose(fc.weighted_data_consistency(op, x, y, 1e3), x, atol=1e-6)
    r = np.abs(np.asarray(y - op(x))) ** 2
    middle = float(np.sqrt(np.median(r[..., np.broadcast_to(np.asarray(op.mask) != 0, r.shape[-2:])])))
    out = fc.weighted_data_consistency(op, x, y, middle)
    assert 0 < np.linalg.norm(out - x) < np.linalg.norm(fc.data_consistency(op, x, y) - x)


def test_validation_set_reference_is_a_neighbouring_slice_never_the_target():
    from sgdip_jax.data.brain import brain_slices, read_volume, split_indices, usable_slices

    v = load_script(ROOT / "benchmarks" / "validation_set.py", "benchmark_validation_set")
    volume = read_volume()
    held = split_indices(usable_slices(volume, "axial"), "val")
    images, where = brain_slices("val", 24, ("axial",), volume=volume)
    middle = [w["slice"] for w in where].index(int(held[len(held) // 2]))
    target = v.IMAGES["mni-axial-a"](24)
    np.testing.assert_array_equal(target, images[middle])  # the open set's image, as before
    np.testing.assert_array_equal(v.prior_slice("mni-axial-a", 1, 24), images[middle + 1])
    for image, offset in (("abdomen", 1), ("mni-axial-a", 0)):
        with pytest.raises(ValueError, match="ref-dip"):
            v.prior_slice(image, offset, 24)
    row = v.run_case("mni-axial-a", 24, 4.0, 30.0, 0, "ref-dip", base=4, prior_offset=3)
    assert row["method"] == "ref-dip+3mm" and math.isfinite(row["psnr"])
    rows = [row, *({**row, "method": m, "psnr": p} for m, p in (("tv", 20.0), ("sgdip", 22.0)))]
    assert f"self-guided DIP over ref-dip+3mm: mean {22.0 - row['psnr']:+.2f} dB" in v.ref_table(rows)
