"""Speed of one self-guided DIP step: sgdip-jax against a PyTorch port of the same step, same run.

Every setting (image size, coils, U-Net depth/width, K draws, precision) runs in a fresh process, so
its compile time is not helped by an earlier setting's in-process caches (autotuning, loaded
kernels) and its peak memory is its own; ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` there, since JAX
and the PyTorch port share the device. Each row holds:

* ``compile_s``: :func:`sgdip_jax.engine.run`'s set-up and compilation of the training chunk; cold
  when the setting's persistent cache (``--cache DIR``: ``DIR/<setting>``) starts empty
  (``cache_entries_before`` = 0), warm when an earlier process filled it;
* ``jax_s_per_it``: the median over chunks of ``chunk`` steps, after the first chunk (the first
  execution), of the time between the host transfers that end the chunks, divided by ``chunk``;
* ``flops_per_it``: XLA's FLOP count of one loss-and-gradient step (``Lowered.cost_analysis``:
  forward and backward of the network over the K draws plus the operator); ``tflops`` = FLOP / s;
* ``peak_mem_gb``: the device's ``peak_bytes_in_use`` (``None`` where the backend reports none);
* ``torch_s_per_it``: the PyTorch port (``torch_reference.py``) timed the same way: a warm-up chunk
  (in which ``cudnn.benchmark`` picks its algorithms), then the median of the chunks, each ended
  by ``torch.cuda.synchronize``; ``torch_peak_mem_gb``: ``torch.cuda.max_memory_allocated``;
  ``ratio`` = ``torch_s_per_it / jax_s_per_it``.

Precisions: ``tf32``: float32 arrays at the default matmul precision (XLA's default and PyTorch
with ``allow_tf32``: TF32 on NVIDIA GPUs from Ampere on, plain float32 on a CPU); ``fp32``: strict
float32 (``jax_default_matmul_precision="highest"``; PyTorch ``allow_tf32 = False`` for matmuls
and cuDNN); ``bf16``: the network computed in bfloat16 (the library's ``compute_dtype``; PyTorch
``autocast``). A mode's settings run in priority order: K = 4 before K = 1, then tf32, bf16, fp32.

An error of one side (e.g. out of memory) is that row's ``jax_error`` / ``torch_error`` and the next
setting runs; ``"unfinished"`` there means the process stopped while that side ran (a time cap).
With ``--json`` the rows are rewritten as each setting goes, so a run stopped early keeps what
was measured.

    python benchmarks/speed.py --quick                  # CPU smoke test (tiny sizes)
    python benchmarks/speed.py                          # CPU: the demo configuration (128x128, unet4/16)
    python benchmarks/speed.py --paper --draws 4        # GPU: 640x372, 15 coils, depth-5 U-Net, K=4
    python benchmarks/speed.py --mode 320               # GPU: 320x320, 8 coils, depth-4 U-Net, K=4 and 1
    python benchmarks/speed.py --paper --cache DIR      # with JAX's persistent compilation cache

The PyTorch column needs ``torch`` (benchmark-only; the library never imports it) and is skipped
without it. Data are simulated (birdcage maps, VDRS mask, random image): timing does not depend on
content.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sgdip_jax import engine
from sgdip_jax.channels import to_channels
from sgdip_jax.config import NetworkConfig
from sgdip_jax.files import atomic_write
from sgdip_jax.methods.common import build_network, network_forward
from sgdip_jax.methods.sgdip import SGDIPConfig, resolve_auto, sgdip_loss
from sgdip_jax.networks import init_network, param_count
from sgdip_jax.operators import MultiCoilMRI
from sgdip_jax.operators.coils import birdcage_maps
from sgdip_jax.operators.masks import vdrs

HERE = Path(__file__).resolve().parent
PRECISIONS = ("tf32", "bf16", "fp32")
UNFINISHED = "unfinished"


@dataclasses.dataclass(frozen=True)
class Setting:
    height: int
    width: int
    coils: int
    depth: int
    base: int
    draws: int
    precision: str = "tf32"

    @property
    def label(self):
        return f"{self.height}x{self.width} C{self.coils} unet{self.depth}/{self.base} K{self.draws} {self.precision}"

    @property
    def compute_dtype(self):
        return "bfloat16" if self.precision == "bf16" else "float32"


def grid(height, width, coils, depth, base):
    """A configuration's settings in priority order: K = 4, then K = 1; tf32, bf16, fp32."""
    return [Setting(height, width, coils, depth, base, k, p) for k in (4, 1) for p in PRECISIONS]


# mode -> (settings, iterations per measurement, iterations per chunk)
MODES = {
    "quick": (grid(16, 16, 4, 1, 4), 15, 5),
    # the CPU demo configuration (``sgdip demo``: 128x128, 8 coils, depth-4 U-Net of base 16), K = 2 and 1
    "demo": ([Setting(128, 128, 8, 4, 16, 2), Setting(128, 128, 8, 4, 16, 1)], 100, 10),
    "paper": (grid(640, 372, 15, 5, 64), 25, 5),
    "320": (grid(320, 320, 8, 4, 64), 25, 5),
}


