"""Speed of one self-guided DIP step: sgdip-jax against a PyTorch port of the same step, same run.

Measures, for each configuration (image size, coils, U-Net depth/width, K draws, precision):
compile + first-step time, steady-state seconds per iteration (median over chunks after warm-up,
synchronised by the host transfer that ends each chunk), it/s of the PyTorch port (median over
steps after warm-up, synchronised), their ratio, XLA's FLOP count of one step (``cost_analysis``
of the compiled loss-and-gradient: forward + backward of the network over the K draws plus the
operator) and the achieved TFLOP/s, and peak device memory where the backend reports it.

    python benchmarks/speed.py --quick                  # CPU smoke test (tiny sizes)
    python benchmarks/speed.py                          # CPU: the demo configuration (128x128, unet4/16)
    python benchmarks/speed.py --paper                  # GPU: 640x372, 15 coils, depth-5 U-Net, K=1 and 4
    python benchmarks/speed.py --mode 320               # GPU: 320x320, 8 coils, depth-4 U-Net, K=1 and 4
    python benchmarks/speed.py --paper --cache DIR      # with JAX's persistent compilation cache

Precision: ``float32`` is XLA's default matmul precision (TF32 on GPUs that have it), and PyTorch's
port runs with TF32 allowed; ``bfloat16`` computes the network in bf16 in both. ``--draws`` and
``--dtypes`` keep a subset of the mode's settings; with ``--json`` the rows are rewritten after each
setting, so a run stopped early leaves the finished ones.

The PyTorch column needs ``torch`` (benchmark-only; the library never imports it) and is skipped
without it. Data are simulated (birdcage maps, VDRS mask, random image): timing does not depend on
content.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sgdip_jax import engine
from sgdip_jax.channels import to_channels
from sgdip_jax.config import NetworkConfig
from sgdip_jax.methods.common import build_network, network_forward
from sgdip_jax.methods.sgdip import SGDIPConfig, resolve_auto, sgdip_loss
from sgdip_jax.networks import init_network, param_count
from sgdip_jax.operators import MultiCoilMRI
from sgdip_jax.operators.coils import birdcage_maps
from sgdip_jax.operators.masks import vdrs


@dataclasses.dataclass(frozen=True)
class Setting:
    height: int
    width: int
    coils: int
    depth: int
    base: int
    draws: int
    dtype: str = "float32"

    @property
    def label(self):
        return f"{self.height}x{self.width} C{self.coils} unet{self.depth}/{self.base} K{self.draws} {self.dtype}"


def problem(s: Setting, seed=0):
    """Simulated operator, measurements and zero-filled input for setting ``s``."""
    smaps = birdcage_maps(s.coils, (s.height, s.width))
    mask, _ = vdrs((s.height, s.width), acceleration=4, seed=seed)
    op = MultiCoilMRI.create(smaps, mask)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(
        rng.standard_normal((s.height, s.width)) + 1j * rng.standard_normal((s.height, s.width)), jnp.complex64
    )
    y = op(x)
    return op, y, np.asarray(smaps), np.asarray(mask)


def _both(height, width, coils, depth, base):
    return [Setting(height, width, coils, depth, base, k, dt) for k in (1, 4) for dt in ("float32", "bfloat16")]


# mode -> (settings, iterations per measurement, iterations per chunk)
MODES = {
    "quick": ([Setting(32, 32, 4, 2, 8, 4)], 20, 5),
    # the CPU demo configuration (``sgdip demo``: 128x128, 8 coils, depth-4 U-Net of base 16), K = 2 and 1
    "demo": ([Setting(128, 128, 8, 4, 16, 2), Setting(128, 128, 8, 4, 16, 1)], 100, 10),
    "paper": (_both(640, 372, 15, 5, 64), 200, 20),
    "320": (_both(320, 320, 8, 4, 64), 200, 20),
}


def time_jax(s: Setting, iters: int, chunk: int):
    op, y, _, _ = problem(s)
    cfg = SGDIPConfig(network=NetworkConfig(name=f"unet{s.depth}", base=s.base), draws=s.draws, compute_dtype=s.dtype)
    module = build_network(cfg.network, 2)
    z = to_channels(op.adjoint(y), op)[None].astype(jnp.float32)
    variables = init_network(module, jax.random.PRNGKey(0), z)
    params = variables["params"]
    net_state = {k: v for k, v in variables.items() if k != "params"}
    loss_fn = sgdip_loss(network_forward(module, s.dtype), cfg)
    data = {"operator": op, "y": y}

    cost = (
        jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 2), has_aux=True))
        .lower(params, net_state, z, jax.random.PRNGKey(1), data)
        .compile()
        .cost_analysis()
    )
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")

    stamps = []
    t0 = time.perf_counter()
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
    first_chunk = stamps[0] - t0
    per_chunk = np.diff(stamps)
    sec_per_it = statistics.median(per_chunk) / chunk if len(per_chunk) else first_chunk / chunk
    mem = None
    stats = jax.devices()[0].memory_stats() if hasattr(jax.devices()[0], "memory_stats") else None
    if stats:
        mem = stats.get("peak_bytes_in_use")
    return {
        "params": param_count(variables),
        "compile_s": out.compile_time,
        "compile_plus_first_chunk_s": first_chunk,
        "jax_s_per_it": sec_per_it,
        "flops_per_it": flops,
        "tflops": flops / sec_per_it / 1e12,
        "peak_mem_gb": None if mem is None else mem / 1e9,
    }


def time_torch(s: Setting, iters: int):
    try:
        import torch
    except ImportError:
        return None
    sys.path.insert(0, str(Path(__file__).parent))
    import torch_reference as tr

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    op, y, smaps, mask = problem(s)
    net = tr.UNet(s.depth, s.base).to(dev)
    zf = np.asarray(op.adjoint(y))
    z = torch.tensor(np.stack([zf.real, zf.imag])[None], device=dev)
    cfg = resolve_auto(SGDIPConfig(), op)
    if cfg.data_loss != cfg.reg_loss:
        raise ValueError("torch_reference.make_step uses one loss norm for both terms")
    step = tr.make_step(
        net,
        torch.tensor(smaps, device=dev),
        torch.tensor(mask, device=dev),
        torch.tensor(np.asarray(y), device=dev),
        z,
        k=s.draws,
        noise_scale=cfg.noise_scale,
        alpha=cfg.alpha,
        loss=cfg.data_loss,
        lr=cfg.lr,
        lr_z=cfg.lr_z,
        dtype=torch.bfloat16 if s.dtype == "bfloat16" else None,
    )
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    for _ in range(3):
        step()
    sync()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--mode", choices=sorted(MODES), default="demo", help="which settings to time")
    p.add_argument("--quick", dest="mode", action="store_const", const="quick", help="= --mode quick")
    p.add_argument("--paper", dest="mode", action="store_const", const="paper", help="= --mode paper")
    p.add_argument("--draws", type=int, nargs="+", default=None, help="keep only these K (default: all)")
    p.add_argument("--dtypes", nargs="+", default=None, help="keep only these precisions (default: all)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch port")
    p.add_argument("--iters", type=int, default=None, help="iterations per measurement (default by mode)")
    p.add_argument("--cache", default=None, help="JAX persistent compilation cache directory")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.cache:
        jax.config.update("jax_compilation_cache_dir", args.cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    settings, iters, chunk = MODES[args.mode]
    settings = [
        s
        for s in settings
        if (args.draws is None or s.draws in args.draws) and (args.dtypes is None or s.dtype in args.dtypes)
    ]
    if not settings:
        p.error(f"--draws/--dtypes leave none of mode {args.mode}'s settings")
    iters = args.iters or iters
    chunk = min(chunk, iters)
    rows = []
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    print(
        f"{'setting':<42} {'params':>10} {'compile s':>9} {'jax it/s':>9} {'torch it/s':>10} {'ratio':>6} "
        f"{'TFLOP/s':>8} {'GB':>6}"
    )
    for s in settings:
        r = time_jax(s, iters, chunk)
        t = None if args.no_torch else time_torch(s, max(5, iters // 4))
        r.update(setting=s.label, torch_s_per_it=t, ratio=None if t is None else t / r["jax_s_per_it"])
        rows.append(r)
        torch_its = "-" if t is None else f"{1 / t:.2f}"
        ratio = "-" if t is None else f"{r['ratio']:.2f}"
        mem = "-" if r["peak_mem_gb"] is None else f"{r['peak_mem_gb']:.1f}"
        print(
            f"{s.label:<42} {r['params']:>10,} {r['compile_s']:>9.1f} {1 / r['jax_s_per_it']:>9.2f} "
            f"{torch_its:>10} {ratio:>6} {r['tflops']:>8.3f} {mem:>6}",
            flush=True,
        )
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
