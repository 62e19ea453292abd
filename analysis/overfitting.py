# %% [markdown]
# # Overfitting, attributed: which mechanism keeps self-guided DIP from declining
#
# Claim (paper): vanilla DIP overfits noisy data (its PSNR peaks, then falls); self-guided DIP has
# negligible overfitting. Today's self-guided DIP adds mechanisms that are not in the paper (a
# decaying input rate, a faster moving average, self-validated stopping; earlier a data-term floor),
# so its flat curves say nothing about the paper's objective by themselves. Here every run goes to
# 5x the budget and records the PSNR of the moving average (every step) and of the raw iterate
# (every chunk):
#
# * `paper`: the paper's objective alone: noise scale 0.25 (the MRI preset), constant input rate,
#   moving average 0.99, no floor, no self-validation, no final data-consistency step;
# * `paper` plus one of today's additions at a time: `+decay` (the input rate halves every 300
#   steps after step 800), `+ema0.95`, `+floor` (the data term floored at the noise's expected
#   value, `data_floor = 1`), `+selfval` (10 % of the measured locations held out; the reported
#   image is the moving average where their error was smallest);
# * `defaults`: today's defaults (restart threshold kept at step 800), without the final
#   data-consistency step so that every curve is the network's;
# * `no-guidance`: `paper` without self-guidance (`alpha = 0`, input fixed: vanilla DIP with the
#   same input, draws and rates), and `dip`: the product's vanilla DIP (its own defaults).
#
# The drop is the peak PSNR minus the PSNR at 5x the budget; for runs with self-validation also the
# reported image's PSNR. Case: the bundled shoulder at `--size`, 8 coils, VDRS 4x, `--snr`, the
# demo's network (depth-4 U-Net, width 16), `--seeds`.
#
# Run: `python analysis/overfitting.py` (writes analysis/outputs/overfitting/; resumable: the
# runs already in `runs.jsonl` are kept)

# %%
from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from sgdip_jax.config import NetworkConfig  # noqa: E402
from sgdip_jax.files import atomic_write  # noqa: E402
from sgdip_jax.methods import DIPConfig, SGDIPConfig  # noqa: E402

COILS = 8
FACTOR = 5  # runs go to FACTOR x the budget
NETWORK = NetworkConfig(name="unet4", base=16)  # the demo's network
PAPER = {
    "noise_scale": 0.25,
    "lr_z_half_life": None,
    "ema": 0.99,
    "data_floor": 0.0,
    "holdout": 0.0,
    "restart_before": 0.0,
    "data_consistency": False,
}
# name -> (method, overrides of the method's defaults; "budget" is replaced by FACTOR x its budget)
VARIANTS = {
    "paper": ("sgdip", PAPER),
    "+decay": ("sgdip", {**PAPER, "lr_z_half_life": 300.0}),
    "+ema0.95": ("sgdip", {**PAPER, "ema": 0.95}),
    "+floor": ("sgdip", {**PAPER, "data_floor": 1.0}),
    "+selfval": ("sgdip", {**PAPER, "holdout": SGDIPConfig.holdout, "extend": 0.0}),
    "defaults": ("sgdip", {"data_consistency": False, "extend": 0.0}),
    "no-guidance": ("sgdip", {**PAPER, "alpha": 0.0, "lr_z": 0.0}),
    "dip": ("dip", {}),
}


