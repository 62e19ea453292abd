"""Reconstruction quality of every method: simulated multi-coil MRI and inpainting.

Sections (each prints a markdown table; all rows go to ``OUT/quality.json``, figures to ``OUT/*.png``):

* **MRI**: the bundled shoulder image (pydicom-data ``MR2_UNCR.dcm``, a real magnitude image; coil
  maps, phase, mask and noise are simulated by :func:`sgdip_jax.data.samples.sample_mri`), 8
  birdcage coils, VDRS lines at 4x and 8x, 30 and 20 dB SNR. Methods: zero-filled, CG-SENSE, TV
  (isotropic) and L1-wavelet with ``lam="auto"`` (chosen from the data), the same three with
  ``lam`` swept over a grid and the best by PSNR kept (``*-oracle``: it uses the reference), vanilla
  DIP, reference-guided DIP, self-guided DIP.
* **Inpainting**: centre crops of scikit-image / PyWavelets photographs with 50 % and 80 % of the
  pixels missing (Bernoulli) and a centred square hole of a quarter of the side. Methods: masked
  input, biharmonic (``skimage.restoration.inpaint_biharmonic``), isotropic TV (``lam="auto"``,
  and ``tv-oracle`` with ``lam`` swept), vanilla DIP on the DIP skip network (the DIP paper's
  inpainting settings: 32 uniform input channels, Adam 0.01, input noise 0.03, widths from
  ``--skip-width``/``--skip-scales``) and
  self-guided DIP with its defaults (the MRI ones; ``z`` starts from the masked image with its holes
  filled, :meth:`sgdip_jax.operators.Inpainting.fill`).
  Inpainting is noiseless.
* ``--overfit``: PSNR of the EMA image against iteration to 3x the iteration count for vanilla and
  self-guided DIP on the MRI cases: peak (an oracle), its iteration, the value at 1x and at 3x
  (``--overfit-only``: these runs only, not the 1x runs of the tables as well).
* The robustness sweep of the self-guided DIP defaults is ``benchmarks/sweep.py``.

Metrics: PSNR and SSIM by :func:`sgdip_jax.metrics.evaluate` (fastMRI convention: magnitude images,
data range = maximum of the reference magnitude, whole image) of each method's final image; for
the DIP methods that is the EMA image after the configured iterations, and the best PSNR of the
EMA image over all iterations and its iteration are reported too, labelled *oracle* (choosing the
iteration needs the reference). Iteration ``t`` is the EMA after ``t`` steps.

DIP settings: each method's default config (``sgdip_jax.methods``) with the network, width and
iteration count replaced by ``--network``, ``--base`` and ``--iters`` when given.

Reference image of reference-guided DIP (``--reference``):

* ``motion`` (default): the same slice "scanned again": the true magnitude rotated by 3 degrees and
  shifted by 2 % / -1.5 % of the field of view (cubic interpolation), with its own smooth random
  phase and complex Gaussian noise of the case's noise level. Reference-guided DIP assumes a
  separately acquired image of the same anatomy (a prior scan, another contrast, a neighbouring
  slice); without multi-slice data this is the closest defensible stand-in. It contains the true
  anatomy, only misregistered, so it favours reference-guided DIP over a real neighbouring slice.
* ``lowres``: the zero-filled image of the contiguous fully sampled k-space centre only; it is
  computed from the measurements themselves, so it adds no information.

    python benchmarks/quality.py --quick                     # CPU smoke test: 32 px, tiny networks
    python benchmarks/quality.py --out results/quality       # full: 320 px MRI, 256 px photographs
    python benchmarks/quality.py --overfit --methods dip sgdip --out results/overfit
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from sgdip_jax import inputs
from sgdip_jax.config import NetworkConfig, from_dict, to_dict
from sgdip_jax.data.samples import IMAGE_SAMPLES, sample_image, sample_mri, smooth_phase
from sgdip_jax.figures import comparison_figure, curves_figure
from sgdip_jax.files import atomic_write
from sgdip_jax.methods import METHODS, run_method
from sgdip_jax.methods.classical import (
    CGSenseConfig,
    L1WaveletConfig,
    TVConfig,
    best_lambda,
    cg_sense,
    l1_wavelet,
    tv,
    zero_filled,
)
from sgdip_jax.metrics import center_crop, evaluate
from sgdip_jax.operators import MultiCoilMRI

MRI_CASES = {"4x30": (4, 30), "4x20": (4, 20), "8x30": (8, 30), "8x20": (8, 20)}
INPAINT_CASES = {"p50": "bernoulli:0.5", "p80": "bernoulli:0.8", "box": "box"}
MRI_METHODS = (
    "zero-filled",
    "cg-sense",
    "tv",
    "l1-wavelet",
    "cg-sense-oracle",
    "tv-oracle",
    "l1-wavelet-oracle",
    "dip",
    "ref-dip",
    "sgdip",
)
INPAINT_METHODS = ("masked", "biharmonic", "tv", "tv-oracle", "dip", "sgdip")
ORACLE = "-oracle"  # suffix: the best lam of the grid by PSNR against the reference
DIP_METHODS = ("dip", "ref-dip", "sgdip")
COILS = 8

# Classical solvers: (function, config with the fixed settings, lam grid of the oracle rows) per
# section; the rows without the suffix choose lam from the data (``lam="auto"``, GCV).
CLASSICAL = {
    "mri": {
        "cg-sense": (cg_sense, CGSenseConfig(), (0.0, 1e-3, 1e-2, 1e-1)),
        "tv": (tv, TVConfig(iterations=1000, isotropic=True), (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),
        "l1-wavelet": (l1_wavelet, L1WaveletConfig(), (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),
    },
    "inpainting": {
        "tv": (tv, TVConfig(iterations=1000, isotropic=True), (1e-4, 1e-3, 3e-3, 1e-2)),
    },
}

REF_ROTATION_DEG = 3.0
REF_SHIFT = (0.02, -0.015)  # fraction of the field of view (rows, columns)

QUICK = {
    "size": 32,
    "image_size": 32,
    "network": "unet2",
    "base": 8,
    "iters": 20,
    "skip_width": 8,
    "skip_scales": 2,
    "images": ["camera"],
}


# --------------------------------------------------------------------------- problems


@dataclasses.dataclass
class Problem(inputs.Problem):
    """A problem as ``sgdip reconstruct`` builds it (:class:`sgdip_jax.inputs.Problem`: ``meta`` holds
    the case description) with the benchmark's labels: ``section`` (``"mri"`` or ``"inpainting"``),
    ``case``, ``label`` and the ref-dip ``prior`` image."""

    section: str = ""
    case: str = ""
    label: str = ""
    prior: np.ndarray | None = None

    @classmethod
    def labelled(cls, base: inputs.Problem, meta: dict, **labels) -> Problem:
        """``base`` with ``meta`` replaced and the benchmark's ``labels`` added."""
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(inputs.Problem)}
        return cls(**{**fields, "meta": meta}, **labels)


