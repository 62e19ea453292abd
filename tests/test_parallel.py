"""Scale-out: batched and sharded slices give each slice's own result; two processes with
jax.distributed give the single-process volume; an interrupted volume run resumes."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import h5py
import jax.numpy as jnp
import numpy as np
import pytest

from sgdip_jax import cli, reconstruct
from sgdip_jax.data import sample_mri, write_fastmri
from sgdip_jax.multihost import SliceStore, process_share
from sgdip_jax.operators.coils import birdcage_maps
from sgdip_jax.operators.fft import fft2c

TINY = ["--network", "unet1", "--width", "4", "--iters", "12", "--set", "chunk=4", "--quiet"]


def _run_script(code: str, env_extra: dict, timeout: int = 600) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **env_extra}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_batch_of_6_sharded_over_4_devices_equals_each_slice_alone():
    """6 tiny slices (own masks, noise and phase) with self-guided DIP batched on one device and over
    4 forced host devices (padded to 8) give the images of the first and the last slice (the one
    copied into the padding) run alone; the batched state is on 4 devices.

    Squared-L2 terms: batch layouts change the convolution algorithm and so the rounding, and the
    sign gradients of L1 terms amplify such differences (with the L1 defaults, 12 iterations measured
    a 1.2 % relative difference over 4 devices against 3e-5 on one), which would hide real errors.
    For the same reason the step size, noise and draws are the earlier, gentler ones (weights Adam
    3e-3, c 0.1, K = 4): the defaults' Adam 1e-2 and c 0.5 grow the rounding differences of one
    batched device to 2e-3 within 12 iterations, and K = 2 (the default since) to 3e-4 (measured),
    while the layouts still compute the same iteration."""
    out = _run_script(
        """
        import jax, numpy as np
        from sgdip_jax.data import sample_mri
        from sgdip_jax.inputs import problem_from_case
        from sgdip_jax.methods import SGDIPConfig
        from sgdip_jax.config import NetworkConfig
        from sgdip_jax.reconstruct import reconstruct_batch, reconstruct_problem
        assert jax.device_count() == 4
        problems = [problem_from_case(sample_mri("shoulder", size=16, coils=2, acceleration=4.0, seed=s))
                    for s in range(6)]
        config = SGDIPConfig(network=NetworkConfig(name="unet1", base=4), iterations=12, chunk=4,
                             data_loss="l2", reg_loss="l2", lr=3e-3, noise_scale=0.1, draws=4)
        alone = [reconstruct_problem(p, "sgdip", config, 3, progress=False).image for p in problems[::5]]
        one = reconstruct_batch(problems, "sgdip", config, 3, devices=jax.devices()[:1], progress=False)
        seen = []
        import sgdip_jax.methods.common as par
        run = par.engine.run
        def spy(*a, **k):
            k["callback"] = lambda info: seen.append(len(info.state.z.sharding.device_set))
            return run(*a, **k)
        par.engine.run = spy
        four = reconstruct_batch(problems, "sgdip", config, 3, devices=jax.devices(), progress=False)
        a, b, c = (np.stack(alone), np.stack([o.image for o in one[::5]]),
                   np.stack([o.image for o in four[::5]]))
        print(seen[0], np.abs(a - b).max() / np.abs(a).max(), np.abs(a - c).max() / np.abs(a).max(),
              np.abs(a[0] - a[1]).max() / np.abs(a).max())
        """,
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
    )
    devices, one_device, sharded, between = map(float, out.split())
    assert devices == 4
    assert one_device < 1e-4 and sharded < 1e-4
    assert between > 1e-2  # the slices really differ


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A fully sampled 4-slice, 4-coil fastMRI-layout volume, 64 readout rows (2x oversampling) x 32."""
    d = tmp_path_factory.mktemp("vol")
    smaps = birdcage_maps(4, (64, 32))
    kspace = []
    for seed in range(4):
        x = sample_mri("shoulder", size=32, coils=1, acceleration=1.0, center_fraction=0.0, seed=seed).x
        kspace.append(np.asarray(fft2c(jnp.asarray(smaps) * np.pad(x, ((16, 16), (0, 0))))))
    write_fastmri(d / "vol.h5", np.stack(kspace), recon_size=(24, 24))
    return d / "vol.h5"


