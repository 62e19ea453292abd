"""Training the supervised baselines (``sgdip train``): ``unet-post`` and ``modl`` of
:mod:`sgdip_jax.methods.supervised`, with Optax, on multi-coil data simulated from real magnitude
images, as the bundled samples are (:mod:`sgdip_jax.data.samples`): smooth random phase, birdcage
coil maps, VDRS phase-encode masks and complex Gaussian noise.

Every example is drawn afresh inside the compiled step: a training image (MNI template slices,
:mod:`sgdip_jax.data.brain`, by default), a random flip, a phase map, one of
``masks_per_acceleration`` masks of each acceleration in ``accelerations`` (mask seeds from
``MASK_SEED0`` on, so the seed-0 masks of the test cases are never trained on) and an SNR uniform in
``snr_db``. The loss is the mean absolute error of the real and imaginary parts at the model's scale
(:func:`~sgdip_jax.methods.supervised.problem_scale`). Adam with a cosine-decayed learning rate.

Validation: ``val_examples`` held-out slices, each with one fixed mask, SNR and phase; the loss and
mean PSNR are recorded every ``val_every`` steps, and the weights of the lowest validation loss are
the ones written. The run directory holds ``train_config.toml``, ``state.msgpack`` (everything needed
to resume, rewritten every ``val_every`` steps and on Ctrl-C), ``validation.json``,
``validation.png`` and ``weights.npz``; rerunning the same command resumes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .config import check_number
from .methods.supervised import ModelConfig, Weights, init_params, model_forward, problem_scale

log = logging.getLogger("sgdip")
MASK_SEED0 = 1000
STATE_FILE, CONFIG_FILE, WEIGHTS_FILE = "state.msgpack", "train_config.toml", "weights.npz"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """``model``: what to train. ``size``: image side; ``coils``: birdcage coils; ``accelerations``
    and ``masks_per_acceleration``: the VDRS mask bank; ``snr_db``: ``(low, high)`` of the uniform
    SNR draw. ``steps``, ``batch``, ``lr`` (peak of the cosine schedule), ``val_every``,
    ``val_examples``; ``seed``."""

    model: ModelConfig = ModelConfig()
    size: int = 128
    coils: int = 8
    accelerations: tuple[float, ...] = (4.0, 6.0, 8.0)
    masks_per_acceleration: int = 16
    snr_db: tuple[float, float] = (20.0, 40.0)
    steps: int = 200
    batch: int = 4
    lr: float = 1e-3
    val_every: int = 100
    val_examples: int = 24
    seed: int = 0

    def __post_init__(self):
        for name in ("size", "coils", "masks_per_acceleration", "steps", "batch", "val_every", "val_examples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_number(self.lr, "lr")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db must be (low, high) with low <= high, got {self.snr_db}")
        if not self.accelerations or min(self.accelerations) < 1:
            raise ValueError(f"accelerations must be numbers >= 1, got {self.accelerations}")


DEFAULT_STEPS = {"unet-post": 2000, "modl": 200}  # training times at 128 px: benchmarks/RESULTS.md


def train_config(method: str = "modl", *, table=None, network=None, width=None, sets=()) -> TrainConfig:
    """The :class:`TrainConfig` of ``method``: its default network (:data:`DEFAULT_NETWORKS`) and
    steps (:data:`DEFAULT_STEPS`), then ``table`` (a config-file table of its fields), the ``network``
    name and ``width`` shortcuts, and ``sets`` (``"KEY=VALUE"``, e.g. ``steps=3000`` or
    ``model.unrolls=4``)."""
    from .config import layered, to_dict
    from .methods.supervised import DEFAULT_NETWORKS, SUPERVISED

    if method not in SUPERVISED:
        raise ValueError(f"sgdip train: --method must be one of {list(SUPERVISED)}, got {method!r}")
    defaults = {"steps": DEFAULT_STEPS[method], "model": {"network": to_dict(DEFAULT_NETWORKS[method])}}
    base = _merged(defaults, table or {})
    updates = {"model.method": method, **({"model.network.name": network} if network else {})}
    updates.update({"model.network.base": width} if width else {})
    return layered(TrainConfig, table=base, updates=updates, sets=sets, where="train")


def _merged(base: dict, top: dict) -> dict:
    """``base`` with ``top`` laid over it, nested tables merged key by key."""
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def mask_bank(config: TrainConfig) -> np.ndarray:
    """``(len(accelerations) * masks_per_acceleration, 1, size)`` VDRS line masks (centre
    ``0.32 / acceleration``, as the samples)."""
    from .operators.masks import default_center_fraction, vdrs

    shape = (config.size, config.size)
    masks = [
        vdrs(shape, acceleration=a, center_fraction=default_center_fraction(a), seed=MASK_SEED0 + i)[0][:1]
        for a in config.accelerations
        for i in range(config.masks_per_acceleration)
    ]
    return np.stack(masks)


def simulate_example(key, magnitude, masks, smaps, snr_db):
    """One simulated problem ``(operator, y, x)`` from a magnitude image (see the module docstring)."""
    from .data.samples import simulate_measurements, smooth_phase
    from .operators import MultiCoilMRI

    k_mask, k_phase, k_noise, k_snr, k_flip = jax.random.split(key, 5)
    flips = jax.random.bernoulli(k_flip, 0.5, (2,))
    magnitude = jnp.where(flips[0], magnitude[::-1], magnitude)
    magnitude = jnp.where(flips[1], magnitude[:, ::-1], magnitude)
    x = (magnitude * jnp.exp(1j * smooth_phase(magnitude.shape, k_phase))).astype(jnp.complex64)
    mask = masks[jax.random.randint(k_mask, (), 0, masks.shape[0])]
    snr = jax.random.uniform(k_snr, (), minval=snr_db[0], maxval=snr_db[1])
    y, _, _ = simulate_measurements(x, smaps, mask, snr, k_noise)
    return MultiCoilMRI(smaps=smaps, mask=mask), y, x


def example_loss(forward, params, operator, y, x):
    """Mean absolute error of the real and imaginary parts, at the model's scale."""
    s = problem_scale(operator.adjoint(y))
    r = (forward(params, operator, y) - x) / s
    return jnp.mean(jnp.abs(r.real)) + jnp.mean(jnp.abs(r.imag))


