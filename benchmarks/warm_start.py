"""Whole volumes: every slice from scratch against warm-started slices (``--warm-start``), and whether
self-guided DIP's uncertainty map predicts its error.

The volume: ``--slices`` consecutive axial slices from the middle of the test slab of the MNI
ICBM152 T1 template that nilearn ships (:mod:`sgdip_jax.data.brain`; never used to train
``unet-post`` / ``modl``), resampled to ``--size`` px, a smooth phase, 8 birdcage coils, complex
Gaussian noise at ``--snrs`` dB on the full k-space, written as a fastMRI file; ``sgdip reconstruct``
then undersamples it (4x, fastMRI's random mask) and estimates the coil maps (ESPIRiT), as for any
fully sampled fastMRI file. Both runs use the same file, seed and settings (sgdip's defaults on the
``--base`` wide U-Net), through :func:`sgdip_jax.reconstruct.reconstruct_file`.

Per slice: PSNR / SSIM against the file's root-sum-of-squares reference, iterations, and the
Spearman correlation over the pixels of the uncertainty map with ``|error|``, beside a baseline
map that needs no network: the local standard deviation (5x5) of the zero-filled image. Per
volume: pooled PSNR, mean SSIM, total wall time and volumes per hour.

One JSON line per (SNR, mode) goes to ``OUT/warm_start.jsonl`` when that volume is done; a rerun
skips what is there. Time it alone on the machine.

    python benchmarks/warm_start.py --size 96 --slices 8 --snrs 30 20 --out OUT
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

try:  # run as a script or as benchmarks.warm_start
    from validation_set import _commit
except ImportError:  # pragma: no cover
    from benchmarks.validation_set import _commit

MODES = {"cold": 0.0, "warm": None}  # None: the --warm-start fraction


def write_volume(path: Path, size: int, slices: int, snr_db: float, split: str = "test", seed: int = 0) -> list[int]:
    """The simulated fastMRI file of the module docstring; the template's slice indices."""
    import jax
    import jax.numpy as jnp

    from sgdip_jax.data import write_fastmri
    from sgdip_jax.data.brain import _square, read_volume, split_indices, usable_slices
    from sgdip_jax.data.images import spectral_resample
    from sgdip_jax.data.samples import smooth_phase
    from sgdip_jax.operators.coils import birdcage_maps
    from sgdip_jax.operators.fft import fft2c

    volume = read_volume()
    slab = split_indices(usable_slices(volume, "axial"), split)
    if slices > len(slab):
        raise ValueError(f"--slices: the {split} slab has {len(slab)} slices, asked for {slices}")
    start = (len(slab) - slices) // 2
    indices = [int(i) for i in slab[start : start + slices]]
    smaps = birdcage_maps(8, (size, size))
    phase = np.exp(1j * np.asarray(smooth_phase((size, size), jax.random.key(seed))))
    rng = np.random.default_rng(seed)
    kspace = []
    for index in indices:
        image = np.abs(spectral_resample(_square(np.rot90(np.take(volume, index, axis=2))), (size, size)))
        clean = np.asarray(fft2c(jnp.asarray(smaps * (image / image.max()) * phase, jnp.complex64)))
        noise = rng.standard_normal(clean.shape) + 1j * rng.standard_normal(clean.shape)
        sigma = np.linalg.norm(clean) / (10 ** (snr_db / 20) * np.linalg.norm(noise))
        kspace.append(clean + sigma * noise)
    write_fastmri(path, np.stack(kspace).astype(np.complex64), recon_size=(size, size))
    return indices


def local_std(image: np.ndarray, width: int = 5) -> np.ndarray:
    """Standard deviation of ``image`` in a ``width`` x ``width`` window around each pixel."""
    from scipy.ndimage import uniform_filter

    mean = uniform_filter(image, width, mode="reflect")
    return np.sqrt(np.maximum(uniform_filter(image**2, width, mode="reflect") - mean**2, 0))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)


