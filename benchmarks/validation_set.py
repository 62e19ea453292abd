"""The open validation set: self-guided DIP against the classical baselines and vanilla DIP on open
MR images that no default or rule was tuned on.

Images (magnitude, real, scaled to maximum 1; coils, phase, undersampling and noise simulated as
:func:`sgdip_jax.data.samples.simulate_case` does for ``sample_mri``):

* ``abdomen``: pydicom-data's ``MR-SIEMENS-DICOM-WithOverlays.dcm`` (484x484 abdomen), centre square;
* ``mni-{axial,coronal,sagittal}-{a,b}``: the MNI ICBM152 T1 template that nilearn ships, per
  orientation the middle slice of the validation slab (``a``) and of the test slab (``b``) of
  :mod:`sgdip_jax.data.brain`, never used to train ``unet-post`` / ``modl``;
* ``head-low``: matplotlib's sagittal head, a 160 px crop of its lower part (neck and cerebellum;
  the sweep's ``head`` case is the whole image).

The sweep (:mod:`benchmarks.sweep`) tunes on the bundled shoulder and the whole head; nothing here
feeds back into a default. Per case the methods run at their defaults: ``tv`` and ``l1-wavelet``
with ``lam="auto"`` (GCV), ``dip`` and ``sgdip`` (self-validated). For self-guided DIP the
per-iteration PSNR of the moving average (before the final data-consistency step) also scores the
other ground-truth-free stopping rules on the same run: the moving average at the budget ``T``, ES-WMV
(the statistic's minimum once it has not fallen for ``patience`` steps) and the oracle (the best
iteration, labelled as one).

One JSON line per (case, method) goes to ``OUT/results.jsonl`` as soon as it is done; a rerun skips
what is there.

    python benchmarks/validation_set.py --size 96 --accelerations 4 8 --snrs 30 20 --seeds 0 --out OUT
    python benchmarks/validation_set.py --out OUT --table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sgdip_jax.data.images import read_dicom, spectral_resample
from sgdip_jax.data.samples import simulate_case
from sgdip_jax.methods import run_method
from sgdip_jax.metrics import evaluate

METHODS = ("tv", "l1-wavelet", "dip", "sgdip")
CLASSICAL = ("tv", "l1-wavelet")
REF_DIP = "ref-dip"  # needs --prior-offset: its input is an adjacent slice of the same MNI volume


def _unit(image) -> np.ndarray:
    image = np.abs(np.asarray(image, np.float64))
    return (image / image.max()).astype(np.float32)


def _square_crop(image, rows=None, cols=None) -> np.ndarray:
    h, w = image.shape
    n = min(h, w)
    rows = rows or ((h - n) // 2, (h - n) // 2 + n)
    cols = cols or ((w - n) // 2, (w - n) // 2 + n)
    return image[rows[0] : rows[1], cols[0] : cols[1]]


def _abdomen(size):
    from pydicom.data import get_testdata_file

    return _unit(
        spectral_resample(_square_crop(read_dicom(get_testdata_file("MR-SIEMENS-DICOM-WithOverlays.dcm"))), size)
    )


def _head_low(size):
    from sgdip_jax.data.samples import _read_sample

    return _unit(spectral_resample(_read_sample("head")[90:250, 48:208], size))


def _mni(orientation, which, offset=0):
    """The middle slice of the held-out slab ``which``, or the slice ``offset`` mm (voxels) from it."""

    def load(size):
        from sgdip_jax.data import brain

        volume = brain.read_volume()
        split = "val" if which == "a" else "test"
        held = brain.split_indices(brain.usable_slices(volume, orientation), split)
        return brain.slice_image(volume, orientation, held[len(held) // 2] + offset, size).astype(np.float32)

    return load


IMAGES = {
    "abdomen": _abdomen,
    **{f"mni-{o}-{w}": _mni(o, w) for o in ("axial", "coronal", "sagittal") for w in "ab"},
    "head-low": _head_low,
}


def es_wmv_choice(stat, patience) -> int:
    """The iteration ES-WMV reports: the statistic's running minimum once it has not fallen for
    ``patience`` steps (the last minimum when that never happens)."""
    stat = np.where(np.isfinite(stat), stat, np.inf)
    best = 0
    for t, value in enumerate(stat):
        if value < stat[best]:
            best = t
        if t - best >= patience:
            break
    return best


def _commit() -> str | None:
    """The code's git commit (``None`` outside a checkout)."""
    import subprocess

    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True
            ).stdout.strip()
            or None
        )
    except OSError:
        return None


