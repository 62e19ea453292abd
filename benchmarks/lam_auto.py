"""``lam="auto"`` (GCV) and ``lam="discrepancy"`` against the best ``lam`` of a grid (an oracle).

For each open MR case (``sample_mri``: shoulder and head, 4x / 8x VDRS, 30 / 20 dB, 8 coils) and each
classical method, the PSNR of the rule's choice minus the best PSNR over a log grid of ``lam``, in
the pipeline's units (zero-filled image of peak 1). The discrepancy rule gets the case's ``sigma``
and, in the last column, the estimate from the k-space corners; the estimate's ratio to the true
``sigma`` is printed per case.

    python benchmarks/lam_auto.py --size 128 --out results/lam_auto.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax.numpy as jnp
import numpy as np

from sgdip_jax.data.samples import sample_mri
from sgdip_jax.methods import parameter_choice
from sgdip_jax.methods.classical import CGSenseConfig, L1WaveletConfig, TVConfig, cg_sense, l1_wavelet, tv
from sgdip_jax.metrics import psnr

CASES = [(name, acc, snr) for name in ("shoulder", "head") for acc in (4, 8) for snr in (30, 20)]
GRID = np.logspace(-5, -1.5, 15)
METHODS = {
    "tv": (tv, TVConfig(), GRID),
    "l1-wavelet": (l1_wavelet, L1WaveletConfig(), GRID),
    "cg-sense": (cg_sense, CGSenseConfig(), np.r_[0.0, np.logspace(-4, 0, 9)]),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", default=None, help="JSON file for all rows")
    args = p.parse_args(argv)
    rows = []
    print(
        "| case | sigma estimate / true | method | grid best (oracle) | auto (GCV) | discrepancy, true sigma "
        "| discrepancy, estimated sigma | auto lam / oracle lam | auto time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, acc, snr in CASES:
        case = sample_mri(name, size=args.size, coils=8, acceleration=acc, snr_db=snr, seed=0)
        op = case.operator()
        scale = 1.0 / float(jnp.max(jnp.abs(op.adjoint(jnp.asarray(case.y)))))
        y, x, sigma = jnp.asarray(case.y) * scale, np.abs(case.x) * scale, case.sigma * scale
        ratio = parameter_choice.estimate_sigma(op, y) / sigma
        for method, (fn, config, grid) in METHODS.items():
            values = [
                float(psnr(np.abs(fn(op, y, dataclasses.replace(config, lam=float(v))).image), ref=x)) for v in grid
            ]
            best = int(np.argmax(values))
            start = time.perf_counter()
            auto = fn(op, y, config)
            seconds = time.perf_counter() - start
            disc = fn(op, y, dataclasses.replace(config, lam="discrepancy"), sigma=sigma)
            est = fn(op, y, dataclasses.replace(config, lam="discrepancy"))
            row = {
                "case": f"{name} {args.size}px {acc}x {snr} dB",
                "method": method,
                "sigma_ratio": ratio,
                "oracle": values[best],
                "oracle_lam": float(grid[best]),
                **{
                    k: float(psnr(np.abs(r.image), ref=x))
                    for k, r in (("auto", auto), ("disc", disc), ("disc_est", est))
                },
                "auto_lam": auto.config["lam"],
                "auto_seconds": seconds,
            }
            rows.append(row)
            lam_ratio = row["auto_lam"] / row["oracle_lam"] if row["oracle_lam"] > 0 else float("inf")
            print(
                f"| {row['case']} | {ratio:.2f} | {method} | {row['oracle']:.2f} | "
                f"{row['auto'] - row['oracle']:+.2f} | "
                f"{row['disc'] - row['oracle']:+.2f} | {row['disc_est'] - row['oracle']:+.2f} | {lam_ratio:.2g} | "
                f"{seconds:.1f} |",
                flush=True,
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
