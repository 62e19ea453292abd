"""Slices per hour of self-guided DIP when several slices share one compiled step.

For each batch size ``B``, ``B`` simulated slices (shoulder image, 8 coils, 4x VDRS, own noise and
phase per slice) are reconstructed together by :func:`sgdip_jax.methods.common.run_dip_batch` with
the method's default config (``--network``, ``--base`` and an iteration count of ``--chunks``
chunks of ``--chunk`` iterations replaced): a pilot run per noise-scale candidate where
self-validation chooses one, then its extension where it applies. The host is synchronised at the
end of every chunk; the time per batched iteration is the median over steady chunks (each engine
run's chunks after its first) of the chunk's time over its step count, and the fixed cost is the
rest of the measured time: all of it less its steps at that rate (set-up, compilation, each
pilot's start), so

    slices/hour = 3600 B / (fixed + per_iteration * steps),
    steps = candidates * pilot + iterations - pilot,

the steps of a default run of ``--iterations`` iterations (default: the method's, read from
:func:`sgdip_jax.methods.method_config`): each candidate's pilot (without candidates one run,
``steps = iterations``), then the chosen one to the budget (its extension by self-validation, at
most ``extend * iterations`` more steps while the held-out error still falls, not counted; nor
the second run of a slice whose preset run stops early and restarts with a larger noise scale,
``SGDIPConfig.restart_before``, which about doubles that slice's steps: the rates are for slices
that do not restart), and the ratio to the first batch size measured in the same run.
Volumes per hour of a ``--volume S``-slice volume at the batch-1 costs (every slice paying the fixed
cost, as above), every slice from scratch against ``--warm-start`` (the centre slice a default run,
each other slice ``--warm-steps`` steps from its neighbour's weights):

    volumes/hour = 3600 / (S fixed + per_iteration (steps + (S - 1) warm_steps)),

``warm_steps`` (default the least a warm slice runs, the fraction of ``--iterations``; the measured
counts per slice are in ``warm_start.py``'s table) replacing ``steps`` for the cold volume.
``--devices D ...`` repeats the largest batch in subprocesses with ``D`` devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=D`` on CPU: host devices share the machine's
cores, so this measures the sharding overhead, not a speed-up).

    python benchmarks/throughput.py --quick                      # CPU smoke test
    python benchmarks/throughput.py                              # CPU: 64x64, unet3/16, B = 1 2 4 8
    python benchmarks/throughput.py --size 320 --network unet4 --base 64 --batches 1 2 4 8 16 --devices   # GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time

QUICK = {"size": 16, "network": "unet1", "base": 4, "chunk": 2, "chunks": 3, "batches": [1, 2], "devices": [2]}


def make_problems(args, count: int) -> list:
    """``count`` simulated slices (seeds 0 to ``count - 1``)."""
    from sgdip_jax.data import sample_mri
    from sgdip_jax.inputs import problem_from_case

    return [
        problem_from_case(sample_mri("shoulder", size=args.size, coils=8, acceleration=4.0, seed=s))
        for s in range(count)
    ]


def run_steps(operator, iterations: int) -> int:
    """Steps of a default self-guided DIP run of ``iterations`` on ``operator`` (module docstring)."""
    from sgdip_jax.methods import method_config, sgdip_task

    task = sgdip_task(method_config("sgdip", iterations=iterations))
    candidates = math.prod(len(v) for v in task.choices(operator).values())  # 1: nothing to choose
    pilot = min(task.pilot, iterations) if candidates > 1 else 0
    return candidates * pilot + iterations - pilot


def measure(args, problems: list) -> dict:
    """Per-iteration time, fixed cost and slices/hour of one batch of ``problems`` (in this process)."""
    import statistics

    import jax

    from sgdip_jax.methods import method_config, sgdip_task
    from sgdip_jax.methods.common import run_dip_batch

    batch = len(problems)
    config = method_config("sgdip", network=args.network, width=args.base, iterations=args.chunk * args.chunks)
    marks = []  # (time, steps done in this engine run, steps of the chunk) after each chunk
    start = time.perf_counter()
    run_dip_batch(
        [sgdip_task(dataclasses.replace(config, chunk=args.chunk))] * batch,
        [p.operator for p in problems],
        [p.y for p in problems],
        [0] * batch,
        devices=jax.devices() if jax.device_count() > 1 else None,
        progress=False,
        callback=lambda info: marks.append(
            (time.perf_counter(), info.iteration, len(next(iter(info.metrics.values()))))
        ),
    )
    per_iteration = statistics.median(
        (t - before) / n for (before, _, _), (t, done, n) in zip(marks, marks[1:]) if done > n
    )
    fixed = max(marks[-1][0] - start - per_iteration * sum(n for _, _, n in marks), 0.0)
    steps = run_steps(problems[0].operator, args.iterations)
    return {
        "batch": batch,
        "devices": jax.device_count(),
        "per_iteration_s": per_iteration,
        "fixed_s": fixed,
        "run_steps": steps,
        "slices_per_hour": 3600 * batch / (fixed + per_iteration * steps),
        "slice_iterations_per_s": batch / per_iteration,
    }


def volume_row(row: dict, slices: int, warm_steps: int) -> dict:
    """Volumes/hour of a ``slices``-slice volume, cold and warm-started, at ``row``'s costs (module docstring)."""
    fixed, per_iteration, steps = row["fixed_s"], row["per_iteration_s"], row["run_steps"]
    cold = slices * (fixed + per_iteration * steps)
    warm = slices * fixed + per_iteration * (steps + (slices - 1) * warm_steps)
    return {
        "slices": slices,
        "warm_steps": warm_steps,
        "volumes_per_hour_cold": 3600 / cold,
        "volumes_per_hour_warm": 3600 / warm,
        "time_ratio": warm / cold,
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
        "--chunks", type=int, default=6, help="chunks per engine run (each run's first is not timed: start-up)"
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help="iterations of the run slices/hour refers to (default: sgdip's)"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="batch sizes")
    parser.add_argument(
        "--devices",
        type=int,
        nargs="*",
        default=[1, 2, 4],
        help="device counts for the largest batch (forced host devices on CPU; none: skip)",
    )
    parser.add_argument("--volume", type=int, default=16, help="slices of the volume of the volumes/hour rows")
    parser.add_argument(
        "--warm-start",
        type=float,
        default=None,
        help="fraction of --iterations a warm-started slice runs at least (default: the command's --warm-start)",
    )
    parser.add_argument(
        "--warm-steps",
        type=int,
        default=None,
        help="steps per warm-started slice (default: the least, --warm-start x --iterations)",
    )
    parser.add_argument("--out", default=None, help="write the rows as JSON to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if args.chunks < 2:
        parser.error(f"--chunks {args.chunks}: at least 2 (each engine run's first chunk holds its start-up)")
    if args.volume < 1 or (args.warm_steps is not None and args.warm_steps < 1):
        parser.error(f"--volume {args.volume}, --warm-steps {args.warm_steps}: at least 1")
    if args.warm_start is not None and not 0 < args.warm_start <= 1:
        parser.error(f"--warm-start {args.warm_start}: a fraction in (0, 1]")
    if args.iterations is None:
        from sgdip_jax.methods import method_config

        args.iterations = method_config("sgdip").iterations
    if args.child:
        print(json.dumps(measure(args, make_problems(args, args.batches[0]))))
        return 0

    import jax

    print(
        f"device: {jax.devices()[0].device_kind} x {jax.device_count()}, {os.cpu_count()} CPUs, "
        f"{platform.processor() or platform.machine()}; load average {os.getloadavg()[0]:.1f}"
    )
    problems = make_problems(args, max(args.batches))
    print(
        f"self-guided DIP, {args.size}x{args.size}, 8 coils, {args.network}/{args.base}; slices/hour for default runs "
        f"of {args.iterations} iterations ({run_steps(problems[0].operator, args.iterations)} steps with the pilots)\n"
    )
    from sgdip_jax.files import atomic_write

    rows = {"batch_sizes": []}

    def save():  # after every row, so a run stopped early keeps the finished ones
        if args.out:
            atomic_write(args.out, lambda f: f.write(json.dumps(rows, indent=2).encode()))

    for b in args.batches:
        rows["batch_sizes"].append(measure(args, problems[:b]))
        save()
    print(table(rows["batch_sizes"], "batch"))
    single = [r for r in rows["batch_sizes"] if r["batch"] == 1]
    if single:
        if args.warm_start is None:
            from sgdip_jax.reconstruct import WARM_START

            args.warm_start = WARM_START
        warm_steps = args.warm_steps or math.ceil(args.warm_start * args.iterations)
        v = rows["volume"] = volume_row(single[0], args.volume, warm_steps)
        save()
        print(
            f"\n{args.volume}-slice volume at batch 1: {v['volumes_per_hour_cold']:.2f} volumes/hour from scratch, "
            f"{v['volumes_per_hour_warm']:.2f} warm-started ({warm_steps} steps per warm slice; time ratio "
            f"{v['time_ratio']:.2f})"
        )
    if args.devices:
        rows["device_counts"] = device_rows(args)
        save()
        print(f"\nbatch {max(args.batches)} over forced devices:\n")
        print(table(rows["device_counts"], "devices"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