def make_steps(config: TrainConfig, optimizer, images, val_images):
    """``(train_step(params, opt_state, key) -> (params, opt_state, loss), validate(params) -> (loss, psnr))``."""
    import optax

    from .metrics import psnr
    from .operators.coils import birdcage_maps

    forward = model_forward(config.model)
    masks = jnp.asarray(mask_bank(config))
    smaps = birdcage_maps(config.coils, (config.size, config.size))
    images, snr_db = jnp.asarray(images), jnp.asarray(config.snr_db, jnp.float32)

    def batch_loss(params, key):
        k_pick, k_sim = jax.random.split(key)
        picks = jax.random.randint(k_pick, (config.batch,), 0, images.shape[0])
        keys = jax.random.split(k_sim, config.batch)
        ops, ys, xs = jax.vmap(lambda k, m: simulate_example(k, m, masks, smaps, snr_db))(keys, images[picks])
        losses = jax.vmap(lambda op, y, x: example_loss(forward, params, op, y, x))(ops, ys, xs)
        return jnp.mean(losses)

    @jax.jit
    def train_step(params, opt_state, key):
        loss, grads = jax.value_and_grad(batch_loss)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    val_keys = jax.random.split(jax.random.PRNGKey(config.seed + 1), val_images.shape[0])
    val = jax.vmap(lambda k, m: simulate_example(k, m, masks, smaps, snr_db))(val_keys, jnp.asarray(val_images))

    @jax.jit
    def validate_one(params, op, y, x):
        return example_loss(forward, params, op, y, x), psnr(forward(params, op, y), ref=x)

    def validate(params):
        ops, ys, xs = val
        results = [
            validate_one(params, jax.tree.map(lambda a, i=i: a[i], ops), ys[i], xs[i]) for i in range(ys.shape[0])
        ]
        losses, psnrs = np.asarray(results, np.float64).T
        return float(losses.mean()), float(psnrs.mean())

    return train_step, validate