def motion_reference(x, sigma, seed):
    """Reference of the ``motion`` kind (module docstring): ``|x|`` rotated and shifted, with its own
    smooth phase and ``CN(0, sigma^2)`` noise (the image-domain noise of the coil-combined data)."""
    from scipy import ndimage

    magnitude = np.abs(np.asarray(x))
    moved = ndimage.rotate(magnitude, REF_ROTATION_DEG, reshape=False, order=3, mode="constant")
    moved = ndimage.shift(moved, [f * n for f, n in zip(REF_SHIFT, magnitude.shape)], order=3, mode="constant")
    phase = np.asarray(smooth_phase(magnitude.shape, jax.random.fold_in(jax.random.PRNGKey(seed), 1)))
    rng = np.random.default_rng(seed + 1)
    noise = sigma * (rng.standard_normal(magnitude.shape) + 1j * rng.standard_normal(magnitude.shape)) / np.sqrt(2)
    return (moved * np.exp(1j * phase) + noise).astype(np.complex64)


def lowres_reference(case):
    """Zero-filled image of the contiguous run of sampled phase-encode lines around the k-space centre."""
    sampled = np.asarray(case.mask).reshape(-1, case.mask.shape[-1]).max(axis=0) > 0
    centre = len(sampled) // 2
    if not sampled[centre]:
        raise ValueError("lowres reference: the k-space centre line is not sampled")
    lo, hi = centre, centre + 1
    while lo > 0 and sampled[lo - 1]:
        lo -= 1
    while hi < len(sampled) and sampled[hi]:
        hi += 1
    lines = np.zeros(len(sampled), np.float32)
    lines[lo:hi] = 1.0
    centre_mask = np.broadcast_to(lines, case.mask.shape)
    return np.asarray(MultiCoilMRI.create(case.smaps, centre_mask).adjoint(np.asarray(case.y) * centre_mask))


