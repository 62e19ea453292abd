"""Fault injection against ``sgdip reconstruct``: bad settings and files, divergence, signals, damaged
stores, ``--force`` near files sgdip did not write. Each case states the input, the exit status, a
fragment of the one-line message, and that no existing file changed. (Resuming on another input and
stale stores are in ``test_parallel.py``.)"""

import json
import os
import time

import h5py
import numpy as np
import pytest
from conftest import ENDLESS_DIP, SIGINT, SIGTERM, signal_during_run, start_cli
from PIL import Image
from pydicom.data import get_testdata_file

from sgdip_jax.cli import main
from sgdip_jax.data import sample_mri, save_case, write_fastmri
from sgdip_jax.operators.coils import birdcage_maps
from sgdip_jax.operators.fft import fft2c

TINY = ["--network", "unet1", "--width", "4", "--iters", "5", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    case = sample_mri("small", size=32, coils=4, acceleration=4.0, snr_db=30.0, seed=0)
    save_case(d / "case.npz", case)
    arrays = dict(np.load(d / "case.npz"))
    np.savez(d / "zero_maps.npz", **{**arrays, "smaps": np.zeros_like(arrays["smaps"])})
    np.savez(d / "empty.npz")
    np.save(d / "array.npy", np.zeros(3))
    os.replace(d / "array.npy", d / "array.npz")  # an .npy file named .npz
    (d / "text.npz").write_text("not numpy")
    with h5py.File(d / "group.h5", "w") as f:
        f.create_group("kspace")
    with h5py.File(d / "real.h5", "w") as f:
        f["kspace"] = np.ones((2, 4, 32, 32), np.float32)
    with h5py.File(d / "strings.h5", "w") as f:
        f["kspace"] = np.array([b"a", b"b"])
    smaps = birdcage_maps(4, (32, 32))
    kspace = [
        np.asarray(
            fft2c(smaps * sample_mri("shoulder", size=32, coils=1, acceleration=1.0, center_fraction=0.0, seed=s).x)
        )
        for s in range(2)
    ]
    write_fastmri(d / "vol.h5", np.stack(kspace))
    lines = np.ones(32, np.float32)
    write_fastmri(d / "nan_mask.h5", np.stack(kspace), mask=np.where(np.arange(32) == 3, np.nan, lines))
    write_fastmri(d / "two_mask.h5", np.stack(kspace), mask=2 * lines)
    rss = np.random.default_rng(1).random((2, 10, 7)).astype(np.float32)
    write_fastmri(d / "wrong_rss.h5", np.stack(kspace), reconstruction_rss=rss)
    write_fastmri(d / "few_rss.h5", np.stack(kspace), reconstruction_rss=np.ones((1, 32, 32), np.float32))
    write_fastmri(d / "zero.h5", np.zeros_like(np.stack(kspace)))
    with h5py.File(d / "huge.h5", "w") as f:  # declared, never written: no data on disk
        f.create_dataset("kspace", shape=(1, 4, 100000, 100000), dtype=np.complex64, chunks=(1, 1, 64, 64))
    (d / "truncated.h5").write_bytes((d / "vol.h5").read_bytes()[:4000])
    (d / "binary.toml").write_bytes(bytes(range(256)))
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(d / "black.png")
    np.save(d / "nan_mask.npy", np.full((32, 32), np.nan))
    np.save(d / "half_mask.npy", np.full((32, 32), 0.5))
    np.save(d / "complex_mask.npy", np.ones((32, 32), np.complex64))
    Image.fromarray((np.random.default_rng(0).random((4, 256)) * 255).astype(np.uint8)).save(d / "thin.png")
    return d


def run(argv, capsys):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr()


def one_line(cap):
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sgdip: error:") and "Traceback" not in cap.err, cap.err
    return lines[0]


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------- item 3: divergence, numeric settings


@pytest.mark.parametrize(
    "setting, fragment",
    [
        ("lr=nan", "lr must be a finite number > 0"),
        ("lr=-1", "lr must be a finite number > 0"),
        ("alpha=-5", "alpha must be a finite number >= 0"),
        ("noise_scale=inf", "noise_scale must be a finite number >= 0"),
        ("clip_norm=0", "clip_norm must be a finite number > 0"),
        ("network.base=0", "network.base must be an integer from 1 to 4096"),
        ("network.base=-3", "network.base must be an integer from 1 to 4096"),
        ("network.base=1e9", "network.base must be an integer from 1 to 4096"),
        ("holdout=0.9", "holdout must be a fraction in [0, 0.5)"),
        ("ssim_every=-1", "ssim_every must be >= 0"),
    ],
)
def test_numeric_settings_are_checked_before_any_work(files, tmp_path, capsys, setting, fragment):
    rc, cap = run(
        ["reconstruct", files / "case.npz", "--method", "sgdip", *TINY, "--set", setting, "--out", tmp_path / "o"],
        capsys,
    )
    assert rc == 2 and fragment in one_line(cap)
    assert not (tmp_path / "o").exists()


def test_a_diverged_sgdip_run_names_both_rates(files, tmp_path, capsys):
    """``lr_z`` too large: the message names the input's rate beside the weights'."""
    argv = ["reconstruct", files / "case.npz", "--method", "sgdip", *TINY, "--set", "lr_z=1e30", "--set", "chunk=1"]
    rc, cap = run([*argv, "--set", "holdout=0", "--out", tmp_path / "o"], capsys)
    line = one_line(cap)
    assert rc == 1 and "loss was not finite" in line and "lr_z = 1e+30" in line and "--set lr_z=1e+29" in line


def test_a_diverged_run_exits_1_naming_lr_and_keeps_the_last_finite_images(files, tmp_path, capsys):
    out = tmp_path / "o"
    rc, cap = run(
        [
            "reconstruct",
            files / "case.npz",
            "--method",
            "dip",
            *TINY,
            "--set",
            "lr=1e30",
            "--set",
            "chunk=1",
            "--out",
            out,
        ],
        capsys,
    )
    line = one_line(cap)
    assert rc == 1 and "loss was not finite at iteration" in line and "lr" in line
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["diverged"] is not None and metrics["iterations"] == metrics["diverged"]
    with np.load(out / "recon.npz") as z:
        assert np.isfinite(z["ema_image"]).all() and np.isfinite(z["image"]).all()


# ----------------------------------------------------------------- items 4 and 11: SIGTERM, what was run


def test_sigterm_stops_after_the_chunk_saves_and_leaves_no_staging_folder(files, tmp_path):
    out = tmp_path / "term"
    proc, err, _ = signal_during_run(
        ["reconstruct", files / "case.npz", *ENDLESS_DIP, "--out", out],
        "case.npz: dip",
        SIGTERM,
        2.0,
    )
    assert proc.returncode == 143, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True and 0 < metrics["iterations"] < 1000000
    assert [p.name for p in tmp_path.iterdir()] == ["term"]  # no .term.tmp-* left
    head = (out / "config.toml").read_text().splitlines()[:2]
    assert "reruns the requested job (1000000 iterations)" in head[0]
    assert f"Iterations run: {metrics['iterations']} (interrupted" in head[1]


# ----------------------------------------------------------------- item 5: late failures


def test_ssim_of_a_tiny_image_is_absent_with_a_reason_not_a_crash(files, tmp_path, capsys):
    out = tmp_path / "o"
    rc, cap = run(
        ["reconstruct", files / "thin.png", "--method", "tv", "--iters", "5", "--set", "lam=0.01", "--out", out], capsys
    )
    assert rc == 0, cap.err
    assert "SSIM will be absent" in cap.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["ssim"] is None and metrics["metrics"]["psnr"] > 0


def test_a_damaged_slice_in_the_store_is_found_first_and_recomputed(files, tmp_path, capsys, crash_after_first_batch):
    out = tmp_path / "v"
    argv = [
        "reconstruct",
        files / "vol.h5",
        "--slices",
        "all",
        "--acceleration",
        "2",
        "--center-fraction",
        "0.375",
        "--method",
        "dip",
        *TINY,
        "--out",
        out,
    ]
    assert run(argv, capsys)[0] == 130
    stored = tmp_path / "v.partial" / "slice_0000.bin"
    stored.write_bytes(stored.read_bytes()[:100])  # truncated
    crash_after_first_batch()  # restored
    rc, cap = run([a for a in argv if a != "--quiet"], capsys)
    assert rc == 0 and "slices [0] were damaged and are computed again" in cap.err
    assert json.loads((out / "metrics.json").read_text())["slices"][0]["metrics"] is not None


# ----------------------------------------------------------------- item 6: tracebacks -> one line


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["empty.npz"], "empty.npz: missing key(s)"),
        (["array.npz"], "array.npz: holds a single array"),
        (["text.npz"], "text.npz: not a NumPy file"),
        (["group.h5"], "group.h5: 'kspace' is an HDF5 group"),
        (["strings.h5"], "strings.h5: 'kspace' has dtype |S1; k-space is complex"),
        (["vol.h5", "--acceleration", "0"], "argument --acceleration: invalid number from 1 to 64 value: '0'"),
        (["case.npz", "--seed", "99999999999999999999"], "argument --seed: invalid seed"),
        (["case.npz", "--size", "100000"], "argument --size: invalid image size from 16 to 4096"),
        (["case.npz", "--coils", "1000000"], "argument --coils: invalid coil count from 1 to 128"),
        (["case.npz", "--snr-db", "1e9"], "argument --snr-db: invalid SNR in dB from -20 to 120"),
        (["case.npz", "--coordinator", "127.0.0.1:99999"], "argument --coordinator: invalid address"),
        (["case.npz", "--method", "l1-wavelet", "--set", "levels=100"], "L1WaveletConfig.levels: expected 0 to"),
        (["wrong_rss.h5"], "wrong_rss.h5: reconstruction_rss (10, 7) is not the centre of the k-space's RSS"),
        (["few_rss.h5"], "few_rss.h5: 'reconstruction_rss' has shape (1, 32, 32), expected (2, H, W)"),
        (["zero.h5"], "zero.h5 slice 1: 'kspace' is all zero"),
        (["huge.h5"], "huge.h5: 'kspace' of shape (1, 4, 100000, 100000) is larger than sgdip reconstructs"),
        (["truncated.h5"], "truncated.h5: cannot be read as HDF5"),
        (["black.png"], "black.png: the image is all zero"),
        (["case.npz", "--config", "{d}/binary.toml"], "binary.toml: not a UTF-8 text file"),
        (["case.npz", "--method", "modl", "--weights", "{d}/black.png"], "black.png: not a weights file (an .npz"),
    ],
)
def test_bad_files_and_options_give_one_line_and_exit_2(files, tmp_path, capsys, argv, fragment):
    argv = [a.format(d=files) for a in argv]
    before = snapshot(files)
    rc, cap = run(["reconstruct", files / argv[0], *argv[1:], "--quiet", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and fragment in one_line(cap)
    assert not (tmp_path / "o").exists() and snapshot(files) == before


def test_outputs_and_sizes_are_checked_before_any_work(files, tmp_path, capsys):
    """A config file's out-of-range seed, a link to nothing as --out, and demo/train sizes too small
    for the network: exit 2 and one line, before any work."""
    (tmp_path / "c.toml").write_text("seed = 99999999999999999999\n")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    cases = [
        (["reconstruct", files / "case.npz", "--config", tmp_path / "c.toml", "--out", tmp_path / "o"], "seed"),
        (["reconstruct", files / "case.npz", "--out", tmp_path / "dangling"], "is a link to a missing target"),
        (["demo", "--size", "4", "--out", tmp_path / "o"], "argument --size: invalid image size from 16"),
        (["train", "--size", "5", "--out", tmp_path / "o"], "argument --size: invalid image size from 16"),
    ]
    for argv, fragment in cases:
        rc, cap = run([*argv, "--quiet"], capsys)
        assert rc == 2 and fragment in one_line(cap), argv
    assert not (tmp_path / "o").exists() and not (tmp_path / "nowhere").exists()


def test_options_that_do_not_apply_to_the_input_are_named_in_a_warning(files, tmp_path, capsys):
    argv = ["reconstruct", files / "case.npz", "--method", "zero-filled", "--acceleration", "8", "--coils", "4"]
    rc, cap = run([*argv, "--out", tmp_path / "o"], capsys)
    assert rc == 0 and "case input: ignored, as it does not apply: --acceleration, --coils" in cap.err


def test_out_as_a_link_to_a_folder_writes_into_the_folder(files, tmp_path, capsys):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    rc, _ = run(["reconstruct", files / "case.npz", "--method", "zero-filled", "--out", tmp_path / "link"], capsys)
    assert rc == 0 and (tmp_path / "link").is_symlink() and (tmp_path / "target" / "metrics.json").is_file()


# ----------------------------------------------------------------- item 7: Ctrl-C in classical methods


def test_two_signals_in_quick_succession_abort_at_once_and_clean_up(files, tmp_path):
    """The second Ctrl-C aborts: exit 130 and one line, no crash or traceback from JAX's threads,
    no staging folder and no result left."""
    proc = start_cli(["reconstruct", files / "case.npz", *ENDLESS_DIP, "--out", tmp_path / "o"])
    for line in proc.stderr:
        if "case.npz: dip" in line:
            break
    time.sleep(1.0)
    proc.send_signal(SIGINT)
    time.sleep(0.3)
    proc.send_signal(SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and "aborted" in err, err
    assert "Traceback" not in err and "Segmentation" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_signal_during_start_up_is_not_lost(files, tmp_path):
    """SIGINT one second after the start (JAX is still being imported) still stops the run: exit 130
    after its first chunk, not an endless run."""
    proc = start_cli(["reconstruct", files / "case.npz", *ENDLESS_DIP, "--out", tmp_path / "o"])
    time.sleep(1.0)
    proc.send_signal(SIGINT)
    err = proc.communicate(timeout=180)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_ctrl_c_stops_tv_at_the_next_chunk(files, tmp_path):
    out = tmp_path / "tv"
    proc, err, took = signal_during_run(
        ["reconstruct", files / "case.npz", "--method", "tv", "--iters", "3000000", "--set", "lam=0.001", "--out", out],
        "case.npz: tv",
        SIGINT,
        3.0,
        timeout=120,
    )
    assert proc.returncode == 130, err
    assert took < 60  # 3e6 steps would take hours
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True and 0 < metrics["iterations"] < 3000000


def test_interrupted_is_false_for_a_finished_run(files, tmp_path, capsys):
    assert (
        run(
            [
                "reconstruct",
                files / "case.npz",
                "--method",
                "tv",
                "--iters",
                "5",
                "--set",
                "lam=0.01",
                "--quiet",
                "--out",
                tmp_path / "o",
            ],
            capsys,
        )[0]
        == 0
    )
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["interrupted"] is False


# ----------------------------------------------------------------- item 8: --force


def test_force_replaces_only_an_earlier_sgdip_result(files, tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mydata"
    (mine / "sub").mkdir(parents=True)
    (mine / "thesis.txt").write_text("years of work")
    (mine / "sub" / "data.csv").write_text("1,2")
    before = snapshot(tmp_path)
    base = ["reconstruct", files / "case.npz", "--method", "tv", "--iters", "3", "--set", "lam=0.01", "--quiet"]
    rc, cap = run([*base, "--out", mine, "--force"], capsys)
    assert rc == 2 and "holds files that sgdip did not write" in one_line(cap)
    config = tmp_path / "c.toml"
    config.write_text(f'out = "{mine}"\nforce = true\n')
    rc, cap = run([*base, "--config", config], capsys)
    assert rc == 2 and "'out' cannot be set in a config file" in one_line(cap)
    monkeypatch.chdir(mine / "sub")
    for where in (".", "..", "/", os.path.expanduser("~")):
        rc, cap = run([*base, "--out", where, "--force"], capsys)
        assert rc == 2 and "choose a new folder for --out" in one_line(cap), where
    config.unlink()
    assert snapshot(tmp_path) == before
    result = tmp_path / "result"
    assert run([*base, "--out", result], capsys)[0] == 0
    assert run([*base, "--out", result, "--force"], capsys)[0] == 0  # an sgdip result: replaced
    assert (result / "metrics.json").exists() and not list(tmp_path.glob(".result.*"))
    # a user's file or folder added to an earlier result: --force refuses and deletes nothing
    for added in ("mynotes.txt", "extra/plot.png"):
        (result / added).parent.mkdir(exist_ok=True)
        (result / added).write_text("mine")
        before = snapshot(tmp_path)
        rc, cap = run([*base, "--out", result, "--force"], capsys)
        assert rc == 2 and "sgdip did not write" in one_line(cap) and added.split("/")[0] in one_line(cap)
        assert snapshot(tmp_path) == before and not list(tmp_path.glob(".result.*"))
        (result / added).unlink()
        if "/" in added:
            (result / "extra").rmdir()


# ----------------------------------------------------------------- item 9: odd input


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["real.h5"], "real.h5: 'kspace' has dtype float32; k-space is complex"),
        (["{dicom}", "--mask", "{d}/nan_mask.npy"], "a mask holds 0 and 1 only"),
        (["{dicom}", "--mask", "{d}/half_mask.npy"], "a mask holds 0 and 1 only"),
        (["{dicom}", "--mask", "{d}/complex_mask.npy"], "a mask holds 0 and 1 only"),
        (["vol.h5", "--slices", "1,1"], "names a slice more than once"),
        (["vol.h5", "--slices", "1,-1"], "names a slice more than once"),
        (["vol.h5", "--slices", "0:100"], "--slices '0:100': 100 is outside the file's 2 slices"),
        (["{dicom}", "--slice", "3"], "holds a single frame"),
        (["case.npz", "--mask", ""], "argument --mask: invalid non-empty value"),
        (["nan_mask.h5"], "nan_mask.h5: 'mask' holds 0 and 1 only"),
        (["two_mask.h5"], "two_mask.h5: 'mask' holds 0 and 1 only"),
    ],
)
def test_odd_input_is_refused(files, tmp_path, capsys, argv, fragment):
    argv = [a.format(d=files, dicom=get_testdata_file("MR_small.dcm")) for a in argv]
    first = argv[0] if os.path.isabs(argv[0]) else files / argv[0]
    rc, cap = run(
        ["reconstruct", first, *argv[1:], "--method", "tv", "--iters", "3", "--quiet", "--out", tmp_path / "o"], capsys
    )
    assert rc == 2 and fragment in one_line(cap)
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------- item 10: messages that say what is wrong


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["zero_maps.npz"], "the coil maps are zero"),
        (["{dicom}", "--snr-db", "nan"], "argument --snr-db: invalid SNR in dB from -20 to 120 value: 'nan'"),
        (["{dicom}", "--mask", "missing.npy"], "--mask missing.npy: no such mask file"),
    ],
)
def test_messages_name_what_is_wrong(files, tmp_path, capsys, argv, fragment):
    argv = [a.format(dicom=get_testdata_file("MR_small.dcm")) for a in argv]
    first = argv[0] if os.path.isabs(argv[0]) else files / argv[0]
    rc, cap = run(
        ["reconstruct", first, *argv[1:], "--method", "tv", "--iters", "3", "--quiet", "--out", tmp_path / "o"], capsys
    )
    assert rc == 2 and fragment in one_line(cap)


