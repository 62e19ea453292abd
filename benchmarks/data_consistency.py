"""The final data-consistency step on self-guided DIP with its other defaults: PSNR of the EMA image
after ``--iters`` iterations, as it is and after ``x + A^H (y - A x)`` (replace the measured k-space).

    python benchmarks/data_consistency.py --size 96 --iters 500
    python benchmarks/data_consistency.py --size 128 --cases shoulder:8:30 shoulder:8:20
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp

from sgdip_jax.config import NetworkConfig
from sgdip_jax.data.samples import sample_mri
from sgdip_jax.methods import SGDIPConfig, run_method
from sgdip_jax.methods.common import data_consistency
from sgdip_jax.metrics import psnr

CASES = (("shoulder", 4, 30), ("shoulder", 4, 20), ("head", 4, 30))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--iters", type=int, default=500)
    p.add_argument(
        "--cases",
        nargs="+",
        default=[f"{n}:{a}:{s}" for n, a, s in CASES],
        help="NAME:ACCELERATION:SNR_DB, NAME a sample_mri image (default: %(default)s)",
    )
    args = p.parse_args(argv)
    config = SGDIPConfig(network=NetworkConfig("unet4", base=16), iterations=args.iters, data_consistency=False)
    print("| case | EMA image | after data consistency |\n|---|---|---|")
    for spec in args.cases:
        name, acceleration, snr = spec.split(":")
        acceleration, snr = float(acceleration), float(snr)
        case = sample_mri(name, size=args.size, coils=8, acceleration=acceleration, snr_db=snr, seed=0)
        op, y = case.operator(), jnp.asarray(case.y)
        image = jnp.asarray(run_method("sgdip", op, y, config, 0, target=case.x, progress=False).ema_image)
        print(
            f"| {name} {args.size}px {acceleration:g}x {snr:g} dB | {float(psnr(image, case.x)):.2f} | "
            f"{float(psnr(data_consistency(op, image, y), case.x)):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