def problem(s: Setting, seed=0):
    """Simulated operator, measurements, coil maps and mask for setting ``s``."""
    smaps = birdcage_maps(s.coils, (s.height, s.width))
    mask, _ = vdrs((s.height, s.width), acceleration=4, seed=seed)
    op = MultiCoilMRI.create(smaps, mask)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(
        rng.standard_normal((s.height, s.width)) + 1j * rng.standard_normal((s.height, s.width)), jnp.complex64
    )
    return op, op(x), np.asarray(smaps), np.asarray(mask)


def time_jax(s: Setting, prob, iters: int, chunk: int) -> dict:
    """Compile time, steady-state seconds per iteration, FLOPs and peak memory of the library's step."""
    op, y, _, _ = prob
    cfg = SGDIPConfig(
        network=NetworkConfig(name=f"unet{s.depth}", base=s.base), draws=s.draws, compute_dtype=s.compute_dtype
    )
    module = build_network(cfg.network, 2)
    z = to_channels(op.adjoint(y), op)[None].astype(jnp.float32)
    variables = init_network(module, jax.random.PRNGKey(0), z)
    params = variables["params"]
    net_state = {k: v for k, v in variables.items() if k != "params"}
    loss_fn = sgdip_loss(network_forward(module, s.compute_dtype), cfg)
    data = {"operator": op, "y": y}

    stamps = []
    start = time.perf_counter()
    config = engine.EngineConfig(loss_fn, iters, engine.adam(cfg.lr), engine.adam(cfg.lr_z), chunk=chunk)
    out = engine.run(
        config,
        params,
        net_state,
        z,
        jax.random.PRNGKey(2),
        data,
        progress=False,
        callback=lambda info: stamps.append(time.perf_counter()),
    )
    sec_per_it = statistics.median(np.diff(stamps)) / chunk  # chunks after the first only
    peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")
    # after the timed run, so the count's tracing does not warm the compile above; lowered, not compiled
    lowered = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 2), has_aux=True)).lower(
        params, net_state, z, jax.random.PRNGKey(1), data
    )
    flops = float(lowered.cost_analysis()["flops"])
    return {
        "params": param_count(variables),
        "compile_s": out.compile_time,
        "compile_plus_first_chunk_s": stamps[0] - start,
        "jax_s_per_it": sec_per_it,
        "flops_per_it": flops,
        "tflops": flops / sec_per_it / 1e12,
        "peak_mem_gb": None if peak is None else peak / 1e9,
    }