def run_volume(path: Path, mode: str, fraction: float, base: int, out: Path, iterations: int | None = None) -> dict:
    from sgdip_jax.inputs import InputOptions
    from sgdip_jax.methods import method_config
    from sgdip_jax.reconstruct import reconstruct_file

    config = method_config("sgdip", width=base, iterations=iterations)
    options = InputOptions(slices="all", acceleration=4.0, seed=0)
    start = time.perf_counter()
    outcomes = reconstruct_file(
        path, "sgdip", config, options, out_path=out, warm_start=fraction, force=True, progress=False
    )
    wall = time.perf_counter() - start
    rows = []
    for o in outcomes:
        reference = np.abs(o.problem.reference)
        error = np.abs(np.abs(o.image) - reference)
        support = reference > 0.02 * reference.max()  # the head, not the empty background
        rows.append(
            {
                "slice": o.problem.meta["slice"],
                "psnr": o.metrics["psnr"],
                "ssim": o.metrics["ssim"],
                "iterations": o.result.iterations,
                "wall_s": round(o.result.wall_time, 1),
                "spearman_uncertainty": spearman(o.result.uncertainty[support], error[support]),
                "spearman_zero_filled_local_std": spearman(local_std(np.abs(o.zero_filled))[support], error[support]),
            }
        )
    from sgdip_jax.report import volume_metrics

    pooled = volume_metrics(outcomes)
    return {
        "mode": mode,
        "fraction": fraction,
        "commit": _commit(),
        "wall_s": round(wall, 1),
        "volumes_per_hour": round(3600 / wall, 3),
        "psnr_pooled": pooled["psnr"],
        "ssim_mean": pooled["ssim"],
        "psnr_mean": float(np.mean([r["psnr"] for r in rows])),
        "slices": rows,
    }


def volume_key(row: dict) -> tuple:
    """What makes a volume: SNR, size, slab and its template slices (rows before ``--split``: test)."""
    return row["snr_db"], row["size"], row.get("split", "test"), tuple(row["template_slices"])


def table(rows: list[dict]) -> str:
    lines = []
    for key in sorted({volume_key(r) for r in rows}, key=lambda k: (-k[0], *k[1:])):
        snr, size, split, slices = key
        by = {r["mode"]: r for r in rows if volume_key(r) == key}
        if "cold" not in by:
            continue
        cold = by["cold"]
        title = f"\n### {snr:g} dB, {size} px, {split} slices {slices[0]}-{slices[-1]}\n"
        lines += [title, "| slice | cold PSNR | warm PSNR | diff | cold it | warm it | "
                  "rho(unc, err) cold | rho(unc, err) warm | rho(zf local std, err) |", "|" + "---|" * 9]  # fmt: skip
        warm = by.get("warm")
        for i, c in enumerate(cold["slices"]):
            w = warm["slices"][i] if warm else None
            lines.append(
                f"| {c['slice']} | {c['psnr']:.2f} | {w['psnr']:.2f} | {w['psnr'] - c['psnr']:+.2f} | "
                f"{c['iterations']} | {w['iterations']} | {c['spearman_uncertainty']:.2f} | "
                f"{w['spearman_uncertainty']:.2f} | {c['spearman_zero_filled_local_std']:.2f} |"
                if w
                else f"| {c['slice']} | {c['psnr']:.2f} | | | {c['iterations']} | | "
                f"{c['spearman_uncertainty']:.2f} | | {c['spearman_zero_filled_local_std']:.2f} |"
            )
        for mode, r in by.items():
            lines.append(
                f"\n{mode}: mean PSNR {r['psnr_mean']:.2f} dB (pooled {r['psnr_pooled']:.2f}), mean SSIM "
                f"{r['ssim_mean']:.4f}, wall {r['wall_s']:.0f} s ({r['volumes_per_hour']:.2f} volumes/hour)"
            )
        if warm:
            worst = min(w["psnr"] - c["psnr"] for c, w in zip(cold["slices"], warm["slices"]))
            lines.append(
                f"\nwarm - cold: mean PSNR {warm['psnr_mean'] - cold['psnr_mean']:+.2f} dB, worst slice "
                f"{worst:+.2f} dB, wall time ratio {warm['wall_s'] / cold['wall_s']:.2f}"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--snrs", type=float, nargs="+", default=[30.0, 20.0])
    parser.add_argument("--fraction", type=float, default=None, help="--warm-start FRACTION (default: the CLI's)")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="the template slab of the volume")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--base", type=int, default=16, help="U-Net width (the demo's)")
    parser.add_argument("--iters", type=int, default=None, help="iterations (default: sgdip's)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table", action="store_true", help="only print the table of OUT")
    args = parser.parse_args(argv)
    from sgdip_jax.reconstruct import WARM_START

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "warm_start.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if not args.table:
        for snr in args.snrs:
            volume = args.out / f"mni_axial_{args.split}_{args.size}px_{snr:g}dB.h5"
            indices = write_volume(volume, args.size, args.slices, snr, args.split)
            for mode in args.modes:
                fraction = args.fraction or WARM_START if MODES[mode] is None else MODES[mode]
                row = {"snr_db": snr, "size": args.size, "split": args.split, "template_slices": indices}
                if any(
                    volume_key(r) == volume_key(row) and (r["mode"], r["fraction"]) == (mode, fraction) for r in rows
                ):
                    continue  # this volume and mode at this fraction is done
                row |= run_volume(volume, mode, fraction, args.base, args.out / f"{mode}_{snr:g}dB", args.iters)
                rows.append(row)
                with path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{snr:g} dB {mode}: {row['psnr_mean']:.2f} dB, {row['wall_s']} s", flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
