"""Shared pieces of the theory-validation scripts: the MR problems, the network zoo, the DIP network as
a function of its parameters, the kernel, k-space error measures, and output writing.

Everything works on the real representation of the network output: a flat vector of the
``(1, H, W, 2)`` channels-last tensor (real, imag), ``n = 2 H W`` entries.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["figure.constrained_layout.use"] = True
import numpy as np  # noqa: E402

from sgdip_jax import metrics  # noqa: E402
from sgdip_jax.channels import channels_to_complex, complex_to_channels  # noqa: E402
from sgdip_jax.config import NetworkConfig  # noqa: E402
from sgdip_jax.data.samples import sample_mri, simulate_measurements  # noqa: E402
from sgdip_jax.files import atomic_write  # noqa: E402
from sgdip_jax.metrics import missing_kspace_recovered  # noqa: E402
from sgdip_jax.networks import (  # noqa: E402
    apply_network,
    get_network,
    init_network,
    network_input_shape,
    param_count,
    with_image_size,
)
from sgdip_jax.ntk import ntk_matrix, operator_map  # noqa: E402
from sgdip_jax.operators import MultiCoilMRI, fft2c, measured_entries  # noqa: E402

# Small networks for the dense-kernel checks: label -> (registry name, overrides, input channels).
# Small widths so that the full kernel of a 32 x 32 output fits a laptop; "unet2-wide" is the wide variant.
ZOO = {
    "unet1": ("unet1", {"base": 8}, 2),
    "unet2": ("unet2", {"base": 8}, 2),
    "unet3": ("unet3", {"base": 8}, 2),
    "unet4": ("unet4", {"base": 8}, 2),
    "unet2-wide": ("unet2", {"base": 32}, 2),
    "deep_decoder": ("deep_decoder", {"num_layers": 4, "features": 32, "need_sigmoid": False}, 32),
    "conv_decoder": ("conv_decoder", {"num_layers": 4, "features": 32, "in_size": (4, 4)}, 32),
}

# The product's networks at their CPU widths (U-Nets of depth 2-4 at the demo's width 16, the DIP skip
# network, Deep Decoder and ConvDecoder), used by the frequency-recovery and error-subspace studies:
# label -> (registry name, overrides, input channels). Built with the product's weight init
# (:data:`PRODUCT_INIT`).
_SKIP_WIDTH = (32, 32, 32, 32)
ARCHITECTURES = {
    "unet2": ("unet2", {"base": 16}, 2),
    "unet3": ("unet3", {"base": 16}, 2),
    "unet4": ("unet4", {"base": 16}, 2),
    "skip": (
        "skip",
        {
            "num_channels_down": _SKIP_WIDTH,
            "num_channels_up": _SKIP_WIDTH,
            "num_channels_skip": (4,) * 4,
            "need_sigmoid": False,
        },
        2,
    ),
    "deep_decoder": ("deep_decoder", {"num_layers": 4, "features": 64, "need_sigmoid": False}, 64),
    "conv_decoder": ("conv_decoder", {"num_layers": 4, "features": 64, "in_size": (8, 8)}, 64),
}
PRODUCT_INIT = {"weight_init": "normal002"}


@dataclasses.dataclass
class Problem:
    """A noiseless (or noisy) Cartesian MR problem in the real representation of network outputs."""

    label: str
    x: np.ndarray  # complex (H, W) ground truth
    operator: Any  # MultiCoilMRI
    A: Any  # LinearMap on flat (1, H, W, 2) outputs -> measured entries, [Re; Im]
    x_flat: np.ndarray  # float64 (n,)
    y: np.ndarray  # float64 (m,) = A x_flat (+ noise), measured entries
    y_kspace: np.ndarray  # complex (C, H, W): the same measurements as the operator's output

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.x.shape)

    @property
    def mask(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.operator.mask), self.hw)


def make_problem(
    label: str,
    size: int,
    coils: int,
    acceleration: float = 4.0,
    snr_db: float | None = None,
    seed: int = 0,
    name: str = "shoulder",
) -> Problem:
    """The bundled MR case (simulated coils and phase on a real magnitude image) at ``size``.

    Noiseless ``y = A x`` unless ``snr_db`` is given (then the sample's noisy k-space is used).
    ``coils = 1`` is single-coil (``S = 1``).
    """
    case = sample_mri(
        name=name,
        size=size,
        coils=max(coils, 1),
        acceleration=acceleration,
        snr_db=30.0 if snr_db is None else snr_db,
        seed=seed,
    )
    if coils == 1 and snr_db is not None:
        raise ValueError("snr_db: noisy problems are multi-coil here (coils > 1)")
    smaps = np.ones((1, size, size), np.complex64) if coils == 1 else case.smaps
    op = MultiCoilMRI.create(smaps, case.mask)
    y_kspace = np.asarray(op(jnp.asarray(case.x))) if snr_db is None else np.asarray(case.y)
    return _problem(label, np.asarray(case.x), op, y_kspace)


def denoising_problem(label: str, size: int, snr_db: float, seed: int = 0, name: str = "shoulder") -> Problem:
    """The ``A = I`` control: the image of :func:`make_problem`, fully sampled single-coil k-space
    (``A = F``, unitary, so fitting ``y = F x + n`` is denoising ``x + F^H n``), complex Gaussian noise
    with the same SNR definition (:func:`~sgdip_jax.data.samples.simulate_measurements`)."""
    x = sample_mri(name=name, size=size, coils=1, snr_db=snr_db, seed=seed).x
    ones = jnp.ones((1, size, size), jnp.complex64)
    op = MultiCoilMRI.create(ones, jnp.ones((size, size), jnp.float32))
    y, _, _ = simulate_measurements(jnp.asarray(x), ones, op.mask, snr_db, jax.random.PRNGKey(seed))
    return _problem(label, np.asarray(x), op, np.asarray(y))


def _problem(label: str, x: np.ndarray, op, y_kspace: np.ndarray) -> Problem:
    size = x.shape[-1]
    amap = operator_map(op, (1, size, size, 2))
    keep = np.flatnonzero(measured_entries(op, y_kspace.shape))
    kept = y_kspace.reshape(-1)[keep]
    x_flat = np.asarray(complex_to_channels(jnp.asarray(x)), np.float64).ravel()
    y = np.concatenate([kept.real, kept.imag]).astype(np.float64)
    return Problem(label, x, op, amap, x_flat, y, y_kspace)


@dataclasses.dataclass
class DipNet:
    """A DIP network ``f(params) = net(params, z)`` (flat output) with its initial parameters."""

    label: str
    module: Any
    variables: dict
    z: jnp.ndarray

    @property
    def params(self):
        return self.variables["params"]

    def apply(self, params, x):
        """``f(params, x)`` with neural-tangents' signature (output ``(1, H, W, 2)``)."""
        return apply_network(self.module, {**self.variables, "params": params}, x)[0]

    def flat(self, params):
        return self.apply(params, self.z).reshape(-1)

    @property
    def n_params(self) -> int:
        return param_count(self.variables)


def make_network(label: str, hw: tuple[int, int], key, overrides: dict | None = None, zoo: dict = ZOO) -> DipNet:
    """Network ``label`` of ``zoo`` (default :data:`ZOO`; GroupNorm: a per-sample function, as the NTK
    needs) with a fixed input ``z ~ U[0, 0.1)`` of the shape the network needs for a ``hw`` output."""
    name, base_overrides, in_channels = zoo[label]
    module = get_network(name, **{**base_overrides, **(overrides or {}), "out_channels": 2, "norm": "group"})
    module = with_image_size(module, hw)
    k_z, k_init = jax.random.split(key)
    z = 0.1 * jax.random.uniform(k_z, (1, *network_input_shape(module, hw, in_channels)), jnp.float32)
    return DipNet(label, module, init_network(module, k_init, z), z)


def network_config(label: str, overrides: dict | None = None) -> NetworkConfig:
    """:data:`ARCHITECTURES` network ``label`` as the product trains it (GroupNorm, as for the kernel)."""
    name, base_overrides, _ = ARCHITECTURES[label]
    return NetworkConfig(name=name, norm="group", options=tuple({**base_overrides, **(overrides or {})}.items()))


class Tracked(NamedTuple):
    """A run of :func:`run_tracked`: the result, and after every chunk of ``config.chunk`` iterations
    the iteration count and the moving-average and raw images in the units of ``x`` (complex
    ``(T, H, W)``)."""

    result: Any
    iterations: np.ndarray
    ema: np.ndarray
    raw: np.ndarray


def run_tracked(method: str, problem: Problem, config, key) -> Tracked:
    """Run a DIP method of :mod:`sgdip_jax.methods` on ``problem`` with the ground truth as target,
    recording the images along the reported run (a run that restarts keeps the frames of its last
    start only). The final data-consistency step is switched off: the frames and the result are the
    network's images (and the result's moving average gives the frames' units exactly)."""
    from sgdip_jax.methods import run_method

    config = dataclasses.replace(config, data_consistency=False)

    frames = []

    def record(info):
        # the state's step counts on through an extension and starts again with a restarted run
        step = int(np.asarray(info.state.step).reshape(-1)[0])
        if frames and step <= frames[-1][0]:
            frames.clear()  # the run started again: its earlier frames are not the reported run's
        frames.append((step, np.asarray(info.state.ema), np.asarray(info.state.image)))

    result = run_method(
        method,
        problem.operator,
        jnp.asarray(problem.y_kspace),
        config,
        key,
        target=jnp.asarray(problem.x),
        progress=False,
        callback=record,
    )
    steps, ema, raw = (np.stack(column) for column in zip(*frames))
    ema, raw = (np.asarray(channels_to_complex(jnp.asarray(a))) for a in (ema, raw))
    # The engine works on rescaled measurements; the final frame is the result's EMA image times the scale.
    scale = np.linalg.norm(ema[-1]) / np.linalg.norm(result.ema_image)
    return Tracked(result, steps, ema / scale, raw / scale)


def kernel(net: DipNet, cache: Path | None = None, block_size: int = 128) -> np.ndarray:
    """The empirical NTK ``J J^T`` of the flat output, float64 ``(n, n)`` (NTK-vector products, blocks).

    With ``cache`` (a folder), the float32 kernel is stored as ``ntk_<label>_<hash>.npy``, the hash
    covering the module, its input and its parameters, and reused when present.
    """
    path = None
    if cache is not None:
        digest = hashlib.sha1(repr(net.module).encode())
        for leaf in [net.z, *jax.tree.leaves(net.params)]:
            digest.update(np.asarray(leaf).tobytes())
        path = Path(cache) / f"ntk_{net.label}_{digest.hexdigest()[:16]}.npy"
        if path.exists():
            return np.load(path).astype(np.float64)
    K = np.asarray(ntk_matrix(net.apply, net.params, net.z, implementation=2, block_size=block_size))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(os.fspath(path), lambda fobj: np.save(fobj, K))
    return K.astype(np.float64)


def rescaled(problem: Problem, f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(s x, s y)`` with ``s = ||f(0)|| / ||A^T y||``: DIP's measurement rescaling, so that the target
    and the network's initial output have comparable norms."""
    s = np.linalg.norm(f0) / np.linalg.norm(np.asarray(problem.A.rmatvec(jnp.asarray(problem.y, jnp.float32))))
    return s * problem.x_flat, s * problem.y


def psnr(images: np.ndarray, *, ref: np.ndarray) -> np.ndarray:
    """PSNR of each image of ``(T, H, W)`` against ``ref`` (:func:`sgdip_jax.metrics.psnr`: magnitudes,
    data range ``max |ref|``)."""
    one = lambda im: metrics.psnr(im, ref=jnp.asarray(ref, jnp.complex64))  # noqa: E731
    return np.asarray(jax.vmap(one)(jnp.asarray(images, jnp.complex64)), np.float64)


def kspace(flat: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Centred k-space of flat ``(..., 2 H W)`` outputs: complex ``(..., H, W)``."""
    return np.asarray(fft2c(jnp.asarray(images(flat, hw))))


def images(flat: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Complex images ``(..., H, W)`` of flat ``(..., 2 H W)`` outputs."""
    t = jnp.asarray(np.asarray(flat).reshape(np.shape(flat)[:-1] + (*hw, 2)), jnp.float32)
    return np.asarray(channels_to_complex(t))


def unsampled_error(flat: np.ndarray, x_flat: np.ndarray, mask: np.ndarray, band=None) -> np.ndarray:
    """``||(1 - M) B (F f - F x)|| / ||(1 - M) B F x||`` over the last axis (1: nothing recovered;
    one minus :func:`~sgdip_jax.metrics.missing_kspace_recovered`)."""
    hw = mask.shape
    return 1.0 - np.asarray(missing_kspace_recovered(images(flat, hw), images(x_flat, hw), mask, band), np.float64)


def unsampled_cosine(flat: np.ndarray, x_flat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``Re <(1 - M) F f, (1 - M) F x> / (||(1 - M) F f|| ||(1 - M) F x||)`` over the last axis: whether
    what was put into the missing k-space points the right way (1), is unrelated (0) or opposite (-1),
    whatever its magnitude."""
    hw = mask.shape
    off = (1.0 - mask).reshape(-1)
    a = (kspace(flat, hw).reshape(np.shape(flat)[:-1] + (-1,))) * off
    b = kspace(x_flat, hw).reshape(-1) * off
    return np.real(a @ b.conj()) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b), 1e-30)


def radial_bands(hw: tuple[int, int], edges=(0.0, 0.125, 0.25, 0.5, 1.0)) -> list[np.ndarray]:
    """Boolean k-space masks of radial bands ``edges[i] <= |k| / k_max < edges[i+1]`` (``k_max``: the
    half-width along each axis; corners beyond 1 fall in the last band)."""
    h, w = hw
    ky, kx = np.meshgrid((np.arange(h) - h // 2) / (h / 2), (np.arange(w) - w // 2) / (w / 2), indexing="ij")
    r = np.sqrt(kx**2 + ky**2)
    bands = [(r >= lo) & (r < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    bands[-1] |= r >= edges[-1]
    return bands


def parser(description: str, size: int, name: str, cache: bool = False) -> argparse.ArgumentParser:
    """Common options; ``--out`` defaults to ``analysis/outputs/<name>`` (git-ignored); ``cache``: add
    ``--cache`` (for scripts that form dense kernels with :func:`kernel`)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", type=int, default=size, help=f"image size (default {size})")
    default_out = Path(__file__).resolve().parent / "outputs" / name
    p.add_argument(
        "--out",
        type=Path,
        default=default_out,
        help=f"output folder for figures and summary.json (default analysis/outputs/{name})",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smallest configuration (CI smoke test)")
    if cache:
        p.add_argument(
            "--cache",
            type=Path,
            default=None,
            help="folder to store and reuse empirical kernels (keyed by network, input and parameters)",
        )
    return p


def prepare_out(out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_figure(fig, path: Path) -> str:
    """Write ``fig`` as a PNG (atomically) and close it; returns the file name."""
    import matplotlib.pyplot as plt

    atomic_write(os.fspath(path), lambda fobj: fig.savefig(fobj, format="png", dpi=90, bbox_inches="tight"))
    plt.close(fig)
    return path.name


def plain(v):
    """``v`` with numpy scalars and arrays (in dicts, lists and tuples) as plain JSON values."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, (np.ndarray, jnp.ndarray)):
        return plain(np.asarray(v).tolist())
    if isinstance(v, (np.floating, float)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def write_summary(out: Path, summary: dict) -> Path:
    """``summary.json`` written atomically (:func:`plain` values)."""
    path = Path(out) / "summary.json"
    text = json.dumps(plain(summary), indent=2)
    atomic_write(os.fspath(path), lambda fobj: fobj.write(text.encode()))
    return path


def timed(fn: Callable, *args, **kwargs):
    """``(result, seconds)``."""
    import time

    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
