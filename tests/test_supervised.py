"""Supervised baselines (``unet-post``, ``modl``): training lowers the validation loss and resumes,
weights round-trip and are checked against the architecture, the MNI slice split keeps held-out
slices apart, and ``sgdip train`` / ``sgdip reconstruct --method modl`` work end to end.

Training runs use 16x16 images, 2 coils and a two-level U-Net of width 4 (seconds, not minutes).
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdip_jax.checkpoints import load_weights, save_weights
from sgdip_jax.cli import main
from sgdip_jax.data import sample_mri, save_case
from sgdip_jax.data.brain import GAP, brain_slices, split_indices, template_path, usable_slices
from sgdip_jax.methods import run_method
from sgdip_jax.methods.supervised import model_forward
from sgdip_jax.operators.base import conjugate_gradient
from sgdip_jax.train import train, train_config

TINY_NET = {"name": "unet2", "base": 4}
TINY = {"size": 16, "coils": 2, "batch": 2, "val_every": 10, "val_examples": 4, "lr": 3e-3, "masks_per_acceleration": 2}


def tiny_config(method, steps=40, **fields):
    model = {"network": TINY_NET, "unrolls": 2, "cg_iterations": 3} if method == "modl" else {"network": TINY_NET}
    return train_config(method, table={**TINY, "steps": steps, "model": model, **fields})


def tiny_data(n=12, size=16, seed=0):
    """Smooth random blobs: a dataset whose structure a small network can learn in a few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 3) * (1, 1, 0.5)
        images.append(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2 * 0.3)))
    images = np.stack(images).astype(np.float32)
    return images[: n - 4], images[n - 4 :]


class StopAfter:
    """An interrupt flag that is raised after ``n`` checks (one check per training step)."""

    def __init__(self, n):
        self.n = n

    @property
    def requested(self):
        self.n -= 1
        return self.n < 0


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "unet-post"
    config = tiny_config("unet-post")
    first = train(config, out, data=tiny_data(), progress=False, interrupt=StopAfter(15))
    return config, out, first, train(config, out, data=tiny_data(), progress=False)


def test_training_lowers_validation_loss_and_resumes(unet_run):
    config, out, first, final = unet_run
    assert first.info["steps"] == 16  # stopped after the step on which the flag was raised
    history = json.loads((out / "validation.json").read_text())
    assert history["step"] == [10, 16, 20, 30, 40]  # resumed at 16, not restarted
    assert min(history["val_loss"][1:]) < history["val_loss"][0] * 0.95, history["val_loss"]
    assert final.info["val_loss"] == min(history["val_loss"]) and final.info["steps"] == config.steps
    assert (out / "validation.png").read_bytes()[:4] == b"\x89PNG"


def test_weights_round_trip_and_apply(unet_run, tmp_path):
    _, out, _, weights = unet_run
    loaded = load_weights(out / "weights.npz", "unet-post")
    assert loaded.model == weights.model and loaded.info["best_step"] == weights.info["best_step"]
    same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), loaded.params, weights.params)
    assert all(jax.tree.leaves(same))
    case = sample_mri("shoulder", size=16, coils=2, acceleration=4.0, snr_db=30.0, seed=0)
    result = run_method("unet-post", case.operator(), jnp.asarray(case.y), weights=loaded, target=case.x)
    expected = model_forward(weights.model)(weights.params, case.operator(), jnp.asarray(case.y))
    np.testing.assert_allclose(result.image, expected, atol=1e-5)
    assert result.config["source"] == str(out / "weights.npz") and np.isfinite(result.history["psnr"][0])


def test_weights_of_another_network_or_method_are_refused(unet_run, tmp_path):
    _, _, _, weights = unet_run
    wider = dataclasses.replace(weights.model, network=dataclasses.replace(weights.model.network, base=8))
    message = r"cnn/\S+/kernel has shape \(1, 1, 4, 2\), a unet-post model with network unet2 \(base 8, norm group"
    with pytest.raises(ValueError, match=message):
        run_method("unet-post", *_problem(), weights=dataclasses.replace(weights, model=wider))
    deeper = dataclasses.replace(weights.model, network=dataclasses.replace(weights.model.network, name="unet3"))
    with pytest.raises(ValueError, match="parameters do not match a unet-post model with network unet3.*missing"):
        save_weights(tmp_path / "w.npz", dataclasses.replace(weights, model=deeper))
        load_weights(tmp_path / "w.npz", "unet-post")
    with pytest.raises(ValueError, match="weights of a unet-post model, not modl"):
        run_method("modl", *_problem(), weights=weights)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a weights file"):
        load_weights(tmp_path / "junk.npz", "modl")