# %%
def config_for(variant: str, quick: bool):
    """The variant's config at ``FACTOR`` x its method's budget (``quick``: a tiny network and budget)."""
    method, overrides = VARIANTS[variant]
    cls = SGDIPConfig if method == "sgdip" else DIPConfig
    budget = 10 if quick else cls.iterations
    overrides = dict(overrides)
    if variant == "defaults":  # the restart threshold at the same step as at the budget
        overrides["restart_before"] = SGDIPConfig.restart_before / FACTOR
    network = NetworkConfig(name="unet1", base=8) if quick else NETWORK
    chunk = max(1, budget // 40)
    return method, budget, cls(network=network, iterations=FACTOR * budget, chunk=chunk, **overrides)


def run(variant: str, snr: float, seed: int, size: int, quick: bool) -> dict:
    """One run: PSNR curves of the moving average and of the raw iterate, and their summaries."""
    method, budget, config = config_for(variant, quick)
    problem = common.make_problem(f"{COILS} coils, 4x, {snr:g} dB", size, COILS, snr_db=snr, seed=seed)
    tracked, seconds = common.timed(common.run_tracked, method, problem, config, jax.random.PRNGKey(seed))
    ema = np.asarray(tracked.result.history["psnr"], np.float64)
    raw = common.psnr(tracked.raw, ref=problem.x)
    row = {"variant": variant, "snr": snr, "seed": seed, "size": size, "method": method, "budget": budget}
    row |= {"config": tracked.result.config, "seconds": seconds}  # every resolved setting of the run
    for name, curve, steps in (("ema", ema, np.arange(1, ema.size + 1)), ("raw", raw, tracked.iterations)):
        at = {f"at_{m}x": float(curve[np.searchsorted(steps, m * budget)]) for m in (1, 3, FACTOR)}
        peak = int(curve.argmax())
        row[name] = {"peak": float(curve[peak]), "peak_iteration": int(steps[peak]), **at}
        row[name]["drop"] = row[name]["peak"] - row[name][f"at_{FACTOR}x"]
    row["ema_curve"], row["raw_curve"], row["raw_steps"] = ema[9::10], raw, tracked.iterations
    if tracked.result.selection is not None:
        row["reported"] = float(common.psnr(np.asarray(tracked.result.image)[None], ref=problem.x)[0])
        row["reported_iteration"] = int(tracked.result.selection["iteration"])
    return row


def table(rows: list[dict]) -> str:
    """Markdown: per variant and SNR, the mean and worst (over seeds) of the drops, and the peaks."""
    lines = [
        "| variant | SNR (dB) | seeds | EMA peak (mean) | EMA drop mean / worst | raw drop mean / worst "
        f"| EMA @1x / @{FACTOR}x (mean) | reported (self-validation) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for snr in sorted({r["snr"] for r in rows}):
        for variant in VARIANTS:
            sel = [r for r in rows if r["variant"] == variant and r["snr"] == snr]
            if not sel:
                continue
            ema, raw = ([r[part] for r in sel] for part in ("ema", "raw"))
            reported = [r["reported"] for r in sel if "reported" in r]
            lines.append(
                f"| {variant} | {snr:g} | {len(sel)} | {np.mean([e['peak'] for e in ema]):.2f} | "
                f"{np.mean([e['drop'] for e in ema]):.2f} / {max(e['drop'] for e in ema):.2f} | "
                f"{np.mean([e['drop'] for e in raw]):.2f} / {max(e['drop'] for e in raw):.2f} | "
                f"{np.mean([e['at_1x'] for e in ema]):.2f} / {np.mean([e[f'at_{FACTOR}x'] for e in ema]):.2f} | "
                f"{f'{np.mean(reported):.2f}' if reported else '-'} |"
            )
    return "\n".join(lines)


def figure(out: Path, rows: list[dict]) -> list[str]:
    """PSNR of the moving average against the iteration, one panel per SNR, the lowest seed."""
    import matplotlib.pyplot as plt

    snrs = sorted({r["snr"] for r in rows})
    fig, axes = plt.subplots(1, len(snrs), figsize=(5.2 * len(snrs), 3.6), squeeze=False)
    for ax, snr in zip(axes[0], snrs):
        seed = min(r["seed"] for r in rows if r["snr"] == snr)
        for r in rows:
            if r["snr"] == snr and r["seed"] == seed:
                curve = np.asarray(r["ema_curve"])
                ax.plot(10 * np.arange(1, curve.size + 1) / r["budget"], curve, lw=1, label=r["variant"])
        ax.set(title=f"{snr:g} dB, seed {seed}", xlabel="iteration / budget", ylabel="PSNR of the moving average (dB)")
        ax.legend(fontsize=6)
    return [common.save_figure(fig, out / "overfitting.png")]


# %%
def main(argv=None) -> dict:
    p = common.parser("Overfitting of self-guided DIP, attributed to its mechanisms", 64, "overfitting")
    p.add_argument("--snr", type=float, nargs="+", default=[20.0, 30.0], help="SNRs in dB (default 20 30)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS), help="default: all")
    args = p.parse_args(argv)
    out = common.prepare_out(args.out)
    size, snrs, seeds = (16, args.snr[:1], args.seeds[:1]) if args.quick else (args.size, args.snr, args.seeds)
    path = out / "runs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["variant"], r["snr"], r["seed"], r["size"]) for r in rows}
    for snr in snrs:
        for seed in seeds:
            for variant in args.variants:
                if (variant, snr, seed, size) in done:
                    continue
                row = common.plain(run(variant, snr, seed, size, args.quick))
                rows.append(row)
                text = "".join(json.dumps(r) + "\n" for r in rows)
                atomic_write(str(path), lambda f, text=text: f.write(text.encode()))
                e = row["ema"]
                print(
                    f"{snr:g} dB seed {seed} {variant:11s} EMA peak {e['peak']:.2f} @{e['peak_iteration']} "
                    f"@1x {e['at_1x']:.2f} @{FACTOR}x {e[f'at_{FACTOR}x']:.2f} drop {e['drop']:.2f}; raw drop "
                    f"{row['raw']['drop']:.2f}"
                    + (f"; reported {row['reported']:.2f}" if "reported" in row else "")
                    + f" ({row['seconds']:.0f} s)",
                    flush=True,
                )
    rows = [r for r in rows if r["size"] == size and r["snr"] in snrs and r["seed"] in seeds]
    print(table(rows))
    summary = {"size": size, "coils": COILS, "factor": FACTOR, "variants": VARIANTS, "table": table(rows)}
    summary["runs"] = [{k: v for k, v in r.items() if not k.endswith(("_curve", "_steps"))} for r in rows]
    summary["figures"] = figure(out, rows)
    common.write_summary(out, summary)
    return summary


if __name__ == "__main__":
    main()
