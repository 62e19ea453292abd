"""Slices per hour of self-guided DIP when several slices share one compiled step.

For each batch size ``B``, ``B`` simulated slices (shoulder image, 8 coils, 4x VDRS, own noise and
phase per slice) are reconstructed together by :func:`sgdip_jax.methods.common.run_dip_batch` for
``--chunks`` chunks of ``--chunk`` iterations; the host is synchronised at the end of every chunk,
the time per batched iteration is the median chunk time (after the first chunk) over ``--chunk``,
and the fixed cost (setup + compilation) is the time to the end of the first chunk minus one
chunk, so

    slices/hour = 3600 B / (fixed + per_iteration * iterations),

for a full run of ``--iterations`` iterations (default: the DIP default, 500), and the ratio to
``B = 1`` measured in the same run. ``--devices D ...`` repeats the largest batch in subprocesses
with ``D`` devices (``XLA_FLAGS=--xla_force_host_platform_device_count=D`` on CPU: host devices
share the machine's cores, so this measures the sharding overhead, not a speed-up).

    python benchmarks/throughput.py --quick                      # CPU smoke test
    python benchmarks/throughput.py                              # CPU: 64x64, unet3/16, B = 1 2 4 8
    python benchmarks/throughput.py --size 320 --network unet4 --batches 1 2 4 8 16   # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

QUICK = {"size": 16, "network": "unet1", "base": 4, "chunk": 2, "chunks": 3, "batches": [1, 2], "devices": [2]}


def measure(args, batch: int) -> dict:
    """Per-iteration time, fixed cost and slices/hour of one batch size (in this process)."""
    import statistics

    import jax

    from sgdip_jax.config import NetworkConfig
    from sgdip_jax.data import sample_mri
    from sgdip_jax.inputs import problem_from_case
    from sgdip_jax.methods import SGDIPConfig, sgdip_task
    from sgdip_jax.methods.common import run_dip_batch

    problems = [
        problem_from_case(sample_mri("shoulder", size=args.size, coils=8, acceleration=4.0, seed=s))
        for s in range(batch)
    ]
    config = SGDIPConfig(
        network=NetworkConfig(name=args.network, base=args.base), iterations=args.chunk * args.chunks, chunk=args.chunk
    )
    stamps = []
    start = time.perf_counter()
    run_dip_batch(
        [sgdip_task(config)] * batch,
        [p.operator for p in problems],
        [p.y for p in problems],
        [0] * batch,
        devices=jax.devices() if jax.device_count() > 1 else None,
        progress=False,
        callback=lambda info: stamps.append(time.perf_counter()),
    )
    per_iteration = statistics.median(b - a for a, b in zip(stamps, stamps[1:])) / args.chunk
    fixed = max(stamps[0] - start - per_iteration * args.chunk, 0.0)
    return {
        "batch": batch,
        "devices": jax.device_count(),
        "per_iteration_s": per_iteration,
        "fixed_s": fixed,
        "slices_per_hour": 3600 * batch / (fixed + per_iteration * args.iterations),
        "slice_iterations_per_s": batch / per_iteration,
    }


def table(rows, key) -> str:
    base = rows[0]["slices_per_hour"]
    lines = [
        f"| {key} | s / batched iteration | setup + compile (s) | slice-it/s | slices/hour | ratio to first row |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r[key]} | {r['per_iteration_s']:.4f} | {r['fixed_s']:.1f} | {r['slice_iterations_per_s']:.1f} "
            f"| {r['slices_per_hour']:.1f} | {r['slices_per_hour'] / base:.2f} |"
        )
    return "\n".join(lines)


def device_rows(args) -> list[dict]:
    """The largest batch again in subprocesses with each requested device count."""
    rows = []
    for count in args.devices:
        env = {
            **os.environ,
            "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}".strip(),
        }
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--size",
            str(args.size),
            "--network",
            args.network,
            "--base",
            str(args.base),
            "--chunk",
            str(args.chunk),
            "--chunks",
            str(args.chunks),
            "--iterations",
            str(args.iterations),
            "--batches",
            str(max(args.batches)),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"device-count run with {count} devices failed:\n{proc.stderr[-3000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"tiny CPU smoke test ({QUICK})")
    parser.add_argument("--size", type=int, default=64, help="image size in px")
    parser.add_argument("--network", default="unet3", help="U-Net of self-guided DIP")
    parser.add_argument("--base", type=int, default=16, help="width of the network's first level")
    parser.add_argument("--chunk", type=int, default=10, help="iterations per timed chunk")
    parser.add_argument(
        "--chunks", type=int, default=6, help="timed chunks (the first is not timed: it measures the start-up)"
    )
    parser.add_argument("--iterations", type=int, default=500, help="iterations of the full run slices/hour refers to")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="batch sizes")
    parser.add_argument(
        "--devices",
        type=int,
        nargs="*",
        default=[1, 2, 4],
        help="device counts for the largest batch (forced host devices on CPU; none: skip)",
    )
    parser.add_argument("--out", default=None, help="write the rows as JSON to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.child:
        print(json.dumps(measure(args, args.batches[0])))
        return 0

    import jax

    print(
        f"device: {jax.devices()[0].device_kind} x {jax.device_count()}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"self-guided DIP, {args.size}x{args.size}, 8 coils, {args.network}/{args.base}; "
        f"slices/hour for {args.iterations}-iteration runs\n"
    )
    from sgdip_jax.files import atomic_write

    rows = {"batch_sizes": []}

    def save():  # after every row, so a run stopped early keeps the finished ones
        if args.out:
            atomic_write(args.out, lambda f: f.write(json.dumps(rows, indent=2).encode()))

    for b in args.batches:
        rows["batch_sizes"].append(measure(args, b))
        save()
    print(table(rows["batch_sizes"], "batch"))
    if args.devices:
        rows["device_counts"] = device_rows(args)
        save()
        print(f"\nbatch {max(args.batches)} over forced devices:\n")
        print(table(rows["device_counts"], "devices"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
