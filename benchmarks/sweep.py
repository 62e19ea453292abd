"""Robustness sweep of the self-guided DIP defaults on open MR images (simulated multi-coil k-space)
and on inpainting of open photographs.

Each variant (overrides of :class:`~sgdip_jax.methods.SGDIPConfig`, one fixed configuration for all
cases) runs on every case to ``factor`` times the budget ``T``; per case it records the PSNR of the
EMA image at ``T`` and at ``factor * T``, the peak over iterations (an oracle) and its iteration
(the per-iteration PSNR is of the EMA image before the final data-consistency step), the
PSNR / SSIM of the returned image at ``factor * T`` (after that step when the variant has it), and
the ES-WMV detection (:mod:`sgdip_jax.early_stopping`, with the variant's settings) when it
triggered: its iteration and the PSNR of its image (after the final step when the variant has it);
also where the ES-WMV statistic is smallest over the whole run. Vanilla DIP runs as ``dip`` (and
``dip-es-p300``), aSeqDIP as ``aseqdip`` and its variants (``OTHER_METHODS``).
The objective of a variant is the worst case over the cases of
``min(PSNR at T, PSNR at factor * T) - best classical``, where "best classical" is the better of TV
and L1-wavelet with ``lam="auto"`` (GCV, no reference used).

Inpainting cases (``camera-p50``: a centre crop of ``size`` px of the photograph, 50 % of the pixels
missing, Bernoulli, noiseless) run the same variants, on top of the defaults' inpainting values
(the ``"auto"`` fields of :class:`~sgdip_jax.methods.SGDIPConfig`; ``c0.5`` is the MRI noise scale);
their best classical method is biharmonic inpainting (``skimage.restoration.inpaint_biharmonic``).

One JSON line per (variant, case) is appended to ``OUT/sweep.jsonl`` as soon as it is done, so an
interrupted sweep keeps its finished runs and a rerun skips them.

    python benchmarks/sweep.py --size 128 --variants default c0.5 --out results/sweep
    python benchmarks/sweep.py --size 128 --out results/sweep --table     # the markdown tables
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sgdip_jax.config import NetworkConfig, from_dict, to_dict
from sgdip_jax.data.samples import sample_image, sample_mri
from sgdip_jax.inputs import InputOptions, Problem, problem_from_case, problem_from_image
from sgdip_jax.methods import ASeqDIPConfig, DIPConfig, SGDIPConfig, run_method
from sgdip_jax.methods.parameter_choice import estimate_sigma
from sgdip_jax.metrics import center_crop, evaluate
from sgdip_jax.operators import Inpainting, measured_entries

CASES = {  # name -> (sample, acceleration, SNR in dB)
    "shoulder-4x30": ("shoulder", 4, 30),
    "shoulder-4x20": ("shoulder", 4, 20),
    "shoulder-8x30": ("shoulder", 8, 30),
    "shoulder-8x20": ("shoulder", 8, 20),
    "head-4x30": ("head", 4, 30),
    "head-4x20": ("head", 4, 20),
    "head-8x30": ("head", 8, 30),
    "head-8x20": ("head", 8, 20),
}
INPAINT_CASES = {  # name -> (photograph, missing fraction)
    "camera-p50": ("camera", 0.5),
    "camera-p80": ("camera", 0.8),
    "ascent-p50": ("ascent", 0.5),
    "ascent-p80": ("ascent", 0.8),
}
ALL_CASES = {**CASES, **INPAINT_CASES}
OLD_INPAINTING = {
    "z_init": "uniform",
    "noise_scale": 0.1,
    "alpha": 0.02,
    "data_loss": "l2",
    "reg_loss": "l2",
    "lr": 1e-3,
}
# ES-WMV with a patience short enough to trigger within 3T (training is unchanged)
ES_P300 = {"early_stopping": {"enabled": True, "window": 100, "patience": 300, "stop": False}}
# variants of the other DIP methods: overrides of their config defaults
OTHER_METHODS = {
    "dip": (DIPConfig, {"dip": {}, "dip-es-p300": ES_P300}),
    "aseqdip": (
        ASeqDIPConfig,
        {
            "aseqdip": {},
            "aseqdip-n2": {"z_every": 2},
            "aseqdip-a0.1": {"alpha": 0.1},
            "aseqdip-a0.1-n2": {"alpha": 0.1, "z_every": 2},
            "aseqdip-l1": {"data_loss": "l1", "reg_loss": "l1", "alpha": 0.005},
        },
    ),
}
VARIANTS = {  # overrides of the SGDIPConfig defaults, and the other methods' variants
    **{name: v for _, variants in OTHER_METHODS.values() for name, v in variants.items()},
    "default": {},
    "c0.1": {"noise_scale": 0.1, "alpha": 0.005},
    "c0.3": {"noise_scale": 0.3, "alpha": 0.005},
    "c0.5": {"noise_scale": 0.5, "alpha": 0.005},
    "c1.0": {"noise_scale": 1.0, "alpha": 0.005},
    "c1.5": {"noise_scale": 1.5, "alpha": 0.005},
    "c2.0": {"noise_scale": 2.0, "alpha": 0.005},
    "c0.5-gauss": {"noise_scale": 0.5, "noise": "gaussian", "alpha": 0.005},
    "c0.5-lr_z0.1": {"noise_scale": 0.5, "lr_z": 0.1, "alpha": 0.005},
    "c0.5-a0.05": {"noise_scale": 0.5, "alpha": 0.05},
    "c0.5-a0.5": {"noise_scale": 0.5, "alpha": 0.5},
    "c0.5-a5": {"noise_scale": 0.5, "alpha": 5.0},
    "c0.5-lr1e-2": {"noise_scale": 0.5, "lr": 1e-2, "alpha": 0.005},
    "c0.5-lr2e-2": {"noise_scale": 0.5, "lr": 2e-2, "alpha": 0.005},
    "c1.0-lr1e-2": {"noise_scale": 1.0, "lr": 1e-2, "alpha": 0.005},
    "c0.5-lr1e-2-a0.05": {"noise_scale": 0.5, "lr": 1e-2, "alpha": 0.05},
    "c0.5-lr1e-2-a0.5": {"noise_scale": 0.5, "lr": 1e-2, "alpha": 0.5},
    "c0.5-K2": {"noise_scale": 0.5, "draws": 2, "alpha": 0.005},
    "K4": {"draws": 4},  # the default before K = 2 (run with --iters 500, its budget then)
    "K4-z-filled": {"draws": 4, "z_init": "filled"},
    "c0.5-K8": {"noise_scale": 0.5, "draws": 8, "alpha": 0.005},
    "c0.5-dc": {"noise_scale": 0.5, "data_consistency": True, "alpha": 0.005},
    "tv0.001": {"tv": 0.001},
    "tv0.003": {"tv": 0.003},
    "tv0.01": {"tv": 0.01},
    "tv0.03": {"tv": 0.03},
    "tv0.1": {"tv": 0.1},
    "lr2e-2-hl300": {"lr": 2e-2, "lr_half_life": 300},
    "lr3e-2-hl200": {"lr": 3e-2, "lr_half_life": 200},
    "lr2e-2-hl300-tv0.01": {"lr": 2e-2, "lr_half_life": 300, "tv": 0.01},
    "hold800-hl500": {"lr_decay_begin": 800, "lr_half_life": 500},  # rate decays after 800 steps
    "floor1.2": {"data_floor": 1.2},
    "lrz1e-3": {"lr_z": 1e-3},
    "zhold800-hl300": {"lr_z_decay_begin": 800, "lr_z_half_life": 300},  # the default since 2026-12-06
    "z-const": {"lr_z_decay_begin": 0, "lr_z_half_life": None},  # the input's rate constant (before)
    "z-uniform": {"z_init": "uniform"},
    "z-filled": {"z_init": "filled"},  # MRI: z from 8 CG steps of SENSE
    "ema0.9": {"ema": 0.9},
    "ema0.99": {"ema": 0.99},  # the default before 0.95
    "es-p300": ES_P300,
    "floor0": {"data_floor": 0.0},  # the default before the data term's noise floor
    "floor0.8": {"data_floor": 0.8},
    # the inpainting preset before the filled input (z uniform, c 0.1, alpha 0.02, squared L2, Adam 1e-3)
    "old-inpainting": OLD_INPAINTING,
    "old-inpainting-lr1e-2": {**OLD_INPAINTING, "lr": 1e-2},
    "old-inpainting-filled": {**OLD_INPAINTING, "z_init": "filled"},
    "old-inpainting-filled-lr1e-2": {**OLD_INPAINTING, "z_init": "filled", "lr": 1e-2},
}


def make_case(name, size, seed) -> Problem:
    """The problem of case ``name`` (simulated MRI or inpainting), as ``sgdip reconstruct`` builds it."""
    if name in INPAINT_CASES:
        image, missing = INPAINT_CASES[name]
        x = np.asarray(center_crop(sample_image(image), size, axes=(0, 1)))
        return problem_from_image(x, InputOptions(mask=f"bernoulli:{missing}", seed=seed))
    sample, acceleration, snr = CASES[name]
    case = sample_mri(sample, size=size, coils=8, acceleration=acceleration, snr_db=snr, seed=seed)
    return problem_from_case(case, source="simulated")


def classical(case):
    """PSNR / SSIM of zero-filled, TV and L1-wavelet with ``lam="auto"`` (GCV, no reference used); for
    inpainting of the masked image and biharmonic inpainting."""
    if isinstance(case.operator, Inpainting):
        from skimage.restoration import inpaint_biharmonic

        missing = np.asarray(case.operator.mask) == 0
        return {
            "zero-filled": evaluate(case.y, ref=case.reference),
            "biharmonic": {**evaluate(inpaint_biharmonic(case.y, missing), ref=case.reference), "lam": None},
        }
    out = {}
    for method in ("zero-filled", "tv", "l1-wavelet"):
        result = run_method(method, case.operator, case.y, None, key=0)
        out[method] = {**evaluate(result.image, ref=case.reference), "lam": result.config.get("lam")}
    return out


def figures(rows, base, out):
    """``OUT/psnr_<case>.png``: PSNR of the EMA image against iteration (recorded every 10th) for every
    variant, with zero-filled and TV (auto) as dashed lines."""
    from sgdip_jax.figures import curves_figure

    for case in base:
        curves = {variant_label(r): {"psnr": np.repeat(r["psnr_every_10"], 10)} for r in rows if r["case"] == case}
        lines = {m: base[case][m]["psnr"] for m in ("zero-filled", "tv", "biharmonic") if m in base[case]}
        png = curves_figure(curves, "psnr", "PSNR of the EMA image (dB)", title=case, baselines=lines)
        if png is not None:
            (out / f"psnr_{case}.png").write_bytes(png)


def variant_label(row):
    """The variant's name, with its network when that is not the default depth-4 U-Net of width 16."""
    return row["variant"] if row["network"] == "unet4/16" else f"{row['variant']} ({row['network']})"


