"""Every GPU number the project owes, in one command that ends within 9 minutes.

Parts (each a subprocess of the benchmark script named, stopped at its time cap with what it has
written kept; caps in :data:`PARTS`, ``--cap PART=SECONDS`` changes one):

* ``speed_paper``: ``speed.py --paper`` with an empty persistent compilation cache: 640x372,
  15 coils, depth-5 U-Net (69.2 M parameters), K = 1 and 4, float32 (TF32) and bf16; our it/s and
  the PyTorch port's in the same process, ratio, XLA's FLOP count per step and TFLOP/s, peak device
  memory, compile time (cold).
* ``speed_paper_warm``: the K = 4 float32 setting again in a new process with the cache now filled:
  compile time warm.
* ``speed_320``: ``speed.py --mode 320``: 320x320, 8 coils, depth-4 U-Net, the same four settings.
* ``throughput``: ``throughput.py`` at 320 px, depth-4 U-Net of base 64: slices/hour at batch
  1, 2, 4, 8.
* ``quality``: ``quality.py --overfit --overfit-only`` on the 320 px shoulder at 4x, 30 and 20 dB:
  vanilla and self-guided DIP (defaults) to 3x their iterations with PSNR per iteration, and TV
  (``lam="auto"``).

Results: ``OUT/suite.json`` (every part's rows, its exit status, whether it hit its cap, and a
``targets`` block reading the numbers against the project's GPU targets), rewritten after each part,
and ``OUT/suite.log`` (every part's output): nothing else is written under ``OUT`` (relative or
absolute), since on a lent machine what comes back is limited; the compilation cache and each
part's own files live in a temporary folder, removed at the end.

Timing: each script warms up before it times (JAX: the first chunk holds the compilation and is
not counted; PyTorch: three steps), synchronises (JAX: the host transfer that ends each chunk;
PyTorch: ``torch.cuda.synchronize`` after each step) and reports medians. Peak memory is the
device's ``peak_bytes_in_use`` in that part's process.

    python benchmarks/gpu_suite.py --out results/gpu             # on a CUDA machine
    python benchmarks/gpu_suite.py --dry-run --out /tmp/dry       # CPU: tiny sizes, no PyTorch needed

The packages it needs on the GPU machine are in ``benchmarks/gpu-requirements.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# part -> (time cap in seconds, arguments on a GPU, arguments of the CPU dry run); {cache} and {out}
# are the shared compilation cache and the part's own folder. The caps add up to 8.5 minutes.
PARTS = {
    "speed_paper": (
        170,
        ["speed.py", "--paper", "--cache", "{cache}", "--json", "{out}/speed.json"],
        ["speed.py", "--quick", "--cache", "{cache}", "--json", "{out}/speed.json"],
    ),
    "speed_paper_warm": (
        45,
        [
            "speed.py",
            "--paper",
            "--draws",
            "4",
            "--dtypes",
            "float32",
            "--iters",
            "20",
            "--no-torch",
            "--cache",
            "{cache}",
            "--json",
            "{out}/speed.json",
        ],
        ["speed.py", "--quick", "--iters", "5", "--no-torch", "--cache", "{cache}", "--json", "{out}/speed.json"],
    ),
    "speed_320": (
        60,
        ["speed.py", "--mode", "320", "--cache", "{cache}", "--json", "{out}/speed.json"],
        [
            "speed.py",
            "--quick",
            "--dtypes",
            "float32",
            "--iters",
            "10",
            "--cache",
            "{cache}",
            "--json",
            "{out}/speed.json",
        ],
    ),
    "throughput": (
        80,
        [
            "throughput.py",
            "--size",
            "320",
            "--network",
            "unet4",
            "--base",
            "64",
            "--batches",
            "1",
            "2",
            "4",
            "8",
            "--devices",
            "--out",
            "{out}/throughput.json",
        ],
        [
            "throughput.py",
            "--size",
            "16",
            "--network",
            "unet1",
            "--base",
            "4",
            "--chunk",
            "2",
            "--chunks",
            "3",
            "--batches",
            "1",
            "2",
            "--devices",
            "--out",
            "{out}/throughput.json",
        ],
    ),
    "quality": (
        155,
        [
            "quality.py",
            "--size",
            "320",
            "--cases",
            "4x30",
            "4x20",
            "--methods",
            "tv",
            "dip",
            "sgdip",
            "--overfit",
            "--overfit-only",
            "--cache",
            "{cache}",
            "--out",
            "{out}",
        ],
        [
            "quality.py",
            "--quick",
            "--iters",
            "6",
            "--cases",
            "4x30",
            "--methods",
            "tv",
            "dip",
            "sgdip",
            "--overfit",
            "--overfit-only",
            "--cache",
            "{cache}",
            "--out",
            "{out}",
        ],
    ),
}
RESULT_FILES = {
    "speed_paper": "speed.json",
    "speed_paper_warm": "speed.json",
    "speed_320": "speed.json",
    "throughput": "throughput.json",
    "quality": "quality.json",
}

# the project's GPU targets (issue tracker): ratio to PyTorch eager at the paper configuration,
# K = 4, same precision; 4000 iterations; compile + first step cold and warm; device memory
TARGETS = {
    "ratio_to_torch_min": 2.0,
    "s_for_4000_iterations_max": 60.0,
    "cold_start_s_max": 30.0,
    "warm_start_s_max": 5.0,
    "peak_memory_gb_max": 40.0,
}


def run_part(name: str, argv: list[str], cap: float, log) -> dict:
    """Run one part in its own process group; at ``cap`` seconds send SIGTERM, then SIGKILL."""
    log.write(f"\n===== {name}: {' '.join(argv)} (cap {cap:g} s)\n")
    log.flush()
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=HERE,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        proc.wait(timeout=cap)
        capped = False
    except subprocess.TimeoutExpired:
        capped = True
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    wall = time.monotonic() - start
    log.write(f"===== {name}: exit {proc.returncode}, {wall:.1f} s{', stopped at its cap' if capped else ''}\n")
    log.flush()
    return {"argv": argv, "returncode": proc.returncode, "stopped_at_cap": capped, "wall_s": wall}


def _row(rows, draws, dtype):
    for r in rows or []:
        if f" K{draws} {dtype}" in r["setting"]:
            return r
    return None


def read_targets(results: dict) -> dict:
    """The measured numbers beside the targets (``None`` where a part gave no number)."""
    paper = results.get("speed_paper", {}).get("rows")
    warm = results.get("speed_paper_warm", {}).get("rows")
    out = {}
    for dtype in ("float32", "bfloat16"):
        r = _row(paper, 4, dtype)
        ratio = None if r is None or r.get("ratio") is None else r["ratio"]
        out[f"ratio_to_torch_K4_{dtype}"] = {
            "value": ratio,
            "target": f">= {TARGETS['ratio_to_torch_min']}",
            "met": None if ratio is None else ratio >= TARGETS["ratio_to_torch_min"],
        }
    r = _row(paper, 4, "float32")
    if r is not None:
        total = r["compile_s"] + 4000 * r["jax_s_per_it"]
        out["s_for_4000_iterations_K4_float32"] = {
            "value": total,
            "how": "compile + 4000 x median s/it",
            "target": f"< {TARGETS['s_for_4000_iterations_max']}",
            "met": total < TARGETS["s_for_4000_iterations_max"],
        }
        cold = r["compile_s"] + r["jax_s_per_it"]
        out["cold_start_s"] = {
            "value": cold,
            "how": "compile (empty cache) + one step",
            "target": f"< {TARGETS['cold_start_s_max']}",
            "met": cold < TARGETS["cold_start_s_max"],
        }
        if r.get("peak_mem_gb") is not None:
            peak = max(x["peak_mem_gb"] for x in paper if x.get("peak_mem_gb") is not None)
            out["peak_memory_gb"] = {
                "value": peak,
                "how": "peak_bytes_in_use over the paper settings",
                "target": f"< {TARGETS['peak_memory_gb_max']}",
                "met": peak < TARGETS["peak_memory_gb_max"],
            }
    w = _row(warm, 4, "float32")
    if w is not None:
        value = w["compile_s"] + w["jax_s_per_it"]
        out["warm_start_s"] = {
            "value": value,
            "how": "compile (filled cache, new process) + one step",
            "target": f"< {TARGETS['warm_start_s_max']}",
            "met": value < TARGETS["warm_start_s_max"],
        }
    return out


def versions() -> dict:
    """Versions of the packages the numbers depend on (``None``: not installed)."""
    from importlib import metadata

    found = {}
    for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "numpy", "torch"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="folder for suite.json and suite.log (nothing else)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on any machine (CPU); PyTorch optional")
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="parts to run (default all)")
    p.add_argument("--cap", action="append", default=[], metavar="PART=SECONDS", help="change one part's time cap")
    args = p.parse_args(argv)
    caps = {name: float(spec[0]) for name, spec in PARTS.items()}
    for item in args.cap:
        name, _, value = item.partition("=")
        if name not in PARTS or not value.replace(".", "", 1).isdigit():
            p.error(f"--cap {item!r}: expected PART=SECONDS with PART one of {list(PARTS)}")
        caps[name] = float(value)
    out = args.out.resolve()  # the parts run in benchmarks/: they get absolute paths
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="sgdip-gpu-suite-"))
    cache = scratch / "jax_cache"
    suite = {
        "dry_run": args.dry_run,
        "python": sys.version.split()[0],
        "packages": versions(),
        "caps_s": caps,
        "parts": {},
        "targets": {},
    }
    with open(out / "suite.log", "a") as log:
        for name in args.parts:
            folder = scratch / "parts" / name
            folder.mkdir(parents=True, exist_ok=True)
            template = PARTS[name][2 if args.dry_run else 1]
            part_argv = [a.format(cache=cache, out=folder) for a in template]
            record = run_part(name, part_argv, caps[name], log)
            result = folder / RESULT_FILES[name]
            record["rows"] = json.loads(result.read_text()) if result.exists() else None
            suite["parts"][name] = record
            suite["targets"] = read_targets(suite["parts"])
            _write(out / "suite.json", suite)
            print(
                f"{name}: exit {record['returncode']}, {record['wall_s']:.0f} s"
                f"{' (stopped at its cap)' if record['stopped_at_cap'] else ''}",
                flush=True,
            )
    shutil.rmtree(scratch, ignore_errors=True)
    for key, t in suite["targets"].items():
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        print(
            f"  {key}: {value} (target {t['target']}, {'met' if t['met'] else 'not met' if t['met'] is False else '?'})"
        )
    return 0 if all(r["returncode"] == 0 for r in suite["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