def prior_slice(image_name, offset, size) -> np.ndarray:
    """Reference-guided DIP's input for an MNI case: the slice ``offset`` mm away in the template
    (a neighbour of the target, never the target itself)."""
    if not image_name.startswith("mni-") or offset == 0:
        raise ValueError(f"{REF_DIP}: needs an mni-* image and a non-zero --prior-offset, got {image_name}, {offset}")
    _, orientation, which = image_name.split("-")
    return _mni(orientation, which, offset)(size)


_IMAGES_READ: dict = {}  # (image, size) -> magnitude, read once per process


def run_case(image_name, size, acceleration, snr, seed, method, base=16, overrides=None, tag="", prior_offset=0):
    key = (image_name, size)
    if key not in _IMAGES_READ:
        _IMAGES_READ[key] = IMAGES[image_name](size)
    case, _ = simulate_case(_IMAGES_READ[key], 8, acceleration, snr, seed)
    ref = np.abs(np.asarray(case.x))
    t0 = time.perf_counter()
    config = {"network": {"base": base}, **(overrides or {})} if method in ("dip", "sgdip", REF_DIP) else {}
    extra = {"prior_image": prior_slice(image_name, prior_offset, size)} if method == REF_DIP else {}
    result = run_method(method, case.operator(), case.y, config, key=seed, target=case.x, progress=False, **extra)
    if method == REF_DIP:
        tag = f"+{prior_offset:g}mm{tag}"
    row = {
        "case": f"{image_name}-{size}-{acceleration:g}x{snr:g}",
        "image": image_name,
        "size": size,
        "acceleration": acceleration,
        "snr_db": snr,
        "seed": seed,
        "method": method + tag,
        "commit": _commit(),
        "overrides": overrides or {},
        "wall_s": round(time.perf_counter() - t0, 1),
        "iterations": result.iterations,
        **evaluate(np.abs(result.image), ref=ref),
    }
    if method in CLASSICAL:
        row["lam"] = result.config.get("lam")
    if method == "sgdip":
        curve = np.asarray(result.history["psnr"])
        patience = result.config["early_stopping"]["patience"]
        row["rules"] = {  # PSNR of the moving average (before the final step) where each rule stops
            "self-validation": float(curve[result.selection["iteration"]]) if result.selection else None,
            "budget": float(curve[min(result.config["iterations"], len(curve)) - 1]),
            "es-wmv": float(curve[es_wmv_choice(result.history["es_stat"], patience)]),
            "oracle": float(curve.max()),
        }
        row["selection"] = result.selection
        row["noise_scale"] = result.config["noise_scale"]
    return row