def table(rows, size, seed, out=None):
    """Markdown: one line per (variant, case) with the margin over the best classical method, then the
    worst margin per variant (the objective); with ``out``, the PSNR curves (:func:`figures`)."""
    cases = sorted({r["case"] for r in rows}, key=list(ALL_CASES).index)
    base = {name: classical(make_case(name, size, seed)) for name in cases}
    if out is not None:
        figures(rows, base, out)
    lines = [
        "| variant | case | PSNR @T | PSNR @3T | peak (oracle) @ it | ES-WMV @ it | SSIM at the end "
        "| best classical (auto) | margin | time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    worst = {}
    for r in rows:
        best_name = max(set(base[r["case"]]) - {"zero-filled"}, key=lambda m: base[r["case"]][m]["psnr"])
        best = base[r["case"]][best_name]["psnr"]
        margin = min(r["psnr_T"], r["psnr_3T"]) - best
        label = variant_label(r)
        worst[label] = min(worst.get(label, np.inf), margin)
        at_3t = f"{r['psnr_3T']:.2f}" if r["factor"] > 1 else "-"  # a run to T only: no 3T value
        es = f"{r['psnr_es']:.2f} @ {r['es_iteration']}" if r.get("psnr_es") is not None else "-"
        lines.append(
            f"| {label} | {r['case']} | {r['psnr_T']:.2f} | {at_3t} | {r['peak']:.2f} @ {r['peak_it']} | {es} "
            f"| {r['ssim_3T']:.4f} | {best:.2f} ({best_name}) | {margin:+.2f} | {r['wall_time']:.0f} |"
        )
    lines += ["", "| variant | worst margin (objective) |", "|---|---|"]
    lines += [f"| {v} | {m:+.2f} |" for v, m in sorted(worst.items(), key=lambda item: -item[1])]
    lines += ["", "| case | zero-filled / masked | classical (lam) |", "|---|---|---|"]
    for c in cases:
        others = [m for m in base[c] if m != "zero-filled"]
        lam = {m: f" (lam {base[c][m]['lam']:.2g})" if base[c][m]["lam"] is not None else "" for m in others}
        cells = ", ".join(f"{m} {base[c][m]['psnr']:.2f}{lam[m]}" for m in others)
        lines.append(f"| {c} | {base[c]['zero-filled']['psnr']:.2f} | {cells} |")
    return "\n".join(lines)


def noise_scaled_tv(overrides, case):
    """``overrides`` with ``tv_noise = k`` replaced by the DIP-TV weight ``tv = k sigma / rms(y)``: the
    noise level estimated from the data alone (:func:`~sgdip_jax.methods.parameter_choice.estimate_sigma`)
    relative to the rms of the measured entries (a sigma-aware setting, no reference used)."""
    if "tv_noise" not in overrides:
        return overrides
    y = np.asarray(case.y)
    rms = np.sqrt(np.mean(np.abs(y[measured_entries(case.operator, y.shape)]) ** 2))
    tv = overrides["tv_noise"] * estimate_sigma(case.operator, y) / rms
    return {**{k: v for k, v in overrides.items() if k != "tv_noise"}, "tv": float(tv)}


def run_variant(name, case, args):
    overrides = VARIANTS[name]
    network = NetworkConfig(name=args.network, base=args.base)
    iterations = args.iters * args.factor
    method, cls = next(
        ((m, cls) for m, (cls, variants) in OTHER_METHODS.items() if name in variants), ("sgdip", SGDIPConfig)
    )
    base = to_dict(cls(network=network, iterations=iterations, ssim_every=args.iters))
    config = from_dict(cls, {**base, **noise_scaled_tv(overrides, case)})
    start = time.perf_counter()
    result = run_method(method, case.operator, case.y, config, key=args.seed, target=case.target, progress=False)
    wall = time.perf_counter() - start
    psnr = np.asarray(result.history["psnr"], np.float64)
    ssim = np.asarray(result.history["ssim"], np.float64)
    peak = int(np.nanargmax(psnr))
    t = args.iters
    final = {k: float(v) for k, v in evaluate(result.image, ref=case.reference).items()}
    es = None if result.stop_image is None else float(evaluate(result.stop_image, ref=case.reference)["psnr"])
    stat = np.asarray(result.history.get("es_stat", []), np.float64)
    es_argmin = int(np.nanargmin(stat)) if np.isfinite(stat).any() else None
    return {
        "variant": name,
        "overrides": overrides,
        "method": method,
        "iters": t,
        "factor": args.factor,
        "psnr_T": float(psnr[t - 1]),
        "psnr_3T": float(psnr[-1]),
        "peak": float(psnr[peak]),
        "peak_it": peak + 1,
        "ssim_T": float(ssim[t]) if len(ssim) > t else None,  # SSIM is taken at steps t % T == 0
        "ssim_3T": final["ssim"],
        "psnr_final": final["psnr"],
        "es_iteration": result.stop_iteration,
        "psnr_es": es,
        # where the ES-WMV statistic is smallest over the whole run (triggered or not), and the PSNR
        # of the EMA image there
        "es_argmin": None if es_argmin is None else es_argmin + 1,
        "psnr_at_es_argmin": None if es_argmin is None else float(psnr[es_argmin]),
        "wall_time": wall,
        "psnr_every_10": psnr[9::10].tolist(),
        "config": to_dict(config),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(ALL_CASES))
    p.add_argument("--variants", nargs="+", default=["dip", "default"], choices=list(VARIANTS))
    p.add_argument("--iters", type=int, default=500, help="the budget T")
    p.add_argument("--factor", type=int, default=3, help="run to factor * T")
    p.add_argument("--network", default="unet4")
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--table",
        action="store_true",
        help="print the markdown tables of OUT/sweep.jsonl, write OUT/psnr_<case>.png, and exit",
    )
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "sweep.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    if args.table:
        print(table([r for r in rows if r["size"] == args.size], args.size, args.seed, out))
        return
    network = f"{args.network}/{args.base}"
    done = {(r["variant"], r["case"], r["network"]) for r in rows}
    for variant in args.variants:
        for name in args.cases:
            if (variant, name, network) in done:
                continue
            case = make_case(name, args.size, args.seed)
            row = {
                "case": name,
                "size": args.size,
                "network": network,
                **run_variant(variant, case, args),
            }
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"{variant:>16} {name:>14}: T {row['psnr_T']:.2f}  3T {row['psnr_3T']:.2f}  peak {row['peak']:.2f}"
                f" @ {row['peak_it']}  ({row['wall_time']:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