def mri_problem(name, size, reference, seed):
    """Shoulder case ``name`` (a key of :data:`MRI_CASES`) at ``size`` px with its ref-dip reference."""
    acceleration, snr_db = MRI_CASES[name]
    case = sample_mri("shoulder", size=size, coils=COILS, acceleration=acceleration, snr_db=snr_db, seed=seed)
    prior = motion_reference(case.x, case.sigma, seed) if reference == "motion" else lowres_reference(case)
    info = {
        k: case.meta[k]
        for k in (
            "source",
            "source_file",
            "size",
            "coils",
            "acceleration",
            "actual_acceleration",
            "center_fraction",
            "mask_type",
            "snr_db",
            "seed",
        )
    }
    info.update(sigma=float(case.sigma), reference=reference)
    label = f"shoulder {size}px {acceleration}x {snr_db} dB"
    base = inputs.problem_from_case(case, source="simulated")
    return Problem.labelled(base, info, section="mri", case=name, label=label, prior=prior)


def inpainting_problem(image, name, size, seed):
    """Centre ``size``-px crop of photograph ``image`` with the mask of case ``name`` (:data:`INPAINT_CASES`)."""
    x = np.asarray(center_crop(sample_image(image), size, axes=(0, 1)))
    spec = INPAINT_CASES[name]
    spec = f"box:{size // 4}" if spec == "box" else spec
    base = inputs.problem_from_image(x, inputs.InputOptions(mask=spec, seed=seed))
    missing = float(1.0 - np.asarray(base.operator.mask).mean())
    info = {"image": image, "size": size, "mask": spec, "missing_fraction": missing, "seed": seed}
    label = f"{image} {size}px {spec}"
    return Problem.labelled(base, info, section="inpainting", case=f"{image}/{name}", label=label)


# --------------------------------------------------------------------------- methods


def network_config(args, default: NetworkConfig) -> NetworkConfig:
    """``default`` with ``--network`` / ``--base`` applied."""
    changes = {k: v for k, v in (("name", args.network), ("base", args.base)) if v is not None}
    return dataclasses.replace(default, **changes)


def dip_config(method, section, args, overrides=None):
    """Config of DIP ``method`` for ``section``: the method's defaults with ``--network``, ``--base``,
    ``--iters`` (for inpainting, DIP on the skip network of the DIP paper), then ``overrides``."""
    cls = METHODS[method].config
    base = cls()
    changes = {"network": network_config(args, base.network)}
    if section == "inpainting" and method == "dip":
        width, scales = args.skip_width, args.skip_scales
        options = (
            ("num_channels_down", (width,) * scales),
            ("num_channels_up", (width,) * scales),
            ("num_channels_skip", (4,) * scales),
        )
        changes = {
            "network": NetworkConfig(name="skip", options=options),
            "input_channels": 32,
            "lr": 0.01,
            "input_noise": 0.03,
        }
    if args.iters:
        changes["iterations"] = args.iters
    config = dataclasses.replace(base, **changes)
    return from_dict(cls, {**to_dict(config), **(overrides or {})}) if overrides else config


def describe(config) -> str:
    """Short description of a DIP config for the tables: network, width, iterations."""
    net = config.network
    width = f"/{net.base}" if net.base else ""
    if net.name == "skip":
        opts = dict(net.options)
        width = f"/{opts['num_channels_down'][0]}x{len(opts['num_channels_down'])}" if opts else ""
    return f"{net.name}{width}, {config.iterations} it"


def metrics_row(problem, method, image, wall_time, setting):
    m = evaluate(image, ref=problem.target)
    return {
        "section": problem.section,
        "case": problem.case,
        "problem": problem.label,
        "method": method,
        **m,
        "setting": setting,
        "wall_time": float(wall_time),
    }