def table(rows) -> str:
    by_case: dict = {}
    for r in rows:
        by_case.setdefault((r["case"], r["seed"]), {})[r["method"]] = r
    lines = [
        "| case | seed | TV | L1-wav | DIP | self-guided DIP (SSIM) | c, stop | over best classical | over DIP |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    margins = []
    for (case, seed), m in by_case.items():
        if not all(k in m for k in METHODS):
            continue
        best = max(m["tv"]["psnr"], m["l1-wavelet"]["psnr"])
        s = m["sgdip"]
        sel = s.get("selection") or {}
        chosen = f"{sel.get('chosen', {}).get('noise_scale', s.get('noise_scale', '-'))}, {sel.get('iteration', '-')}"
        margins.append(
            (
                s["psnr"] - best,
                s["psnr"] - m["dip"]["psnr"],
                case,
                seed,
                s["ssim"] - max(m["tv"]["ssim"], m["l1-wavelet"]["ssim"]),
            )
        )
        lines.append(
            f"| {case} | {seed} | {m['tv']['psnr']:.2f} | {m['l1-wavelet']['psnr']:.2f} | {m['dip']['psnr']:.2f} | "
            f"{s['psnr']:.2f} ({s['ssim']:.3f}) | {chosen} | {s['psnr'] - best:+.2f} | "
            f"{s['psnr'] - m['dip']['psnr']:+.2f} |"
        )
    if margins:
        order = np.argsort([x[0] for x in margins])
        lines = lines[:2] + [lines[2 + i] for i in order]
        a = np.array([x[:2] for x in margins])
        ssim_margin = np.array([x[4] for x in margins])
        lines.append("")
        lines.append(
            f"{len(margins)} cases: over best classical worst {a[:, 0].min():+.2f} dB, mean {a[:, 0].mean():+.2f}; "
            f"over DIP worst {a[:, 1].min():+.2f}, mean {a[:, 1].mean():+.2f}; SSIM over best classical worst "
            f"{ssim_margin.min():+.4f}, mean {ssim_margin.mean():+.4f}"
        )
    rules = [r["rules"] for r in rows if r["method"] == "sgdip" and "rules" in r]
    if rules:
        lines.append("")
        lines.append("| stopping rule (same runs) | mean PSNR | mean gap to oracle | worst gap |")
        lines.append("|---|---|---|---|")
        for name in ("self-validation", "es-wmv", "budget", "oracle"):
            values = np.array([r[name] for r in rules if r[name] is not None])
            gap = np.array([r["oracle"] - r[name] for r in rules if r[name] is not None])
            lines.append(f"| {name} | {values.mean():.2f} | {gap.mean():.2f} | {gap.max():.2f} |")
    return "\n".join(lines)


def ref_table(rows) -> str:
    """Reference-guided DIP (input: a neighbouring slice) beside self-guided DIP and TV, per case and
    seed, and the mean margin of self-guided DIP over each reference offset."""
    by_case: dict = {}
    for r in rows:
        by_case.setdefault((r["case"], r["seed"]), {})[r["method"]] = r
    refs = sorted({m for ms in by_case.values() for m in ms if m.startswith(REF_DIP)})
    lines = ["| case | seed | TV | self-guided DIP | " + " | ".join(refs) + " |", "|---" * (4 + len(refs)) + "|"]
    margins = {m: [] for m in refs}
    for (case, seed), m in sorted(by_case.items()):
        if not all(k in m for k in ("tv", "sgdip", *refs)):
            continue
        for ref in refs:
            margins[ref].append(m["sgdip"]["psnr"] - m[ref]["psnr"])
        cells = " | ".join(f"{m[ref]['psnr']:.2f}" for ref in refs)
        lines.append(f"| {case} | {seed} | {m['tv']['psnr']:.2f} | {m['sgdip']['psnr']:.2f} | {cells} |")
    for ref, values in margins.items():
        if values:
            lines.append(
                f"\nself-guided DIP over {ref}: mean {np.mean(values):+.2f} dB, worst {min(values):+.2f}, "
                f"best {max(values):+.2f} ({len(values)} cases)"
            )
    return "\n".join(lines)


def figure(rows, path) -> None:
    """PSNR of every method per case (bars), self-guided DIP's chosen image marked; cases sorted by
    self-guided DIP's margin over the better classical method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_case: dict = {}
    for r in rows:
        by_case.setdefault((r["case"], r["seed"]), {})[r["method"]] = r
    cases = [(k, m) for k, m in by_case.items() if all(x in m for x in METHODS)]
    cases.sort(key=lambda km: km[1]["sgdip"]["psnr"] - max(km[1]["tv"]["psnr"], km[1]["l1-wavelet"]["psnr"]))
    labels = {"tv": "TV (auto)", "l1-wavelet": "L1-wavelet (auto)", "dip": "vanilla DIP", "sgdip": "self-guided DIP"}
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(cases) + 2), 3.6))
    width = 0.8 / len(METHODS)
    for i, method in enumerate(METHODS):
        x = np.arange(len(cases)) + (i - (len(METHODS) - 1) / 2) * width
        ax.bar(x, [m[method]["psnr"] for _, m in cases], width, label=labels[method])
    ax.set_xticks(np.arange(len(cases)), [k[0].replace("-96-", "\n") for k, _ in cases], fontsize=7)
    values = [m[x]["psnr"] for _, m in cases for x in METHODS]
    ax.set_ylim(min(values) - 1, max(values) + 2)  # room for the legend above the bars
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("open validation set (not tuned on): reported images, worst case first", fontsize=9)
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sigma_table(images, sizes, snrs, seed=0) -> str:
    """The noise level the data floor and the discrepancy rule would use, estimated from each case
    (:func:`~sgdip_jax.methods.parameter_choice.estimate_sigma`: the sampled outer k-space corners),
    over the true one."""
    from sgdip_jax.methods.parameter_choice import estimate_sigma

    lines = ["| image | " + " | ".join(f"{n} px {s:g} dB" for n in sizes for s in snrs) + " |"]
    lines.append("|---" * (1 + len(sizes) * len(snrs)) + "|")
    for name in images:
        cells = []
        for size in sizes:
            magnitude = IMAGES[name](size)
            for snr in snrs:
                case, _ = simulate_case(magnitude, 8, 4.0, snr, seed)
                cells.append(f"{estimate_sigma(case.operator(), case.y) / float(case.sigma):.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", nargs="+", default=list(IMAGES), choices=list(IMAGES))
    parser.add_argument("--size", type=int, nargs="+", default=[96])
    parser.add_argument("--accelerations", type=float, nargs="+", default=[4.0])
    parser.add_argument("--snrs", type=float, nargs="+", default=[30.0, 20.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=[*METHODS, REF_DIP])
    parser.add_argument(
        "--prior-offsets",
        type=int,
        nargs="+",
        default=[1, 3],
        help=f"{REF_DIP}: its input is the MNI slice this many mm (slices) from the target (default 1 3)",
    )
    parser.add_argument("--base", type=int, default=16, help="U-Net width of the DIP methods (the demo's)")
    parser.add_argument(
        "--sgdip", type=json.loads, default=None, help="JSON overrides of the sgdip defaults (a variant)"
    )
    parser.add_argument("--tag", default="", help="suffix of the method name for a variant, e.g. :floor0")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table", action="store_true", help="print the markdown tables of OUT and exit")
    parser.add_argument("--figure", type=Path, help="with --table: also draw the PSNR bars into this PNG")
    parser.add_argument(
        "--sigma", action="store_true", help="print the noise-estimate table (estimate / true) and exit"
    )
    args = parser.parse_args(argv)
    if args.sigma:
        print(sigma_table(args.images, args.size, args.snrs))
        return
    path = args.out / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if args.table:
        print(table(rows))
        if any(r["method"].startswith(REF_DIP) for r in rows):
            print("\n" + ref_table(rows))
        if args.figure:
            figure(rows, args.figure)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    done = {(r["case"], r["seed"], r["method"]) for r in rows}
    for seed in args.seeds:
        for snr in args.snrs:
            for acceleration in args.accelerations:
                for size in args.size:
                    for image in args.images:
                        runs = [(m, 0) for m in args.methods if m != REF_DIP]
                        runs += [(REF_DIP, o) for o in args.prior_offsets if REF_DIP in args.methods]
                        for method, offset in runs:
                            name = f"{image}-{size}-{acceleration:g}x{snr:g}"
                            tag = args.tag if method == "sgdip" else ""
                            label = method + (f"+{offset:g}mm" if method == REF_DIP else tag)
                            if (name, seed, label) in done:
                                continue
                            overrides = args.sgdip if method == "sgdip" else None
                            case = (image, size, acceleration, snr, seed, method, args.base, overrides, tag)
                            row = run_case(*case, prior_offset=offset)
                            with path.open("a") as f:
                                f.write(json.dumps(row) + "\n")
                            print(f"{name} seed {seed} {label}: {row['psnr']:.2f} dB ({row['wall_s']} s)", flush=True)


if __name__ == "__main__":
    main()