def default_data(config: TrainConfig):
    """``(train images, validation images, description)`` from the MNI template (:mod:`.data.brain`)."""
    from .data.brain import SPLITS, brain_slices

    train_images, _ = brain_slices("train", config.size)
    val_images, val_where = brain_slices("val", config.size)
    pick = np.linspace(0, len(val_images) - 1, min(config.val_examples, len(val_images))).round().astype(int)
    description = {
        "data": "MNI ICBM152 2009a T1 template slices (nilearn), three orientations",
        "split": f"contiguous slabs per orientation, see sgdip_jax.data.brain; splits {SPLITS}",
        "train_slices": len(train_images),
        "val_slices": [val_where[i] for i in pick],
    }
    return train_images, val_images[pick], description


def validation_figure(history) -> bytes:
    """PNG of the training and validation loss and the validation PSNR against the step."""
    from matplotlib.figure import Figure

    from .figures import png_bytes

    fig = Figure(figsize=(8, 3), dpi=100)
    ax = fig.subplots(1, 2)
    ax[0].plot(history["step"], history["train_loss"], label="training (mean since the last check)")
    ax[0].plot(history["step"], history["val_loss"], label="validation")
    ax[0].set(xlabel="step", ylabel="L1 loss", yscale="log")
    ax[0].legend(fontsize=7)
    ax[1].plot(history["step"], history["val_psnr"])
    ax[1].set(xlabel="step", ylabel="validation PSNR (dB)")
    fig.tight_layout()
    return png_bytes(fig)


def _open_run(config: TrainConfig, out: Path, force: bool) -> None:
    """Refuse ``out`` when it holds something other than a run of ``config`` (unless ``force``)."""
    from .config import from_dict, load_config

    config_path = out / CONFIG_FILE
    if force or not out.exists() or not any(out.iterdir()):
        return
    if not config_path.exists():
        raise ValueError(f"{out}: exists and is not a training run; use --force or another --out")
    if from_dict(TrainConfig, load_config(config_path)) != config:
        raise ValueError(f"{out}: holds a training run of another config ({config_path}); use --force or another --out")


def _check_images(config: TrainConfig, data):
    for name, images in zip(("training", "validation"), data):
        if images.ndim != 3 or images.shape[1:] != (config.size, config.size) or not len(images):
            raise ValueError(f"{name} images: expected (N, {config.size}, {config.size}), got {images.shape}")


def _summary(config: TrainConfig, history, description, steps) -> dict:
    """The ``info`` of the written weights: how they were made and their best validation numbers."""
    from . import __version__
    from .config import to_dict

    best = int(np.argmin(history["val_loss"]))
    return {
        "train_config": to_dict(config),
        **description,
        "steps": int(steps),
        "best_step": int(history["step"][best]),
        "val_loss": float(history["val_loss"][best]),
        "val_psnr": float(history["val_psnr"][best]),
        "seconds": float(history["seconds"][-1]),
        "version": __version__,
    }