def run_auto(problem, method):
    """A classical solver with ``lam="auto"`` (GCV on the data, no reference)."""
    fn, config, _ = CLASSICAL[problem.section][method]
    result = fn(problem.operator, problem.y, dataclasses.replace(config, lam="auto"))
    lam = result.config["lam"]
    row = metrics_row(problem, method, result.image, result.wall_time, f"lam {lam:.3g} (auto: GCV)")
    row.update(lam=lam)
    return row, result.image


def run_classical(problem, method):
    """Best-``lam`` result of a classical solver (oracle choice by PSNR), with the whole ``lam`` table."""
    fn, config, lams = CLASSICAL[problem.section][method.removesuffix(ORACLE)]
    start = time.perf_counter()
    result, table = best_lambda(fn, problem.operator, problem.y, problem.target, lams, config)
    lam = result.config["lam"]
    edge = " (grid edge)" if lam != 0 and lam in (min(lams), max(lams)) else ""  # lam = 0 cannot go lower
    row = metrics_row(
        problem, method, result.image, time.perf_counter() - start, f"best lam {lam:g} of {len(lams)}, oracle{edge}"
    )
    row.update(lam=lam, lam_table=table)
    return row, result.image


def run_dip_method(problem, method, config, seed):
    """DIP-family run: metrics of the reported image, best PSNR over iterations (oracle) and its iteration."""
    kwargs = {"prior_image": problem.prior} if METHODS[method].needs_prior else {}
    result = run_method(
        method, problem.operator, problem.y, config, key=seed, target=problem.target, progress=False, **kwargs
    )
    history = np.asarray(result.history["psnr"], np.float64)
    best = int(np.nanargmax(history))
    row = metrics_row(problem, method, result.image, result.wall_time, describe(config))
    row.update(
        iterations=int(result.iterations),
        oracle_psnr=float(history[best]),
        oracle_iteration=best + 1,
        es_stop_iteration=result.stop_iteration,
        psnr_history=history.tolist(),
        config=to_dict(config),
    )
    return row, result.image


def run_method_row(problem, method, args):
    """``(row, image)`` for any method of the problem's section."""
    if method in DIP_METHODS:
        return run_dip_method(problem, method, dip_config(method, problem.section, args), args.seed)
    if method.removesuffix(ORACLE) in CLASSICAL[problem.section]:
        return run_classical(problem, method) if method.endswith(ORACLE) else run_auto(problem, method)
    start = time.perf_counter()
    if method == "biharmonic":
        from skimage.restoration import inpaint_biharmonic

        missing = np.asarray(problem.operator.mask) == 0
        image = inpaint_biharmonic(
            problem.y,
            missing[..., 0] if missing.ndim == 3 else missing,
            channel_axis=-1 if problem.y.ndim == 3 else None,
        )
        return metrics_row(problem, method, image, time.perf_counter() - start, "scikit-image"), image
    image = zero_filled(problem.operator, problem.y).image  # "zero-filled" (MRI) and "masked" (inpainting)
    return metrics_row(problem, method, image, time.perf_counter() - start, "A^H y"), image


