"""Volumes with warm-started slices (``--warm-start``) and the DIP methods' per-pixel uncertainty map."""

import json

import h5py
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgdip_jax import cli
from sgdip_jax.data import write_fastmri
from sgdip_jax.data.brain import _square, read_volume, split_indices, usable_slices
from sgdip_jax.data.images import spectral_resample
from sgdip_jax.operators.coils import birdcage_maps
from sgdip_jax.operators.fft import fft2c
from sgdip_jax.reconstruct import centre_out

# warm against cold starts: tolerances measured on optimised programs, as users run them
pytestmark = pytest.mark.xla_optimized

TINY = ["--network", "unet1", "--width", "8", "--iters", "80", "--set", "chunk=10", "--quiet"]


def write_brain_volume(path):
    """4 consecutive axial slices of the MNI template's test slab, 32 px, 4 coils, 2x oversampled readout."""
    template = read_volume()
    slab = split_indices(usable_slices(template, "axial"), "test")
    smaps = birdcage_maps(4, (64, 32))
    kspace = []
    for index in slab[4:8]:
        image = np.abs(spectral_resample(_square(np.rot90(np.take(template, int(index), axis=2))), (32, 32)))
        x = np.pad(image / image.max(), ((16, 16), (0, 0)))
        kspace.append(np.asarray(fft2c(jnp.asarray(smaps * x, jnp.complex64))))
    write_fastmri(path, np.stack(kspace), recon_size=(32, 32))
    return path


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    return write_brain_volume(tmp_path_factory.mktemp("vol") / "brain.h5")


def _args(path, out, *extra):
    return ["reconstruct", str(path), "--slices", "all", "--crop", "32", "--acceleration", "2",
            "--center-fraction", "0.375", *TINY, *extra, "--out", str(out)]  # fmt: skip


def _slices(out):
    with h5py.File(out / "recon.h5", "r") as f:
        images = f["image"][()]
    return images, json.loads((out / "metrics.json").read_text())["slices"]


@pytest.fixture(scope="module")
def cold_and_warm(volume, tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    assert cli.main(_args(volume, d / "cold")) == 0
    assert cli.main(_args(volume, d / "warm", "--warm-start", "0.25")) == 0
    return _slices(d / "cold"), _slices(d / "warm")


@given(st.integers(0, 20))
def test_centre_out_visits_every_slice_once_after_its_neighbour(n):
    indices = list(range(10, 10 + n))
    order = centre_out(indices)
    assert sorted(i for i, _ in order) == indices
    seen = set()
    for index, neighbour in order:
        assert (neighbour is None) == (index == indices[n // 2]) or n == 0
        if neighbour is not None:
            assert abs(index - neighbour) == 1 and neighbour in seen
            assert abs(neighbour - indices[n // 2]) < abs(index - indices[n // 2])  # towards the centre
        seen.add(index)


def test_warm_started_slices_are_no_worse_than_cold_ones_in_fewer_steps(cold_and_warm):
    """The centre slice starts cold and equals the cold run's; every other slice, started from its
    neighbour's weights with a quarter of the budget and then blocks while its held-out error falls,
    is within 0.5 dB of its cold start or better, and the volume takes no more steps."""
    (cold_images, cold), (warm_images, warm) = cold_and_warm
    centre = len(cold) // 2
    np.testing.assert_allclose(warm_images[centre], cold_images[centre], atol=1e-4 * np.abs(cold_images).max())
    for c, w in zip(cold, warm):
        assert w["metrics"]["psnr"] > c["metrics"]["psnr"] - 0.5, (c["metrics"], w["metrics"])
        if c is not cold[centre]:
            assert w["selection"]["warm_start"] == 20 and w["iterations"] <= 80
    assert sum(w["iterations"] for w in warm) <= sum(c["iterations"] for c in cold)


def test_resume_mid_volume_with_warm_start_equals_the_uninterrupted_run(
    volume, cold_and_warm, tmp_path, crash_after_first_batch
):
    """An interruption after the centre slice leaves it and the weights its neighbours start from in
    OUT.partial; the rerun computes the other three from them and writes the uninterrupted volume."""
    out = tmp_path / "resumed"
    assert cli.main(_args(volume, out, "--warm-start", "0.25")) == cli.INTERRUPTED
    assert sorted(p.name for p in (tmp_path / "resumed.partial").iterdir()) == [
        "run.json",
        "slice_0002.bin",
        "slice_0002.warm",
    ]
    crash_after_first_batch()
    assert cli.main(_args(volume, out, "--warm-start", "0.25")) == 0
    images, slices = _slices(out)
    (_, _), (expected, expected_slices) = cold_and_warm
    np.testing.assert_allclose(images, expected, atol=1e-4 * np.abs(expected).max())
    assert [s["iterations"] for s in slices] == [s["iterations"] for s in expected_slices]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "dip"], "dip has no self-validation"),
        (["--batch", "2"], "use --batch 1"),
    ],
)
def test_warm_start_needs_self_validation_and_one_slice_at_a_time(volume, tmp_path, capsys, extra, message):
    assert cli.main(_args(volume, tmp_path / "o", "--warm-start", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_uncertainty_is_zero_where_every_draw_agrees_and_positive_where_they_differ():
    """A toy DIP method whose output ignores its input and weights on the left half and is its input
    plus the step's noise on the right half: the map is exactly 0 on the left and near the noise's
    standard deviation (0.1, in the image's units) on the right; it has the image's shape."""
    import dataclasses

    from sgdip_jax.channels import from_channels, n_channels
    from sgdip_jax.config import NetworkConfig
    from sgdip_jax.data import sample_mri
    from sgdip_jax.methods.common import DIPBaseConfig, DIPTask, discrepancy, run_dip

    case = sample_mri(size=16, coils=2)
    op, y = case.operator(), jnp.asarray(case.y)
    right = jnp.arange(16)[None, :, None] >= 8

    def make_input(key, op, y, input_shape):
        return jnp.zeros((1, 16, 16, n_channels(op))), False

    def make_loss(forward):
        def loss_fn(params, net_state, z, key, data):
            out, net_state = forward(params, net_state, z)
            import jax

            noise = 0.1 * data["scale"] * jax.random.normal(key, out[0].shape)
            image = jnp.where(right, z[0] + noise, 1.0) + 0.0 * out[0]
            term = discrepancy(data["operator"](from_channels(image, data["operator"])) - data["y"], "l2")
            return term, {"image": image, "net_state": net_state, "terms": {"data": term}}

        return loss_fn

    config = dataclasses.replace(
        DIPBaseConfig(), network=NetworkConfig("unet1", base=4), iterations=200, ema=0.9, rescale=False
    )
    result = run_dip(DIPTask("toy", config, make_input, make_loss), op, y, 0, progress=False)
    spread = result.uncertainty
    assert spread.shape == tuple(op.image_shape) and np.isrealobj(spread) and np.all(np.isfinite(spread))
    assert np.all(spread[:, :8] == 0)
    # complex noise of std 0.1 per channel: |.| spread sqrt(2) * 0.1
    assert np.median(spread[:, 8:]) == pytest.approx(np.sqrt(2) * 0.1, rel=0.25)
