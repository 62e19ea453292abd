"""Every GPU number the project owes, in one command that ends within 6 minutes on one H100.

Parts, in the order of what the targets and the issue tracker need first (each a subprocess of the
benchmark script named, stopped at its time cap, or earlier when ``--budget`` runs out, with what it
has written kept; ``--cap PART=SECONDS`` changes a cap):

* ``speed_paper``: ``speed.py --paper --draws 4``: 640x372, 15 coils, depth-5 U-Net (69.2 M
  parameters), K = 4 in tf32, bf16 and strict fp32, each setting in a fresh process with an empty
  persistent compilation cache: our s/it and the PyTorch port's (``cudnn.benchmark``) in the same
  process, their ratio, XLA's FLOP count per step and TFLOP/s, peak device memory of the setting,
  compile time (cold).
* ``speed_paper_warm``: the K = 4 tf32 setting again in a new process with its cache now filled:
  compile time warm.
* ``speed_paper_k1``: the same three precisions at K = 1.
* ``throughput``: ``throughput.py`` at 320 px, depth-4 U-Net of base 64, the default self-guided
  DIP: s/iteration (batch 1: the 320 px number) and slices/hour at batch 1, 2, 4, 8.
* ``quality``: ``quality.py --overfit --overfit-only`` on the 320 px shoulder at 4x, 20 dB: TV
  (``lam="auto"``), then vanilla and self-guided DIP (defaults) to 3x their iterations with PSNR per
  iteration.

Budget (an estimate for one H100, not a measurement: no GPU has run this suite yet). Work: XLA's
FLOP count of one loss-and-gradient step (``Lowered.cost_analysis`` of the same programs on a CPU):
4.35 TFLOP for the paper configuration at K = 4, 1.09 at K = 1, 0.76 for self-guided DIP at 320 px
(K = 2), about 0.38 for vanilla DIP there. Assumed rates: 200 TFLOP/s in tf32, 400 in bf16, 40 in
strict fp32 (about 40 % of an H100 SXM's dense TF32 and bf16 tensor-core peaks, 60 % of its fp32
peak), PyTorch eager 1.5 x our time. Assumed fixed costs: a process start with its imports, CUDA
client and the network's compiled initialisation 8 s (5 s without the network), an XLA
compilation of the training chunk 20 s at depth 5 and 12 s at depth 4 (3 s from a filled cache),
the FLOP count's tracing 1.5 s, PyTorch's import 3 s, ``cudnn.benchmark``'s first chunk 5 s at
K = 4 and 3 s at K = 1. Steps, as the CPU dry run counts them at full size: speed, 25 per setting
and side (a warm-up chunk of 5, then 4 timed); throughput, per batch size 40 per engine run (3
engine runs, one per noise-scale candidate, when this was estimated; MRI runs one since its noise
scale is a preset, so the estimate is high) and at most 16 of extension; quality, TV's 22 solves
of 1000 iterations (GCV), vanilla DIP 1500, self-guided DIP 3000 (and 2 x 200 of pilots, no longer run).

==================  ==========================================================  =====  =====
part                estimate                                                    total  cap
==================  ==========================================================  =====  =====
install, preflight  wheels 5 s, JAX on the GPU 4 s                              9 s    -
speed_paper         tf32 39 s, bf16 38 s, fp32 44 s (28 s start and compile)    121 s  150 s
speed_paper_warm    start 8 s, warm compile 3 s, steps 0.2 s, tracing 1.5 s     13 s   25 s
speed_paper_k1      tf32 36 s, bf16 36 s, fp32 37 s                             109 s  130 s
throughput          start 5 s, 8 slices 4 s, 4 x (init + compile 15 s), 8 s    77 s   90 s
quality             start 6 s, TV 10 s, DIP 14 + 3 s, self-guided 14 + 13 s     60 s   80 s
==================  ==========================================================  =====  =====

That is 389 s against the 355 s that ``gpu_suite.sh`` allows (``--budget``: what is left after the
installs). A part gets its cap or what is left of the budget, whichever is less, so the suite ends
in time whatever the real costs are; the parts cut are the last ones (with these estimates, the
end of ``quality``), and a rerun of those into the same ``OUT`` fits in a second call. The log
holds every part's real times for the next estimate.

Results: ``OUT/suite.json`` (every part's rows, its exit status and cap, whether it was stopped,
each run's versions, device and skipped parts, and a ``targets`` block reading the numbers against
the project's GPU targets), rewritten after each part, and ``OUT/suite.log`` (every part's output, appended):
nothing else is written under ``OUT`` (relative or absolute), since on a lent machine what comes
back is limited; caches and each part's own files live in a temporary folder, removed at the end.
A rerun into the same ``OUT`` (e.g. ``--parts quality`` after a cut) replaces the parts it runs
and keeps the others (of the same kind, dry run or not).

    python benchmarks/gpu_suite.py --out results/gpu             # on a CUDA machine
    python benchmarks/gpu_suite.py --dry-run --out dry            # CPU: tiny sizes, no PyTorch needed

The packages it needs on the GPU machine are in ``benchmarks/gpu-requirements.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
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
BUDGET_S = 355.0  # 6 minutes less 5 s, from the start of gpu_suite.sh
MIN_PART_S = 10.0  # a part with less of the budget left than this is skipped


@dataclasses.dataclass(frozen=True)
class Part:
    """A part: time cap (s), arguments on a GPU and in the CPU dry run ({cache}: the compilation
    cache, {out}: the part's own folder), and the file its rows are in."""

    cap: float
    gpu: str
    dry: str
    result: str


SPEED = "speed.py {mode} --cache {{cache}} --json {{out}}/speed.json"
PARTS = {
    "speed_paper": Part(
        150, SPEED.format(mode="--paper --draws 4"), SPEED.format(mode="--quick --draws 4"), "speed.json"
    ),
    "speed_paper_warm": Part(
        25,
        SPEED.format(mode="--paper --draws 4 --precisions tf32 --iters 10 --no-torch"),
        SPEED.format(mode="--quick --draws 4 --precisions tf32 --iters 10 --no-torch"),
        "speed.json",
    ),
    "speed_paper_k1": Part(
        130,
        SPEED.format(mode="--paper --draws 1"),
        SPEED.format(mode="--quick --draws 1 --precisions tf32"),
        "speed.json",
    ),
    "throughput": Part(
        90,
        "throughput.py --size 320 --network unet4 --base 64 --chunk 10 --chunks 4 --batches 1 2 4 8 --devices "
        "--out {out}/throughput.json",
        "throughput.py --size 16 --network unet1 --base 4 --chunk 2 --chunks 3 --batches 1 2 --devices "
        "--out {out}/throughput.json",
        "throughput.json",
    ),
    "quality": Part(
        80,
        "quality.py --size 320 --cases 4x20 --methods tv dip sgdip --overfit --overfit-only --out {out}",
        "quality.py --quick --iters 6 --cases 4x20 --methods tv dip sgdip --overfit --overfit-only --out {out}",
        "quality.json",
    ),
}

# the project's GPU targets (issue tracker), at the paper configuration: ratio to PyTorch eager at
# K = 4 in the same precision; 4000 iterations; compile + first step cold and warm; device memory
TARGETS = {
    "ratio_to_torch": (">=", 2.0),
    "s_for_4000_iterations": ("<", 60.0),
    "cold_start_s": ("<", 30.0),
    "warm_start_s": ("<", 5.0),
    "peak_memory_gb": ("<", 40.0),
}

# what the device is, from a process of its own (this one never starts a GPU client)
PREFLIGHT = (
    "import json, jax; d = jax.devices(); "
    "print(json.dumps({'backend': jax.default_backend(), 'kind': d[0].device_kind, 'count': len(d)}))"
)


def run_part(name: str, argv: list[str], cap: float, env: dict, log) -> dict:
    """Run one part in its own process group; at ``cap`` seconds send SIGTERM, then SIGKILL."""
    log.write(f"\n===== {name}: {' '.join(argv)} (cap {cap:.0f} s)\n")
    log.flush()
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, *argv], cwd=HERE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    try:
        proc.wait(timeout=cap)
        capped = False
    except subprocess.TimeoutExpired:
        capped = True
        with contextlib.suppress(ProcessLookupError):  # it may end by itself meanwhile
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    wall = time.monotonic() - start
    log.write(f"===== {name}: exit {proc.returncode}, {wall:.1f} s{', stopped at its cap' if capped else ''}\n")
    log.flush()
    return {"argv": argv, "cap_s": cap, "returncode": proc.returncode, "stopped_at_cap": capped, "wall_s": wall}


