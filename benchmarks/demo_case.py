"""The demo's case on several seeds: self-guided DIP at its defaults on the demo's network (depth-4
U-Net of width 16) against TV (``lam="auto"``) on the 128 px shoulder with 8 simulated coils, 4x
VDRS and 30 dB noise (:func:`sgdip_jax.data.samples.sample_mri`, ``sgdip demo``'s case), with the
wall time of each run. One JSON line per (seed, method) goes to ``OUT/demo_case.jsonl`` as soon as
it is done; a rerun skips what is there. Time it alone on the machine.

    python benchmarks/demo_case.py --seeds 0 1 2 --out OUT
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sgdip_jax.data.samples import sample_mri
from sgdip_jax.methods import method_config, run_method
from sgdip_jax.metrics import evaluate

try:  # run as a script or as benchmarks.demo_case
    from validation_set import _commit
except ImportError:  # pragma: no cover
    from benchmarks.validation_set import _commit

METHODS = ("sgdip", "tv")


def run_case(seed: int, method: str, size: int = 128) -> dict:
    case = sample_mri("shoulder", size=size, coils=8, acceleration=4.0, snr_db=30.0, seed=seed)
    dip = method == "sgdip"
    config = method_config(method, network="unet4" if dip else None, width=16 if dip else None)
    start = time.perf_counter()
    result = run_method(method, case.operator(), case.y, config, key=seed, target=case.x, progress=False)
    return {
        "seed": seed,
        "method": method,
        "size": size,
        "commit": _commit(),
        "wall_s": round(time.perf_counter() - start, 1),
        "iterations": result.iterations,
        "selection": getattr(result, "selection", None),
        "noise_scale": result.config.get("noise_scale"),
        **evaluate(np.abs(result.image), ref=np.abs(case.x)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "demo_case.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["seed"], r["method"]) for r in rows}
    for seed in args.seeds:
        for method in METHODS:
            if (seed, method) in done:
                continue
            row = run_case(seed, method, args.size)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"seed {seed} {method}: {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f} ({row['wall_s']} s)", flush=True)


if __name__ == "__main__":
    main()