# --------------------------------------------------------------------------- output


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def markdown(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def oracle_cell(row):
    if "oracle_psnr" not in row:
        return "-"
    return f"{row['oracle_psnr']:.2f} @ {row['oracle_iteration']}"


def results_table(rows) -> str:
    headers = ["problem", "method", "PSNR (dB)", "SSIM", "best PSNR over its (oracle) @ it", "setting", "time (s)"]
    return markdown(
        headers,
        [
            [
                r["problem"],
                r["method"],
                f"{r['psnr']:.2f}",
                f"{r['ssim']:.4f}",
                oracle_cell(r),
                r["setting"],
                f"{r['wall_time']:.1f}",
            ]
            for r in rows
        ],
    )


def overfit_table(rows) -> str:
    headers = [
        "problem",
        "method",
        "PSNR at 1x (dB)",
        "peak PSNR (oracle)",
        "iteration of peak",
        "PSNR at 3x (dB)",
        "3x - peak (dB)",
    ]
    return markdown(
        headers,
        [
            [
                r["problem"],
                r["method"],
                f"{r['psnr_at_1x']:.2f}",
                f"{r['oracle_psnr']:.2f}",
                r["oracle_iteration"],
                f"{r['psnr_at_3x']:.2f}",
                f"{r['psnr_at_3x'] - r['oracle_psnr']:+.2f}",
            ]
            for r in rows
        ],
    )


def plain(value):
    """JSON form of the non-JSON values in the report: NumPy scalars and paths."""
    return value.item() if isinstance(value, np.generic) else str(value)


def git_commit():
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


class Report:
    """Rows and figures of one invocation; ``quality.json`` is rewritten atomically after every row."""

    def __init__(self, out: Path | None, argv, args):
        self.out = out
        self.data = {
            "meta": {
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "command": "python benchmarks/quality.py " + shlex.join(argv),
                "commit": git_commit(),
                "machine": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "device": jax.devices()[0].device_kind,
                "backend": jax.default_backend(),
                "jax": jax.__version__,
                "settings": vars(args),
            },
            "problems": {},
        }

    def add(self, section, row, problem=None):
        self.data.setdefault(section, []).append(row)
        if problem is not None:
            self.data["problems"][problem.label] = problem.meta
        self.save()

    def save(self):
        if self.out is not None:
            text = json.dumps(self.data, indent=1, default=plain).encode()
            atomic_write(self.out / "quality.json", lambda f: f.write(text))

    def figure(self, name, png):
        if self.out is not None and png is not None:
            atomic_write(self.out / name, lambda f: f.write(png))


def figure_name(problem, kind):
    return f"{kind}_{problem.case.replace('/', '_')}.png"


# --------------------------------------------------------------------------- sections


def run_tables(problems, methods, args, report):
    for section in ("mri", "inpainting"):
        rows = []
        for problem in (p for p in problems if p.section == section):
            images, shown = {}, {}
            for method in methods[section]:
                if args.overfit_only and section == "mri" and method in ("dip", "sgdip"):
                    continue
                row, images[method] = run_method_row(problem, method, args)
                rows.append(row)
                shown[method] = row
                report.add(section, row, problem)
                print(
                    f"  {problem.label}: {method} {row['psnr']:.2f} dB ({row['wall_time']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            if not images:
                continue
            report.figure(
                figure_name(problem, "images"), comparison_figure(images, problem.target, shown, title=problem.label)
            )
            curves = {m: {"psnr": np.asarray(r["psnr_history"])} for m, r in shown.items() if "psnr_history" in r}
            report.figure(
                figure_name(problem, "psnr"),
                curves_figure(curves, "psnr", "PSNR of the EMA image (dB)", title=problem.label),
            )
        if rows:
            print(f"\n## {section}\n\n{results_table(rows)}\n", flush=True)


def run_overfit(problems, methods, args, report):
    rows = []
    for problem in (p for p in problems if p.section == "mri"):
        curves = {}
        for method in (m for m in ("dip", "sgdip") if m in methods["mri"]):
            config = dip_config(method, "mri", args)
            n = config.iterations
            # a fixed horizon (no extension past 3x by self-validation), the same choice as the 1x run
            fixed = {"extend": 0.0, **({"pilot": min(config.pilot, n)} if hasattr(config, "pilot") else {})}
            long = dataclasses.replace(config, iterations=3 * n, **fixed)
            row, _ = run_dip_method(problem, method, long, args.seed)
            history = row["psnr_history"]
            row.update(iterations_1x=n, psnr_at_1x=history[n - 1], psnr_at_3x=history[-1])
            rows.append(row)
            report.add("overfit", row, problem)
            print(
                f"  {problem.label}: {method} to {3 * n} it, peak {row['oracle_psnr']:.2f} dB, final "
                f"{row['psnr_at_3x']:.2f} dB ({row['wall_time']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            curves[f"{method} (1x = {n} it)"] = {"psnr": np.asarray(history)}
        report.figure(
            figure_name(problem, "overfit"),
            curves_figure(curves, "psnr", "PSNR of the EMA image (dB)", title=f"{problem.label}, to 3x"),
        )
    if rows:
        print(f"\n## overfitting (to 3x the iterations)\n\n{overfit_table(rows)}\n", flush=True)


# --------------------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help=f"tiny CPU smoke test (defaults: {QUICK})")
    p.add_argument("--size", type=int, help="MRI image size in px (default 320)")
    p.add_argument("--image-size", type=int, help="inpainting crop size in px (default 256)")
    p.add_argument("--iters", type=int, help="iterations of the DIP methods (default: each config's default)")
    p.add_argument("--network", help="network of the DIP methods except inpainting DIP (default: the configs')")
    p.add_argument("--base", type=int, help="width of that network's first level (default: the network's)")
    p.add_argument("--skip-width", type=int, help="channels per scale of the inpainting DIP skip network (default 128)")
    p.add_argument("--skip-scales", type=int, help="scales of the inpainting DIP skip network (default 5)")
    p.add_argument(
        "--cases", nargs="+", help=f"cases: MRI {list(MRI_CASES)}, inpainting {list(INPAINT_CASES)} (default: all)"
    )
    p.add_argument("--images", nargs="+", help="photographs for inpainting (default: camera astronaut)")
    p.add_argument(
        "--methods",
        nargs="+",
        help=f"methods (default all): MRI {list(MRI_METHODS)}, inpainting {list(INPAINT_METHODS)}",
    )
    p.add_argument("--reference", choices=("motion", "lowres"), default="motion", help="ref-dip reference image")
    p.add_argument("--overfit", action="store_true", help="also run DIP and sgdip to 3x the iterations on MRI cases")
    p.add_argument(
        "--overfit-only",
        action="store_true",
        help="with --overfit, run DIP and sgdip only to 3x (their 1x value is on the curve), not in the tables",
    )
    p.add_argument("--seed", type=int, default=0, help="simulation, mask and method seed")
    p.add_argument("--out", type=Path, help="directory for quality.json and the PNG figures")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/quality.json")
    p.add_argument("--cache", help="JAX persistent compilation cache directory")
    args = p.parse_args(argv)

    defaults = {
        "size": 320,
        "image_size": 256,
        "skip_width": 128,
        "skip_scales": 5,
        "images": ["camera", "astronaut"],
        "cases": ["4x30", "p50"] if args.quick else [*MRI_CASES, *INPAINT_CASES],
    }
    for key, value in {**defaults, **(QUICK if args.quick else {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    bad = [c for c in args.cases if c not in MRI_CASES and c not in INPAINT_CASES]
    if bad:
        p.error(f"--cases: unknown {bad}; expected some of {[*MRI_CASES, *INPAINT_CASES]}")
    unknown_images = sorted(set(args.images) - set(IMAGE_SAMPLES))
    if unknown_images:
        p.error(f"--images: unknown {unknown_images}; expected some of {list(IMAGE_SAMPLES)}")
    known = set(MRI_METHODS) | set(INPAINT_METHODS)
    if args.methods and not set(args.methods) <= known:
        p.error(f"--methods: unknown {sorted(set(args.methods) - known)}; expected some of {sorted(known)}")
    if args.overfit_only and not args.overfit:
        p.error("--overfit-only needs --overfit")
    if args.out is not None and (args.out / "quality.json").exists() and not args.overwrite:
        p.error(f"{args.out / 'quality.json'} exists; pass --overwrite to replace it or choose another --out")
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    report = Report(args.out, argv, args)
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}; "
        f"MRI {args.size} px, photographs {args.image_size} px, DIP iterations: {args.iters or 'config defaults'}"
    )

    problems = [mri_problem(c, args.size, args.reference, args.seed) for c in args.cases if c in MRI_CASES]
    problems += [
        inpainting_problem(image, c, args.image_size, args.seed)
        for c in args.cases
        if c in INPAINT_CASES
        for image in args.images
    ]
    chosen = args.methods or [*MRI_METHODS, *INPAINT_METHODS]
    methods = {
        "mri": [m for m in MRI_METHODS if m in chosen],
        "inpainting": [m for m in INPAINT_METHODS if m in chosen],
    }
    run_tables(problems, methods, args, report)
    if args.overfit:
        run_overfit(problems, methods, args, report)
    return report.data


if __name__ == "__main__":
    main()