def train(config: TrainConfig, out, *, data=None, progress=True, interrupt=None, force=False) -> Weights:
    """Train ``config.model`` into the run directory ``out`` (module docstring) and return the best
    :class:`Weights`. ``data``: ``(train images, validation images)`` ``(N, size, size)`` magnitudes
    instead of the MNI template. A directory with a run of the same config is resumed; one of another
    config is refused unless ``force``. ``interrupt.requested`` stops after the current step (saved)."""
    import optax
    from flax import serialization
    from tqdm.auto import tqdm

    from .checkpoints import save_weights
    from .config import save_config
    from .files import atomic_write, to_jsonable

    out = Path(out)
    _open_run(config, out, force)
    if data is None:
        train_images, val_images, description = default_data(config)
    else:
        train_images, val_images = (np.asarray(d, np.float32) for d in data)
        description = {"data": "given arrays", "train_slices": len(train_images), "val_slices": len(val_images)}
    _check_images(config, (train_images, val_images))

    schedule = optax.cosine_decay_schedule(config.lr, config.steps, alpha=0.01)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    train_step, validate = make_steps(config, optimizer, train_images, val_images)
    key = jax.random.PRNGKey(config.seed)
    params = init_params(config.model, key, (config.size, config.size))
    names = ("step", "train_loss", "val_loss", "val_psnr", "seconds")
    state = {"params": params, "best": params, "opt_state": optimizer.init(params), "step": 0,
             "history": {k: np.zeros(0) for k in names}}  # fmt: skip
    state_path = out / STATE_FILE
    if state_path.exists() and not force:
        state = serialization.from_state_dict(state, serialization.msgpack_restore(state_path.read_bytes()))
        state["history"] = {k: np.asarray(v, np.float64) for k, v in state["history"].items()}
        log.info("%s: resuming at step %d of %d", out, int(state["step"]), config.steps)
    else:
        out.mkdir(parents=True, exist_ok=True)
        save_config(out / CONFIG_FILE, config, overwrite=True, comment="sgdip train: rerun the same command to resume")

    def checkpoint(losses, seconds):
        """Validate, remember the best weights, and write the state, the curve and its figure."""
        val_loss, val_psnr = validate(state["params"])
        h = state["history"]
        if not len(h["val_loss"]) or val_loss < np.min(h["val_loss"]):
            state["best"] = state["params"]
        row = (state["step"], np.mean(losses) if losses else np.nan, val_loss, val_psnr, seconds)
        state["history"] = {k: np.append(h[k], v) for k, v in zip(names, row)}
        blob = serialization.msgpack_serialize(serialization.to_state_dict(jax.device_get(state)))
        atomic_write(state_path, lambda f: f.write(blob))
        curve = json.dumps(to_jsonable(state["history"]), indent=1).encode()
        atomic_write(out / "validation.json", lambda f: f.write(curve))
        figure = validation_figure(state["history"])
        atomic_write(out / "validation.png", lambda f: f.write(figure))
        return val_loss, val_psnr

    seconds = state["history"]["seconds"]
    start = time.perf_counter() - (float(seconds[-1]) if len(seconds) else 0.0)
    desc = f"train {config.model.method}"
    bar = tqdm(total=config.steps, initial=int(state["step"]), desc=desc, disable=not progress)
    losses = []
    while int(state["step"]) < config.steps:
        step = int(state["step"])
        state["params"], state["opt_state"], loss = train_step(
            state["params"], state["opt_state"], jax.random.fold_in(key, step)
        )
        losses.append(float(loss))
        if not np.isfinite(losses[-1]):
            raise FloatingPointError(f"training loss is not finite at step {step}; lower lr (now {config.lr:g})")
        state["step"] = step + 1
        bar.update(1)
        stop = interrupt is not None and interrupt.requested
        if state["step"] % config.val_every == 0 or state["step"] == config.steps or stop:
            val_loss, val_psnr = checkpoint(losses, time.perf_counter() - start)
            bar.set_postfix(val_loss=f"{val_loss:.4f}", val_psnr=f"{val_psnr:.2f}")
            losses = []
        if stop:
            log.warning("interrupted at step %d; rerun the same command to resume", state["step"])
            break
    bar.close()
    if not len(state["history"]["step"]):
        checkpoint(losses, time.perf_counter() - start)
    info = _summary(config, state["history"], description, state["step"])
    best = jax.device_get(state["best"])
    weights = Weights(model=config.model, params=best, source=str(out / WEIGHTS_FILE), info=info)
    save_weights(out / WEIGHTS_FILE, weights)
    return weights