def _volume_args(path, out, *extra):
    return [
        "reconstruct",
        str(path),
        "--slices",
        "all",
        "--crop",
        "32",
        "--acceleration",
        "2",
        "--center-fraction",
        "0.375",
        "--method",
        "dip",
        *TINY,
        *extra,
        "--out",
        str(out),
    ]


def _read(out):
    with h5py.File(out / "recon.h5", "r") as f:
        return f["image"][()], list(f.attrs["slices"])


@pytest.fixture(scope="module")
def single_process(volume, tmp_path_factory):
    """The volume reconstructed slice by slice (batch 1) in this process: the reference output."""
    out = tmp_path_factory.mktemp("single") / "out"
    assert cli.main(_volume_args(volume, out)) == 0
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_processes(volume, out, port, devices, *extra, quiet=True):
    args = [a for a in _volume_args(volume, out, *extra) if quiet or a != "--quiet"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sgdip_jax.cli",
                *args,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]


def _finish(procs, timeout=300):
    try:
        return [p.communicate(timeout=timeout)[1] for p in procs]
    finally:
        for p in procs:
            p.kill()


def test_two_processes_with_jax_distributed_equal_single_process(volume, single_process, tmp_path):
    """Two processes on 127.0.0.1 with 2 local devices each split the 4 slices (2 each, batch 2,
    sharded over the local devices), send them to process 0 through the coordination service, and
    process 0 writes the same volume as one process; the partial store is gone afterwards (one
    device per process: the killed-peer test below)."""
    out = tmp_path / "two"
    procs = _start_processes(volume, out, _free_port(), 2, "--batch", "2")
    for p, err in zip(procs, _finish(procs)):
        assert p.returncode == 0, err[-4000:]
    images, slices = _read(out)
    expected, expected_slices = _read(single_process)
    assert slices == expected_slices == [0, 1, 2, 3]
    np.testing.assert_allclose(images, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert not (tmp_path / "two.partial").exists()


def test_a_killed_peer_ends_process_0_in_bounded_time_and_the_rerun_resumes(volume, single_process, tmp_path):
    """Process 1 is killed (SIGKILL) once it has saved its first slice: process 0 exits 1 within
    --peer-timeout (10 s) plus polling, naming process 1, whether or not its own slices are done, and
    writes no volume. Rerunning both processes computes only the missing slices and writes all four."""
    out = tmp_path / "k"
    procs = _start_processes(volume, out, _free_port(), 1, "--peer-timeout", "10", "--set", "iterations=50")
    first = tmp_path / "k.partial" / "slice_0002.bin"
    deadline = time.monotonic() + 300
    while not first.exists() and procs[1].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), procs[1].stderr.read()[-4000:]
    procs[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    err = _finish(procs)[0]
    assert procs[0].returncode == 1, err[-4000:]
    assert "process 1 stopped responding" in err and "rerun the same command" in err
    assert time.monotonic() - killed < 120
    assert not out.exists()
    kept = sorted(p.name for p in (tmp_path / "k.partial").glob("slice_*"))
    # process 1 owns slices 2 and 3 and was killed after its first; process 0 owns 0 and 1 and may
    # have been stopped before finishing them
    assert "slice_0002.bin" in kept and "slice_0003.bin" not in kept
    own = sum(name in kept for name in ("slice_0000.bin", "slice_0001.bin"))

    procs = _start_processes(
        volume, out, _free_port(), 1, "--peer-timeout", "10", "--set", "iterations=50", quiet=False
    )
    errs = _finish(procs)
    for p, e in zip(procs, errs):
        assert p.returncode == 0, e[-4000:]
    assert "resuming: 1 of 2 slices already done" in errs[1]
    assert (f"resuming: {own} of 2 slices already done" in errs[0]) == (own > 0)
    images, slices = _read(out)
    assert slices == [0, 1, 2, 3] and np.isfinite(images).all()
    assert not (tmp_path / "k.partial").exists()


def test_interrupted_volume_resumes_with_the_missing_slices_only(volume, single_process, tmp_path, monkeypatch):
    """A crash after the first batch of 2 slices leaves them in OUT.partial and no OUT; rerunning the
    same command computes slices 2 and 3 only and writes the volume of an uninterrupted run."""
    computed = []
    real = reconstruct.reconstruct_batch

    def crash_on_second_batch(problems, *args, **kwargs):
        if computed:
            raise KeyboardInterrupt
        computed.append([p.meta["slice"] for p in problems])
        return real(problems, *args, **kwargs)

    out = tmp_path / "resumed"
    monkeypatch.setattr(reconstruct, "reconstruct_batch", crash_on_second_batch)
    assert cli.main(_volume_args(volume, out, "--batch", "2")) == cli.INTERRUPTED
    assert not out.exists() and sorted(os.listdir(tmp_path / "resumed.partial")) == [
        "run.json",
        "slice_0000.bin",
        "slice_0001.bin",
    ]

    computed.clear()
    monkeypatch.setattr(
        reconstruct,
        "reconstruct_batch",
        lambda problems, *a, **k: (computed.append([p.meta["slice"] for p in problems]), real(problems, *a, **k))[1],
    )
    assert cli.main(_volume_args(volume, out, "--batch", "2")) == 0
    assert computed == [[2, 3]]
    images, slices = _read(out)
    expected, _ = _read(single_process)
    assert slices == [0, 1, 2, 3]
    np.testing.assert_allclose(images, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert not (tmp_path / "resumed.partial").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["problem"]["slice"] for s in metrics["slices"]] == [0, 1, 2, 3]


def test_resume_with_other_settings_is_refused(tmp_path):
    SliceStore(tmp_path / "p", {"acceleration": 4})
    SliceStore(tmp_path / "p", {"acceleration": 4})  # same settings: reopened
    SliceStore(tmp_path / "p", {"acceleration": 8})  # no finished slice yet: taken over
    store = SliceStore(tmp_path / "p", {"acceleration": 4})
    store.save(0, b"slice")
    with pytest.raises(ValueError, match="another input or other settings.*--force"):
        SliceStore(tmp_path / "p", {"acceleration": 8})
    assert SliceStore(tmp_path / "p", {"acceleration": 8}, force=True).done() == set()


def test_resume_from_another_input_file_is_refused(volume, tmp_path, crash_after_first_batch):
    """Interrupted on one volume, the same command on a different file must not mix their slices."""
    other = tmp_path / "other.h5"
    with h5py.File(volume, "r") as src, h5py.File(other, "w") as dst:
        for key in src:
            dst.create_dataset(key, data=src[key][()][::-1] if key == "kspace" else src[key][()])
        dst.attrs.update(src.attrs)
    out = tmp_path / "o"
    assert cli.main(_volume_args(volume, out, "--batch", "2")) == cli.INTERRUPTED
    crash_after_first_batch()  # restored
    assert cli.main(_volume_args(other, out, "--batch", "2")) == 2
    assert not out.exists() and len(list((tmp_path / "o.partial").glob("slice_*.bin"))) == 2


@pytest.mark.parametrize("n, count", [(4, 2), (5, 2), (3, 4), (40, 3)])
def test_process_shares_are_contiguous_disjoint_and_complete(n, count):
    items = list(range(n))
    shares = [process_share(items, i, count) for i in range(count)]
    assert sum(shares, []) == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
