"""Supervised baselines in and out of their training distribution.

``unet-post`` and ``modl`` are trained on MNI template brain slices (``sgdip train``; the bundled
checkpoints by default). They are tested on

* **in distribution**: held-out template slices (the ``test`` split of :mod:`sgdip_jax.data.brain`,
  the middle slice of the test slab of each orientation), 4x / 8x VDRS, 30 / 20 dB;
* **out of distribution**: the shoulder and the sagittal head (:func:`sample_mri`), the same
  conditions;
* **untrained conditions**: 12x VDRS at 30 dB and 4x at 10 dB (training: 4-8x, 20-40 dB), on a
  held-out brain slice and on the shoulder.

All cases: 8 birdcage coils, 128 px, seed 0 (mask seed 0; the training masks use seeds from 1000).
Columns (``--methods``): zero-filled, TV with ``lam="auto"`` (GCV, no reference; about a minute per
case on 2 CPU cores), ``unet-post``, ``modl``, or any other method (``dip``, ``sgdip``); PSNR / SSIM
by :func:`sgdip_jax.metrics.evaluate`. DIP methods run their defaults on the depth-4 U-Net of width
16 (the demo's network), with seed 0. They take minutes per case: the default run leaves
them out (on the shoulder and head cases the 128 px table of ``benchmarks/RESULTS.md`` has them),
and ``--cases`` picks the cases to run them on.

    python benchmarks/distribution_shift.py --out results/distribution_shift.json
    python benchmarks/distribution_shift.py --methods dip sgdip --cases brain-axial-111-4x30 --out dip.json
"""

from __future__ import annotations

import argparse
import json
import time

import jax.numpy as jnp
import numpy as np

from sgdip_jax.checkpoints import load_weights
from sgdip_jax.data.brain import brain_slices
from sgdip_jax.data.samples import sample_mri, simulate_case
from sgdip_jax.methods import METHODS, run_method
from sgdip_jax.metrics import evaluate

CONDITIONS = [(4, 30), (4, 20), (8, 30), (8, 20)]
DIP_NETWORK = {"name": "unet4", "base": 16}  # the demo's and the 128 px table's network
UNTRAINED = [(12, 30), (4, 10)]


def brain_test_images(size):
    """``{"brain-axial-<slice>": magnitude, ...}``: the middle test slice of each orientation."""
    images = {}
    for orientation in ("axial", "coronal", "sagittal"):
        slices, where = brain_slices("test", size, orientations=(orientation,))
        mid = len(slices) // 2
        images[f"brain-{orientation}-{where[mid]['slice']}"] = slices[mid]
    return images


def cases(size):
    """``[(group, name, acceleration, snr_db, case), ...]``."""
    brains = brain_test_images(size)
    out = []
    for acc, snr in CONDITIONS:
        out += [("in distribution", n, acc, snr, simulate_case(m, 8, acc, snr, 0)[0]) for n, m in brains.items()]
    for acc, snr in CONDITIONS:
        out += [("out of distribution", n, acc, snr, sample_mri(n, size, 8, acc, snr, 0)) for n in ("shoulder", "head")]
    first_brain = next(iter(brains.items()))
    for acc, snr in UNTRAINED:
        out.append(("untrained condition", first_brain[0], acc, snr, simulate_case(first_brain[1], 8, acc, snr, 0)[0]))
        out.append(("untrained condition", "shoulder", acc, snr, sample_mri("shoulder", size, 8, acc, snr, 0)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--unet-post", default="bundled", help="weights of unet-post (default: bundled)")
    parser.add_argument("--modl", default="bundled", help="weights of modl (default: bundled)")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["zero-filled", "tv", "unet-post", "modl"],
        choices=[name for name, method in METHODS.items() if not method.needs_prior],  # no prior image here
        metavar="METHOD",
        help="methods of sgdip_jax.methods, with their defaults (dip, sgdip: minutes per case)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        metavar="CASE",
        help="only these cases, named NAME-ACCxSNR as in "
        "the table (e.g. brain-axial-111-4x30 shoulder-8x20); default: all",
    )
    parser.add_argument("--out", default="distribution_shift.json")
    args = parser.parse_args(argv)
    methods = args.methods
    weights = {m: load_weights(getattr(args, m.replace("-", "_")), m) for m in ("unet-post", "modl") if m in methods}
    todo = cases(args.size)
    if args.cases:
        names = [f"{name}-{acc}x{snr}" for _, name, acc, snr, _ in todo]
        unknown = sorted(set(args.cases) - set(names))
        if unknown:
            parser.error(f"--cases: no case {', '.join(unknown)}; the cases are {', '.join(names)}")
        todo = [c for c, n in zip(todo, names) if n in args.cases]
    rows = []
    print("| group | case | accel | SNR dB | " + " | ".join(methods) + " |")
    print("|---" * (4 + len(methods)) + "|")
    for group, name, acc, snr, case in todo:
        op, y = case.operator(), jnp.asarray(case.y)
        row = {"group": group, "case": name, "acceleration": acc, "snr_db": snr, "metrics": {}, "seconds": {}}
        for method in methods:
            start = time.perf_counter()
            extra = {"weights": weights[method]} if method in weights else {}
            config = {"network": DIP_NETWORK} if METHODS[method].is_dip else None
            result = run_method(method, op, y, config, 0, progress=False, **extra)
            row["seconds"][method] = time.perf_counter() - start
            row["metrics"][method] = evaluate(np.abs(result.image), ref=np.abs(case.x))
        rows.append(row)
        cells = " | ".join(f"{row['metrics'][m]['psnr']:.2f} / {row['metrics'][m]['ssim']:.3f}" for m in methods)
        print(f"| {group} | {name} | {acc}x | {snr} | {cells} |", flush=True)
        with open(args.out, "w") as f:
            json.dump({"weights": {m: w.source for m, w in weights.items()}, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