def judged(kind: str, value, how: str) -> dict:
    """``value`` beside target ``kind`` of :data:`TARGETS` (``met`` is ``None`` without a value)."""
    op, bound = TARGETS[kind]
    met = None if value is None else value >= bound if op == ">=" else value < bound
    return {"value": value, "how": how, "target": f"{op} {bound:g}", "met": met}


def read_targets(parts: dict) -> dict:
    """The measured numbers beside the targets (``value`` ``None`` where no part gave one)."""

    def rows(part):
        return parts.get(part, {}).get("rows") or []

    def row(part, ending):
        return next((r for r in rows(part) if r["setting"].endswith(ending)), {})

    out = {
        f"ratio_to_torch_K4_{p}": judged(
            "ratio_to_torch", row("speed_paper", f" K4 {p}").get("ratio"), "torch / JAX s/it"
        )
        for p in ("tf32", "bf16", "fp32")
    }
    r = row("speed_paper", " K4 tf32")
    compile_s, per_it = r.get("compile_s"), r.get("jax_s_per_it")
    timed = compile_s is not None and per_it is not None
    out["s_for_4000_iterations_K4_tf32"] = judged(
        "s_for_4000_iterations", compile_s + 4000 * per_it if timed else None, "compile + 4000 x median s/it"
    )
    cold = timed and r.get("cache_entries_before") == 0
    out["cold_start_s"] = judged(
        "cold_start_s", compile_s + per_it if cold else None, "compile (fresh process, empty cache) + one step"
    )
    w = row("speed_paper_warm", " K4 tf32")
    warm = w.get("compile_s") is not None and w.get("jax_s_per_it") is not None and w.get("cache_entries_before")
    out["warm_start_s"] = judged(
        "warm_start_s",
        w["compile_s"] + w["jax_s_per_it"] if warm else None,
        "compile (new process, filled cache) + one step",
    )
    peaks = [x["peak_mem_gb"] for x in rows("speed_paper") + rows("speed_paper_k1") if x.get("peak_mem_gb") is not None]
    out["peak_memory_gb"] = judged(
        "peak_memory_gb",
        max(peaks) if peaks else None,
        "largest peak_bytes_in_use of the paper settings (one process each)",
    )
    return out