def time_torch(s: Setting, prob, iters: int, chunk: int) -> dict:
    """Seconds per iteration and peak memory of the PyTorch port, on CUDA when JAX runs on a GPU."""
    import torch

    sys.path.insert(0, str(HERE))
    import torch_reference as tr

    device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("PyTorch sees no CUDA device while JAX runs on a GPU: its numbers would be a CPU's")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = s.precision != "fp32"
    op, y, smaps, mask = prob
    net = tr.UNet(s.depth, s.base).to(device)
    zf = np.asarray(op.adjoint(y))
    z = torch.tensor(np.stack([zf.real, zf.imag])[None], device=device)
    cfg = resolve_auto(SGDIPConfig(), op)
    if cfg.data_loss != cfg.reg_loss:
        raise ValueError("torch_reference.make_step uses one loss norm for both terms")
    step = tr.make_step(
        net,
        torch.tensor(smaps, device=device),
        torch.tensor(mask, device=device),
        torch.tensor(np.asarray(y), device=device),
        z,
        k=s.draws,
        noise_scale=cfg.noise_scale,
        alpha=cfg.alpha,
        loss=cfg.data_loss,
        lr=cfg.lr,
        lr_z=cfg.lr_z,
        dtype=torch.bfloat16 if s.precision == "bf16" else None,
    )
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def timed_chunk():
        begin = time.perf_counter()
        for _ in range(chunk):
            step()
        sync()
        return time.perf_counter() - begin

    times = [timed_chunk() for _ in range(iters // chunk)][1:]  # the first: warm-up, cudnn.benchmark's search
    return {
        "torch_s_per_it": statistics.median(times) / chunk,
        "torch_peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else None,
    }


def attempt(row: dict, side: str, fn, *args) -> None:
    """``row`` updated with ``fn(*args)``, or with ``row[side + "_error"]``: its exception, briefly."""
    try:
        row.update(fn(*args))
        row[f"{side}_error"] = None
    except Exception as e:  # out of memory or a backend error: the row records it, the run goes on
        first = next(iter(str(e).strip().splitlines()), "")
        row[f"{side}_error"] = f"{type(e).__name__}: {first[:500]}"


def save_row(path: Path, row: dict) -> None:
    """Replace this setting's row in the JSON list at ``path`` (appended when new)."""
    rows = [r for r in json.loads(path.read_text()) if r["setting"] != row["setting"]] + [row]
    atomic_write(path, lambda f: f.write(json.dumps(rows, indent=2).encode()))


def measure(s: Setting, args, path: Path) -> bool:
    """Measure ``s`` in this (fresh) process, saving its row at ``path`` after each side; ``True`` if no error."""
    if s.precision == "fp32":
        jax.config.update("jax_default_matmul_precision", "highest")
    cached = None
    if args.cache:
        folder = Path(args.cache) / re.sub(r"[^A-Za-z0-9]+", "-", s.label)
        cached = len(list(folder.iterdir())) if folder.is_dir() else 0
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    row = {"setting": s.label, "device": jax.devices()[0].device_kind, "cache_entries_before": cached}
    row["jax_error"] = UNFINISHED
    save_row(path, row)  # a process stopped from here on leaves "unfinished" rows
    prob = problem(s)
    attempt(row, "jax", time_jax, s, prob, args.iters, args.chunk)
    save_row(path, row)
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        row["torch_error"] = UNFINISHED
        save_row(path, row)
        attempt(row, "torch", time_torch, s, prob, args.iters, args.chunk)
        if row.get("torch_s_per_it") and row.get("jax_s_per_it"):
            row["ratio"] = row["torch_s_per_it"] / row["jax_s_per_it"]
        save_row(path, row)
    return row["jax_error"] is None and row.get("torch_error") is None


def run_isolated(s: Setting, args, path: Path) -> dict:
    """Setting ``s`` in a fresh process (this script with ``--child``); its row from ``path``."""
    cmd = [sys.executable, __file__, "--child", "--mode", args.mode, "--draws", str(s.draws)]
    cmd += ["--precisions", s.precision, "--iters", str(args.iters), "--json", str(path)]
    cmd += ["--cache", args.cache] if args.cache else []
    cmd += ["--no-torch"] if args.no_torch else []
    proc = subprocess.run(cmd, env={**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}, check=False)
    row = next((r for r in json.loads(path.read_text()) if r["setting"] == s.label), None)
    if proc.returncode != 0:
        ended = f"{UNFINISHED}: the setting's process exited with status {proc.returncode} (its output is above)"
        row = row or {"setting": s.label, "jax_error": UNFINISHED}
        row.update({k: ended for k, v in row.items() if k.endswith("_error") and v == UNFINISHED})
        save_row(path, row)
    return row


def fmt(value, width, spec):
    return f"{'-' if value is None else format(value, spec):>{width}}"


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--mode", choices=sorted(MODES), default="demo", help="which settings to time (default demo)")
    p.add_argument("--quick", dest="mode", action="store_const", const="quick", help="= --mode quick")
    p.add_argument("--paper", dest="mode", action="store_const", const="paper", help="= --mode paper")
    p.add_argument("--draws", type=int, nargs="+", default=None, help="keep only these K (default: all)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=None, help="keep only these (default: all)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch port")
    p.add_argument("--iters", type=int, default=None, help="iterations per measurement (default by mode)")
    p.add_argument("--cache", default=None, help="JAX persistent compilation cache: one folder per setting in it")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    settings, iters, args.chunk = MODES[args.mode]
    settings = [
        s
        for s in settings
        if (args.draws is None or s.draws in args.draws) and (args.precisions is None or s.precision in args.precisions)
    ]
    if not settings:
        p.error(f"--draws/--precisions leave none of mode {args.mode}'s settings")
    args.iters = args.iters or iters
    if args.iters % args.chunk or args.iters < 2 * args.chunk:
        p.error(
            f"--iters {args.iters}: expected a multiple of the mode's chunk ({args.chunk}) of at least 2 chunks "
            "(the first, holding the first execution, is not timed)"
        )
    if args.child:
        return 0 if measure(settings[0], args, Path(args.json)) else 1

    print(
        f"{'setting':<38} {'params':>10} {'compile s':>9} {'jax it/s':>9} {'torch it/s':>10} {'ratio':>6} "
        f"{'TFLOP/s':>8} {'GB':>6}  errors",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.json or Path(tmp) / "speed.json")
        atomic_write(path, lambda f: f.write(b"[]"))
        failed = False
        for s in settings:
            r = run_isolated(s, args, path)
            errors = "; ".join(f"{k}: {v}" for k, v in r.items() if k.endswith("_error") and v)
            failed |= bool(errors)
            its = {k: None if r.get(k) is None else 1 / r[k] for k in ("jax_s_per_it", "torch_s_per_it")}
            cells = [
                fmt(r.get("params"), 10, ","),
                fmt(r.get("compile_s"), 9, ".1f"),
                fmt(its["jax_s_per_it"], 9, ".2f"),
                fmt(its["torch_s_per_it"], 10, ".2f"),
                fmt(r.get("ratio"), 6, ".2f"),
                fmt(r.get("tflops"), 8, ".3f"),
                fmt(r.get("peak_mem_gb"), 6, ".1f"),
            ]
            print(f"{s.label:<38} {' '.join(cells)}  {errors}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