def _problem():
    case = sample_mri("shoulder", size=16, coils=2, acceleration=4.0, snr_db=30.0, seed=0)
    return case.operator(), jnp.asarray(case.y)


def test_supervised_methods_without_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(ValueError, match=r"modl needs trained weights.*sgdip train --method modl.*--weights FILE"):
        run_method("modl", *_problem())
    with pytest.raises(FileNotFoundError, match="sgdip train --method modl"):
        load_weights(tmp_path / "missing.npz", "modl")


def test_modl_data_consistency_is_a_conjugate_gradient_solve():
    """CG against the dense solution of ``(A^H A + lam I) x = b`` for a tiny multi-coil operator."""
    op, y = _problem()
    lam = 0.3
    normal = lambda v: op.normal(v) + lam * v  # noqa: E731
    b = op.adjoint(y)
    x = conjugate_gradient(normal, b, jnp.zeros_like(b), 60)
    basis = jnp.eye(b.size, dtype=b.dtype).reshape(b.size, *b.shape)
    dense = jax.vmap(normal)(basis).reshape(b.size, b.size).T
    np.testing.assert_allclose(x.ravel(), np.linalg.solve(dense, b.ravel()), rtol=1e-3, atol=1e-4 * np.abs(b).max())


def test_modl_trains_and_lowers_validation_loss(tmp_path):
    weights = train(tiny_config("modl", steps=30), tmp_path / "modl", data=tiny_data(), progress=False)
    assert weights.model.method == "modl" and weights.params["lam"].shape == ()
    history = json.loads((tmp_path / "modl" / "validation.json").read_text())
    assert min(history["val_loss"][1:]) < history["val_loss"][0], history["val_loss"]
    assert weights.info["best_step"] in history["step"]


def test_another_config_in_the_run_directory_is_refused(unet_run):
    _, out, _, _ = unet_run
    with pytest.raises(ValueError, match="holds a training run of another config"):
        train(tiny_config("unet-post", steps=41), out, data=tiny_data(), progress=False)


def test_brain_split_keeps_held_out_slices_apart():
    """On a synthetic volume: the three splits are disjoint, no training slice is within ``GAP`` of
    a held-out one, and sagittal slices come from one hemisphere and the midline only."""
    volume = np.zeros((41, 50, 60), np.float32)
    volume[5:36, 5:45, 5:55] = 1.0
    for orientation in ("sagittal", "coronal", "axial"):
        usable = usable_slices(volume, orientation)
        parts = {s: set(split_indices(usable, s).tolist()) for s in ("train", "val", "test")}
        assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
        assert not (parts["val"] & parts["test"]) and parts["val"] and parts["test"]
        held = np.array(sorted(parts["val"] | parts["test"]))
        gaps = [np.min(np.abs(held - i)) for i in parts["train"]]
        assert min(gaps) > GAP
        if orientation == "sagittal":
            assert max(usable) == 20
    images, where = brain_slices("val", size=16, volume=volume)
    assert images.shape[1:] == (16, 16) and np.allclose(images.max(axis=(1, 2)), 1.0)
    assert {w["orientation"] for w in where} == {"sagittal", "coronal", "axial"}


def test_template_slices_are_read_from_the_installed_package():
    assert template_path().name.endswith(".nii.gz")
    train_images, _ = brain_slices("train", size=32, orientations=("axial",))
    test_images, where = brain_slices("test", size=32, orientations=("axial",))
    assert len(train_images) > 5 * len(test_images) > 0 and all(w["orientation"] == "axial" for w in where)


def test_cli_train_then_reconstruct_with_modl(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--method", "modl", "--network", "unet2", "--width", "4", "--size", "16", "--steps", "2",
            "--set", "val_every=1", "--set", "val_examples=2", "--set", "coils=2", "--set", "model.unrolls=1",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"--weights {out / 'weights.npz'}" in printed and (out / "train_config.toml").is_file()
    case = sample_mri("shoulder", size=16, coils=2, acceleration=4.0, snr_db=30.0, seed=0)
    save_case(tmp_path / "case.npz", case)
    recon = ["reconstruct", str(tmp_path / "case.npz"), "--method", "modl", "--weights", str(out / "weights.npz"),
             "--out", str(tmp_path / "recon"), "--quiet"]  # fmt: skip
    assert main(recon) == 0
    produced = sorted(p.name for p in (tmp_path / "recon").iterdir())
    assert "config.toml" in produced and any(name.endswith(".png") for name in produced), produced