def versions() -> dict:
    """Versions of the packages the numbers depend on (``None``: not installed)."""
    from importlib import metadata

    names = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt")
    found = {}
    for name in (*names, "flax", "optax", "numpy", "torch"):
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
    started = time.monotonic()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="folder for suite.json and suite.log (nothing else)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on any machine (CPU); PyTorch optional")
    p.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="parts to run (default all)")
    p.add_argument("--cap", action="append", default=[], metavar="PART=SECONDS", help="change one part's time cap")
    p.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds for the whole run (default {BUDGET_S:g})")
    args = p.parse_args(argv)
    caps = {name: part.cap for name, part in PARTS.items()}
    for item in args.cap:
        name, _, value = item.partition("=")
        if name not in PARTS or not value.replace(".", "", 1).isdigit():
            p.error(f"--cap {item!r}: expected PART=SECONDS with PART one of {list(PARTS)}")
        caps[name] = float(value)
    out = args.out.resolve()  # the parts run in benchmarks/: they get absolute paths
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "suite.json").read_text()) if (out / "suite.json").exists() else {}
    same_kind = previous.get("dry_run") == args.dry_run and "runs" in previous
    suite = previous if same_kind else {"dry_run": args.dry_run, "runs": [], "parts": {}}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    with open(out / "suite.log", "a") as log:
        log.write(f"\n##### run {len(suite['runs'])}: {datetime.datetime.now().isoformat(timespec='seconds')}\n")
        log.flush()
        try:
            check = subprocess.run(
                [sys.executable, "-c", PREFLIGHT], env=env, stdout=subprocess.PIPE, stderr=log, text=True, timeout=120
            )
            device = json.loads(check.stdout.splitlines()[-1]) if check.returncode == 0 else None
        except subprocess.TimeoutExpired:
            device = None
        run = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "python": sys.version.split()[0],
            "packages": versions(),
            "device": device,
            "budget_s": args.budget,
            "parts": args.parts,
            "skipped": {},
        }
        suite["runs"].append(run)
        print(f"device: {device}, jax {run['packages']['jax']}, torch {run['packages']['torch']}", flush=True)
        if device is None or (not args.dry_run and device["backend"] != "gpu"):
            _write(out / "suite.json", suite)
            problem = "JAX did not start (see suite.log)" if device is None else f"JAX runs on {device['backend']}"
            print(f"error: {problem}; the suite needs a GPU (or --dry-run)", file=sys.stderr)
            return 2
        scratch = Path(tempfile.mkdtemp(prefix="sgdip-gpu-suite-"))
        failed = False
        for name in args.parts:
            left = args.budget - (time.monotonic() - started)
            if left < MIN_PART_S:  # not run: an earlier run's record of the part stays
                run["skipped"][name] = f"{left:.0f} s of the {args.budget:.0f} s budget left"
                print(f"{name}: skipped, {run['skipped'][name]}", flush=True)
                failed = True
                continue
            folder = scratch / "parts" / name
            folder.mkdir(parents=True)
            template = PARTS[name].dry if args.dry_run else PARTS[name].gpu
            part_argv = [a.format(cache=scratch / "jax_cache", out=folder) for a in template.split()]
            record = run_part(name, part_argv, min(caps[name], left), env, log)
            result = folder / PARTS[name].result
            record["rows"] = json.loads(result.read_text()) if result.exists() else None
            suite["parts"][name] = {**record, "run": len(suite["runs"]) - 1}
            suite["targets"] = read_targets(suite["parts"])
            _write(out / "suite.json", suite)
            failed |= record["returncode"] != 0
            stopped = " (stopped at its cap)" if record["stopped_at_cap"] else ""
            print(f"{name}: exit {record['returncode']}, {record['wall_s']:.0f} s{stopped}", flush=True)
    _write(out / "suite.json", suite)
    shutil.rmtree(scratch, ignore_errors=True)
    for key, t in suite.get("targets", {}).items():
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        met = {True: "met", False: "not met", None: "?"}[t["met"]]
        print(f"  {key}: {value} (target {t['target']}, {met})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