def test_a_decoder_network_is_sized_to_the_image_instead_of_failing(files, tmp_path, capsys):
    """ConvDecoder has no output size of its own: the command sets it to the image's (it used to
    fail with a hint at a Python function)."""
    rc, cap = run(
        [
            "reconstruct",
            files / "case.npz",
            "--method",
            "dip",
            "--network",
            "conv_decoder",
            "--iters",
            "3",
            "--quiet",
            "--out",
            tmp_path / "o",
        ],
        capsys,
    )
    assert rc == 0, cap.err
    with np.load(tmp_path / "o" / "recon.npz") as z:
        assert z["image"].shape == (32, 32)


def test_atomic_write_leaves_an_ordinary_file_or_nothing(tmp_path):
    """The file gets the permissions of a new file under the umask (the temporary one starts 0600);
    a failing writer leaves neither the target nor a temporary file."""
    import os

    from sgdip_jax.files import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "b.txt", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_nan_image_is_never_written_with_success(files, tmp_path, capsys, monkeypatch):
    """A method that returns an image with NaN (whatever the cause): exit 1, one line, nothing written."""
    import dataclasses

    from sgdip_jax.methods import METHODS

    spec = METHODS["zero-filled"]

    def nan_image(*args, **kwargs):
        result = spec.run(*args, **kwargs)
        return dataclasses.replace(result, image=np.full_like(result.image, np.nan))

    monkeypatch.setitem(METHODS, "zero-filled", dataclasses.replace(spec, run=nan_image))
    out = tmp_path / "nan_out"
    rc, cap = run(["reconstruct", files / "case.npz", "--method", "zero-filled", "--out", out, "--quiet"], capsys)
    assert rc == 1, cap.err
    assert "NaN/Inf" in cap.err and "nothing was written" in one_line(cap)
    assert not out.exists() and not list(tmp_path.glob(".nan_out*"))


def test_width_sets_each_network_s_own_width(files, tmp_path, capsys):
    """``--width`` is the U-Nets' base, the skip network's channels and the decoders' features."""
    for network in ("skip", "deep_decoder", "conv_decoder"):
        out = tmp_path / network
        argv = ["reconstruct", files / "case.npz", "--method", "dip", "--network", network, "--width", "4"]
        rc, cap = run([*argv, "--iters", "2", "--quiet", "--out", out], capsys)
        assert rc == 0, cap.err
        assert "base = 4" in (out / "config.toml").read_text()
