"""The ``sgdip`` command: every input kind and method on tiny inputs, outputs, errors, config files,
safe output directories, Ctrl-C and ``--help``.

Most runs call ``main(argv)`` in-process (one JAX start-up); a few run the real command in a
subprocess. DIP runs use a one-level U-Net of width 4 on 32x32 images for a handful of iterations.
"""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import h5py
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ENDLESS_DIP, SIGINT, signal_during_run
from PIL import Image
from pydicom.data import get_testdata_file

from sgdip_jax.cli import build_parser, main
from sgdip_jax.data import read_fastmri, sample_image, sample_mri, save_case, write_fastmri
from sgdip_jax.metrics import center_crop, evaluate
from sgdip_jax.operators import fft2c
from sgdip_jax.operators.coils import birdcage_maps

TINY = ["--network", "unet1", "--width", "4", "--iters", "5", "--quiet"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny inputs of every kind: case .npz, fastMRI-layout .h5 (3 slices, 4 coils, 2x readout
    oversampling), DICOM (pydicom's 64x64 MR_small), colour PNG."""
    d = tmp_path_factory.mktemp("inputs")
    case = sample_mri("small", size=32, coils=4, acceleration=4.0, snr_db=30.0, seed=0)
    save_case(d / "case.npz", case)
    np.save(d / "x.npy", case.x)

    # fully sampled slices (different phase), 2x readout oversampling: the 64x64 shoulder image sits
    # in the middle of a 128-row field of view, as fastMRI's 320-row images in 640-row k-space
    smaps = birdcage_maps(4, (128, 64))
    np.save(d / "maps.npy", smaps)
    kspace = []
    for seed in range(3):
        x = sample_mri("shoulder", size=64, coils=1, acceleration=1.0, center_fraction=0.0, seed=seed).x
        kspace.append(np.asarray(fft2c(jnp.asarray(smaps) * np.pad(x, ((32, 32), (0, 0))))))
    write_fastmri(d / "vol.h5", np.stack(kspace), recon_size=(48, 48))

    im = (sample_image("astronaut", 32) * 255).round().astype(np.uint8)
    Image.fromarray(im).save(d / "img.png")
    return {
        "case": d / "case.npz",
        "x": d / "x.npy",
        "h5": d / "vol.h5",
        "maps": d / "maps.npy",
        "dicom": get_testdata_file("MR_small.dcm"),
        "png": d / "img.png",
    }


def run(argv, capsys=None):
    rc = main([str(a) for a in argv])
    return (rc, capsys.readouterr()) if capsys else rc


def load_metrics(out):
    return json.loads((out / "metrics.json").read_text())


def check_common_outputs(out, method):
    m = load_metrics(out)
    assert m["method"] == method and not m["interrupted"]
    assert {"jax", "platform", "wall_time", "iterations", "stop_iteration", "input_kind"} <= set(m)
    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["method"] == method and method in cfg
    assert (out / "panel.png").read_bytes().startswith(PNG_MAGIC)
    return m, cfg


# ------------------------------------------------------------------------------------------ inputs


@pytest.mark.parametrize("method", ["zero-filled", "cg-sense", "tv", "l1-wavelet", "dip", "ref-dip"])
def test_case_every_method(files, tmp_path, method):
    out = tmp_path / "out"
    extra = []
    if method == "ref-dip":  # reference-guided DIP with a reference image resampled from 64x64, and ES-WMV
        extra = [
            "--reference",
            files["dicom"],
            "--iters",
            "200",
            "--early-stopping",
            "--set",
            "chunk=5",
            "--set",
            "early_stopping.window=3",
            "--set",
            "early_stopping.patience=2",
        ]
    assert run(["reconstruct", files["case"], "--method", method, "--out", out, *TINY, *extra]) == 0
    m, cfg = check_common_outputs(out, method)
    assert m["input_kind"] == "case" and m["simulated"] is True
    with np.load(out / "recon.npz") as z:
        image, ref, zf = z["image"], z["reference"], z["zero_filled"]
        assert image.shape == (32, 32) and np.iscomplexobj(image)
        assert np.allclose(z["magnitude"], np.abs(image))
        if method in ("dip", "ref-dip"):  # the per-pixel spread of the averaged outputs
            spread = z["uncertainty"]
            assert spread.shape == image.shape and np.isrealobj(spread) and np.all(np.isfinite(spread))
            assert spread.min() >= 0 and spread.max() > 0
        else:
            assert "uncertainty" not in z
    # metrics.json holds exactly what the metrics module says of the saved images
    for key, value in evaluate(image, ref=ref).items():
        assert m["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6)
    assert m["zero_filled_metrics"]["psnr"] == pytest.approx(evaluate(zf, ref=ref)["psnr"], rel=1e-5)
    history = (out / "history.csv").read_text().splitlines()
    if method in ("dip", "ref-dip"):
        assert len(history) == 1 + m["iterations"] and history[0].startswith("iteration,")
        assert cfg[method]["network"] == {"name": "unet1", "base": 4, "weight_init": "normal002", "options": []}
        assert (out / "psnr.png").read_bytes().startswith(PNG_MAGIC)
    if method == "dip":
        assert m["iterations"] == 5 and m["stop_iteration"] is None
    if method == "ref-dip":  # detection triggered, the run ended after that chunk, its image is reported
        assert cfg[method]["early_stopping"]["enabled"] is True and cfg[method]["early_stopping"]["stop"] is True
        assert m["stop_iteration"] is not None and m["stop_iteration"] < m["iterations"] < 200
        assert m["iterations"] % 5 == 0
        with np.load(out / "recon.npz") as z:
            assert np.array_equal(z["image"], z["stop_image"])
    if method == "cg-sense":  # a real reconstruction beats zero-filling on 4x data
        assert m["metrics"]["psnr"] > m["zero_filled_metrics"]["psnr"] + 1.0
    if method in ("cg-sense", "tv", "l1-wavelet"):  # the lam the rule chose, beside the requested "auto"
        assert cfg[method]["lam"] == "auto" and m["chosen"]["lam"] > 0
        assert f"lam = {m['chosen']['lam']:.4g}" in (out / "config.toml").read_text()


def test_sgdip_records_what_self_validation_chose(files, tmp_path):
    """metrics.json and the head of config.toml hold the chosen noise scale (inpainting; MRI: the
    preset, or the scale its restart rule chose), the stopping iteration and z_init's preset, the
    validation curve is in history.csv, and config.toml still reruns the requested job."""
    out = tmp_path / "out"
    assert run(["reconstruct", files["png"], "--method", "sgdip", "--out", out, *TINY, "--set", "pilot=2"]) == 0
    m, cfg = check_common_outputs(out, "sgdip")
    chosen, selection = m["chosen"], m["selection"]
    assert cfg["sgdip"]["noise_scale"] == "auto" and chosen["noise_scale"] == selection["chosen"]["noise_scale"]
    assert selection["requested"] == {"noise_scale": "auto"} and len(selection["pilot_validation"]) == 3
    assert m["held_out_error"] == pytest.approx(selection["validation_error"])
    text = (out / "config.toml").read_text()
    assert f"noise_scale = {chosen['noise_scale']:.4g}" in text and f"iteration = {chosen['iteration']}" in text
    assert (out / "history.csv").read_text().splitlines()[0].count("val") == 1
    assert chosen["z_init"] == "filled" and "z_init = filled" in text  # inpainting's preset input
    mri = tmp_path / "mri"
    assert run(["reconstruct", files["case"], "--method", "sgdip", "--out", mri, *TINY]) == 0
    m, cfg = check_common_outputs(mri, "sgdip")
    assert cfg["sgdip"]["z_init"] == "auto" and m["chosen"]["z_init"] == "zero_filled"
    # the preset, or the larger scale where self-validation stopped the preset's run early
    first_stop, selection = m["selection"]["first_stop"], m["selection"]
    scale = 0.5 if 0 <= first_stop < selection["restart_before"] else 0.25
    assert m["chosen"]["noise_scale"] == selection["chosen"]["noise_scale"] == scale
    assert m["chosen"]["iteration"] == selection["iteration"]
    assert f"noise_scale = {scale:g}" in (mri / "config.toml").read_text()


def test_fastmri_volume_against_reconstruction_rss(files, tmp_path):
    """The fastMRI path: all slices, readout crop 128 -> 64 rows, retrospective 2x mask with 24 centre
    lines, ESPIRiT maps from those lines, metrics against the file's 48x48 reconstruction_rss."""
    out = tmp_path / "vol"
    args = [
        "reconstruct",
        files["h5"],
        "--slices",
        "all",
        "--crop",
        "64",
        "--acceleration",
        "2",
        "--center-fraction",
        "0.375",
        "--method",
        "cg-sense",
        "--quiet",
    ]
    assert run([*args, "--out", out]) == 0
    m = load_metrics(out)
    assert m["input_kind"] == "fastmri" and m["simulated"] is False and len(m["slices"]) == 3
    rss_ref = read_fastmri(files["h5"]).reconstruction_rss
    with h5py.File(out / "recon.h5", "r") as f:
        recon = f["reconstruction"][()]
        assert recon.shape == (3, 48, 48) and f["image"].shape == (3, 64, 64)
        assert np.array_equal(recon, center_crop(np.abs(f["image"][()]), 48))
        assert list(f.attrs["slices"]) == [0, 1, 2] and f.attrs["method"] == "cg-sense"
        assert f["smaps"].ndim == 4 and f["smaps"].shape[0] == 3 and f["smaps"].shape[-2:] == (64, 64)
    # fastMRI's evaluate.py reads the prediction named like each target file: its loop, reimplemented
    (target_dir := tmp_path / "targets").mkdir()
    (target_dir / Path(files["h5"]).name).symlink_to(Path(files["h5"]).absolute())
    for target_file in target_dir.iterdir():
        with h5py.File(target_file, "r") as target, h5py.File(out / target_file.name, "r") as recons:
            gt, pred = target["reconstruction_rss"][()], recons["reconstruction"][()]
            assert pred.shape == gt.shape
            assert (out / "recon.h5").resolve() == (out / target_file.name).resolve()
    # the same run with the true coil maps (given uncropped, 128 rows; the CLI crops them like the data)
    assert run([*args, "--smaps", f"file:{files['maps']}", "--out", tmp_path / "true"]) == 0
    true_maps = load_metrics(tmp_path / "true")
    for s, entry in enumerate(m["slices"]):
        assert entry["problem"]["metric_crop"] == [48, 48] and entry["problem"]["smaps"] == "espirit"
        assert entry["problem"]["reference"] == "reconstruction_rss"
        assert entry["metrics"]["psnr"] == pytest.approx(evaluate(recon[s], ref=rss_ref[s])["psnr"], rel=1e-5)
        assert entry["metrics"]["psnr"] > entry["zero_filled_metrics"]["psnr"] + 2.0
        assert entry["metrics"]["psnr"] > true_maps["slices"][s]["metrics"]["psnr"] - 2.0
        assert (out / f"slice_{s:03d}" / "panel.png").read_bytes().startswith(PNG_MAGIC)
        assert (out / f"slice_{s:03d}" / "coils.png").read_bytes().startswith(PNG_MAGIC)
    assert (out / "montage.png").read_bytes().startswith(PNG_MAGIC)
    # volume metrics follow fastMRI: one data range (the volume maximum) over all slices
    vol = np.moveaxis(recon, 0, -1), np.moveaxis(rss_ref, 0, -1)
    assert m["metrics"]["psnr"] == pytest.approx(evaluate(vol[0], ref=vol[1])["psnr"], rel=1e-5)


def test_fastmri_single_slice_own_mask(files, tmp_path):
    """An undersampled file with its own mask: the mask is used as stored (no retrospective mask)."""
    full = read_fastmri(files["h5"], slice=1)
    lines = np.zeros(64, np.float32)
    lines[28:36] = 1
    lines[::3] = 1
    path = tmp_path / "under.h5"
    write_fastmri(path, full.kspace * lines, mask=lines, reconstruction_rss=full.reconstruction_rss)
    out = tmp_path / "o"
    assert (
        run(["reconstruct", path, "--slice", "0", "--crop", "64", "--method", "zero-filled", "--out", out, "--quiet"])
        == 0
    )
    m = load_metrics(out)
    assert m["problem"]["acceleration"] == pytest.approx(64 / lines.sum())
    assert m["problem"]["mask"] == "file"
    with h5py.File(out / "recon.h5", "r") as f:
        assert f["reconstruction"].shape == (1, 48, 48)


def test_dicom_is_simulated(files, tmp_path):
    out = tmp_path / "dcm"
    assert (
        run(
            [
                "reconstruct",
                files["dicom"],
                "--size",
                "32",
                "--coils",
                "4",
                "--method",
                "cg-sense",
                "--out",
                out,
                "--quiet",
            ]
        )
        == 0
    )
    m, _ = check_common_outputs(out, "cg-sense")
    assert m["input_kind"] == "dicom" and m["simulated"] is True
    assert m["problem"]["coils"] == 4 and m["problem"]["image_shape"] == [32, 32]
    assert m["metrics"]["psnr"] > m["zero_filled_metrics"]["psnr"]
    # the acquisition is simulated exactly as the bundled sample built from the same DICOM file
    case = sample_mri("small", size=32, coils=4, acceleration=4.0, snr_db=30.0, seed=0)
    with np.load(out / "recon.npz") as z:
        assert np.allclose(z["reference"], case.x, atol=1e-6)
        assert np.allclose(z["zero_filled"], case.operator().adjoint(case.y), atol=1e-5)


def test_png_inpainting(files, tmp_path):
    out = tmp_path / "png"
    assert run(["reconstruct", files["png"], "--mask", "bernoulli:0.5", "--method", "tv", "--out", out, "--quiet"]) == 0
    m, cfg = check_common_outputs(out, "tv")
    assert m["input_kind"] == "image" and m["simulated"] is False
    assert m["problem"]["known_fraction"] == pytest.approx(0.5, abs=0.1)
    with np.load(out / "recon.npz") as z:
        assert z["image"].shape == (32, 32, 3) and z["image"].dtype == np.float32
        assert "magnitude" not in z.files
        known = z["zero_filled"] != 0  # the masked input keeps the known pixels, the rest is zero
        assert np.allclose(z["zero_filled"][known], z["reference"][known])
    assert cfg["mask"] == "bernoulli:0.5"
    assert m["metrics"]["psnr"] > m["zero_filled_metrics"]["psnr"] + 3.0


# ------------------------------------------------------------------------------------------ outputs


def snapshot(d):
    return {p.relative_to(d): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


def test_existing_output_refused_then_force(files, tmp_path, capsys):
    out = tmp_path / "d"
    args = [
        "reconstruct",
        files["case"],
        "--method",
        "sgdip",
        "--iters",
        "200",
        "--out",
        out,
        "--network",
        "unet1",
        "--width",
        "4",
        "--quiet",
    ]
    assert run(args) == 0
    m = load_metrics(out)
    assert m["iterations"] >= 200 and m["metrics"]["psnr"] > 0  # self-validation may extend the run
    before = snapshot(out)
    rc, cap = run(args, capsys)
    assert rc == 2 and "exists" in cap.err and cap.err.startswith("sgdip: error:")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no staging directory left behind
    assert run(["reconstruct", files["case"], "--method", "zero-filled", "--out", out, "--force", "--quiet"]) == 0
    assert load_metrics(out)["method"] == "zero-filled"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_config_file_and_cli_override(files, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('method = "tv"\niters = 9\n\n[tv]\nlam = 0.002\nisotropic = true\n')
    out = tmp_path / "c"
    assert run(["reconstruct", files["case"], "--config", cfg, "--iters", "4", "--out", out, "--quiet"]) == 0
    resolved = tomllib.loads((out / "config.toml").read_text())
    assert resolved["method"] == "tv"
    assert resolved["tv"] == {"lam": 0.002, "iterations": 4, "isotropic": True}
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 4
    # the written config reproduces the run, and YAML works the same way
    out2 = tmp_path / "c2"
    assert run(["reconstruct", files["case"], "--config", out / "config.toml", "--out", out2, "--quiet"]) == 0
    with np.load(out / "recon.npz") as a, np.load(out2 / "recon.npz") as b:
        assert np.array_equal(a["image"], b["image"])
    yml = tmp_path / "run.yaml"
    yml.write_text("method: cg-sense\ncg-sense:\n  iterations: 3\n")
    out3 = tmp_path / "c3"
    assert run(["reconstruct", files["case"], "--config", yml, "--set", "lam=0.01", "--out", out3, "--quiet"]) == 0
    assert tomllib.loads((out3 / "config.toml").read_text())["cg-sense"] == {"lam": 0.01, "iterations": 3}


# ------------------------------------------------------------------------------------------ errors


def _bad_files(tmp_path, files):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["images"] = np.zeros((2, 4, 4))
    (tmp_path / "text.h5").write_text("not hdf5")
    case = dict(np.load(files["case"]))
    np.savez(tmp_path / "nokey.npz", y=case["y"], mask=case["mask"])
    np.savez(tmp_path / "shape.npz", **{**case, "smaps": case["smaps"][:, :16]})
    y = case["y"].copy()
    y[0, 0, 16] = np.nan
    np.savez(tmp_path / "nan.npz", **{**case, "y": y})
    np.savez(tmp_path / "empty.npz", **{**case, "mask": np.zeros_like(case["mask"]), "y": 0 * case["y"]})
    np.save(tmp_path / "zeros.npy", np.zeros((32, 32)))
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "keep.txt").write_text("x")
    (tmp_path / "bad.toml").write_text("itres = 3\n")


BAD = [
    (["reconstruct", "{t}/missing.npz"], "no such file"),
    (["reconstruct", "{t}/foreign.h5"], "missing dataset 'kspace'"),
    (["reconstruct", "{t}/text.h5"], "not an HDF5 file"),
    (["reconstruct", "{t}/nokey.npz"], "missing key(s) ['smaps']"),
    (["reconstruct", "{t}/shape.npz"], "field 'smaps' must match"),
    (["reconstruct", "{t}/nan.npz"], "NaN"),
    (["reconstruct", "{t}/empty.npz"], "all zero"),
    (["reconstruct", "{png}", "--mask", "{t}/zeros.npy"], "empty"),
    (["reconstruct", "{case}", "--method", "magic"], "unknown method 'magic'"),
    (["reconstruct", "{case}", "--method", "dip", "--network", "resnet"], "unknown network 'resnet'"),
    (["reconstruct", "{case}", "--method", "ref-dip"], "needs a reference image (--reference FILE)"),
    (["reconstruct", "{case}", "--method", "dip", "--set", "alhpa=1"], "unknown config key 'dip.alhpa'"),
    (["reconstruct", "{case}", "--config", "{t}/bad.toml"], "unknown key 'itres'"),
    (["reconstruct", "{case}", "--iters", "many"], "--iters"),
    (["reconstruct", "{case}", "--out", "{t}/occupied"], "exists"),
    (["reconstruct", "{h5}", "--slice", "7"], "slice 7 out of range"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_one_line_exit_2(files, tmp_path, capsys, argv, message):
    _bad_files(tmp_path, files)
    argv = [a.format(t=tmp_path, case=files["case"], png=files["png"], h5=files["h5"]) for a in argv]
    rc, cap = run([*argv, "--quiet"] if "--out" in argv else [*argv, "--out", tmp_path / "o", "--quiet"], capsys)
    assert rc == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sgdip: error:") and message in lines[0], cap.err
    assert not (tmp_path / "o").exists()
    assert (tmp_path / "occupied" / "keep.txt").read_text() == "x"


# ------------------------------------------------------------------------------------------ help


@pytest.mark.parametrize("command", ["reconstruct", "demo", "info"])
def test_help_explains_every_option_with_default(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and isinstance(a.choices, dict)).choices[
        command
    ]
    options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    blocks = {}
    for line in text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            blocks[current] = line
        elif line.startswith("   ") and blocks:
            blocks[current] += " " + line.strip()
    for action in options:
        flag = action.option_strings[-1]
        assert flag in blocks, f"{flag} missing from --help"
        assert "default" in blocks[flag], f"{flag} help does not state its default: {blocks[flag]}"


# ------------------------------------------------------------------------------------------ processes


def test_subprocess_module_and_script(files, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = tmp_path / "p"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sgdip_jax.cli",
            "reconstruct",
            str(files["case"]),
            "--method",
            "zero-filled",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert load_metrics(out)["method"] == "zero-filled"
    proc = subprocess.run(
        [sys.executable, "-m", "sgdip_jax.cli", "reconstruct", str(tmp_path / "nope.h5")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"sgdip: error: {tmp_path / 'nope.h5'}: no such file"
    proc = subprocess.run(["sgdip", "info"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "jax" in proc.stdout and "MR2_UNCR.dcm" in proc.stdout
    head = next(line for line in proc.stdout.splitlines() if "MR 'head'" in line)
    assert "not found" not in head and head.rstrip().endswith("s1045.ima.gz")  # matplotlib's, not pydicom-data's


def test_ctrl_c_saves_partial_result(files, tmp_path):
    """SIGINT during a long DIP run: the run stops after its current chunk, the EMA image and the
    history so far are saved, metrics.json says interrupted, exit status 130."""
    out = tmp_path / "int"
    proc, err, _ = signal_during_run(  # the log line "case.npz: dip" is printed just before the run starts
        ["reconstruct", files["case"], *ENDLESS_DIP, "--out", out],
        "case.npz: dip",
        SIGINT,
        2.0,
    )
    assert proc.returncode == 130, err
    m = load_metrics(out)
    assert m["interrupted"] is True and 0 < m["iterations"] < 1000000 and m["iterations"] % 10 == 0
    assert len((out / "history.csv").read_text().splitlines()) == 1 + m["iterations"]
    with np.load(out / "recon.npz") as z:
        assert np.all(np.isfinite(z["ema_image"])) and np.array_equal(z["image"], z["ema_image"])


# ------------------------------------------------------------------------------------------ demo


def test_demo_compares_all_six_methods(tmp_path, capsys):
    """The demo's table, metrics and panel hold self-guided DIP, vanilla DIP and the four classical
    baselines, the classical ones with the ``lam`` their rule chose from the data."""
    assert main(["demo", "--size", "32", "--iters", "3", "--quiet", "--out", str(tmp_path / "d")]) == 0
    table = capsys.readouterr().out
    methods = ("sgdip", "dip", "tv", "l1-wavelet", "cg-sense", "zero-filled")
    rows = {line.split()[0]: line for line in table.splitlines() if line.split() and line.split()[0] in methods}
    assert set(rows) == set(methods)
    for name in ("tv", "l1-wavelet", "cg-sense"):
        assert "(gcv, from the data)" in rows[name]
    summary = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert set(summary["methods"]) == set(methods)
    psnrs = [summary["methods"][m]["metrics"]["psnr"] for m in summary["methods"]]
    assert psnrs == sorted(psnrs, reverse=True)  # listed best first
    # the held-out error, comparable without a reference: self-guided DIP's and the classical methods'
    # on the same locations; vanilla DIP fits all the data, so it has none
    held = {m: summary["methods"][m]["held_out_error"] for m in methods}
    assert held["dip"] is None and all(0 < held[m] < 10 for m in methods if m != "dip")
    assert "self-validation" in rows["sgdip"] and f"{held['tv']:.4f}" in rows["tv"]
    chosen = summary["methods"]["sgdip"]["chosen"]
    assert chosen["noise_scale"] == 0.25 and chosen["iteration"] >= 0  # MRI's preset, and where to stop
    assert (tmp_path / "d" / "panel.png").read_bytes().startswith(PNG_MAGIC)


def test_python_api_matches_the_command(files, tmp_path):
    """``reconstruct_file`` is what ``sgdip reconstruct`` runs: same images, and its config.toml reruns it."""
    from sgdip_jax.inputs import InputOptions
    from sgdip_jax.methods import method_config
    from sgdip_jax.reconstruct import reconstruct_file

    config = method_config("tv", iterations=5, sets=["lam=0.001"])
    outcomes = reconstruct_file(files["case"], "tv", config, InputOptions(seed=3), out_path=tmp_path / "api")
    assert len(outcomes) == 1 and outcomes[0].metrics["psnr"] > outcomes[0].zero_filled_metrics["psnr"]
    argv = ["reconstruct", files["case"], "--method", "tv", "--iters", "5", "--set", "lam=0.001", "--seed", "3"]
    assert run([*argv, "--out", tmp_path / "cli", "--quiet"]) == 0
    rerun = ["reconstruct", files["case"], "--config", tmp_path / "api" / "config.toml", "--out", tmp_path / "re"]
    assert run([*rerun, "--quiet"]) == 0
    for name in ("cli", "re"):
        with np.load(tmp_path / "api" / "recon.npz") as a, np.load(tmp_path / name / "recon.npz") as b:
            np.testing.assert_array_equal(a["image"], b["image"])
