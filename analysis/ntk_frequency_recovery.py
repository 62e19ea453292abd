# %% [markdown]
# # Frequency recovery by architecture
#
# Claim (paper): with `K_hat = F K F^H` the network's NTK in the Fourier basis, the unsampled
# frequencies `Omega^c` change during kernel-regime training only through the block
# `K_hat[Omega^c, Omega]`. A kernel nearly diagonal in the Fourier basis cannot fill in missing
# k-space: a Deep Decoder (1x1 convolutions and fixed upsampling) couples frequencies less than a
# U-Net and recovers missing frequencies worse.
#
# Experiment, two parts, same networks (`common.ARCHITECTURES`: U-Nets of depth 2-4 at the product's width
# 16, the DIP skip network, Deep Decoder and ConvDecoder; GroupNorm so that each is a per-sample
# function; the product's N(0, 0.02^2) weight init):
#
# (a) **Kernel coupling** at `--kernel-size` (64 px): the empirical NTK at initialisation, never
#     formed: `||K_hat[Omega^c, Omega]||_F / ||K_hat[Omega, Omega]||_F` for the VDRS 4x line mask,
#     estimated from NTK-vector products on Gaussian probes supported on `Omega`
#     (`sgdip_jax.ntk.coupling_vp`; `--probes 0`: exact, one product per sampled real index).
# (b) **Recovered missing k-space of trained DIP** at `--size` (128 px): the shoulder with 8 simulated
#     coils, VDRS 4x, 30 dB; vanilla DIP (every network) and self-guided DIP (the U-Nets, the
#     product's networks; the product defaults otherwise), `--iters` iterations, the EMA image after every
#     chunk: PSNR and the recovered share of the missing k-space energy
#     `1 - ||(1 - M) B (F x_hat - F x)|| / ||(1 - M) B F x||` (`sgdip_jax.metrics.missing_kspace_recovered`)
#     over all missing k-space and per radial band `B`. With coils the zero-filled image `A^H y`
#     already puts something into the missing lines; its share is reported beside.
#
# Then the Spearman rank correlation, across architectures, between the coupling (a) and the final
# recovered share of vanilla DIP (b).
#
# Run: `python analysis/ntk_frequency_recovery.py` (writes analysis/outputs/ntk_frequency_recovery/;
# `--help` lists options)

# %%
from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from sgdip_jax.methods import DIPConfig, SGDIPConfig  # noqa: E402
from sgdip_jax.metrics import missing_kspace_recovered, psnr  # noqa: E402
from sgdip_jax.ntk import coupling_vp, ntk_vp_fn  # noqa: E402

BAND_EDGES = (0.0, 0.125, 0.25, 0.5, 1.0)


def kernel_coupling(label: str, size: int, probes: int, key) -> tuple[float, int]:
    """``(coupling, parameter count)`` of network ``label`` at initialisation, ``size`` px, VDRS 4x."""
    mask = common.make_problem("coupling", size, 1).mask
    net = common.make_network(label, (size, size), key, common.PRODUCT_INIT, zoo=common.ARCHITECTURES)
    vp = ntk_vp_fn(net.apply, net.params, net.z)
    return coupling_vp(vp, mask, (size, size), probes=probes or None, key=key), net.n_params


def trained_recovery(problem: common.Problem, label: str, method: str, iterations: int, key) -> dict:
    """PSNR and recovered missing k-space (overall, per band) of ``method`` over iterations."""
    _, _, in_channels = common.ARCHITECTURES[label]
    chunk = max(1, iterations // 20)
    if method == "dip":
        config = DIPConfig(
            network=common.network_config(label), iterations=iterations, chunk=chunk, input_channels=in_channels
        )
    else:
        config = SGDIPConfig(network=common.network_config(label), iterations=iterations, chunk=chunk)
    (_, steps, images, _), seconds = common.timed(common.run_tracked, method, problem, config, key)
    bands = common.radial_bands(problem.hw, BAND_EDGES)
    overall = np.asarray(missing_kspace_recovered(images, problem.x, problem.mask), np.float64)
    per_band = np.stack([missing_kspace_recovered(images, problem.x, problem.mask, b) for b in bands], -1)
    return {
        "iterations": steps,
        "psnr": np.asarray([psnr(im, ref=problem.x) for im in images], np.float64),
        "recovered": overall,
        "recovered_bands": np.asarray(per_band, np.float64),
        "seconds": seconds,
    }


def spearman(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(a) > 2 else float("nan")


# %%
def figures(out: Path, couplings: dict, runs: dict, zero_filled: dict, rho: float) -> list[str]:
    import matplotlib.pyplot as plt

    names, labels = [], list(couplings)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for label in labels:
        for method, style in (("dip", "-"), ("sgdip", "--")):
            if (label, method) in runs:
                r = runs[label, method]
                axes[0].plot(r["iterations"], r["recovered"], style, label=f"{label} ({method})")
                axes[1].plot(r["iterations"], r["psnr"], style, label=f"{label} ({method})")
    axes[0].axhline(zero_filled["recovered"], color="k", lw=0.6, ls=":", label="zero-filled")
    axes[1].axhline(zero_filled["psnr"], color="k", lw=0.6, ls=":", label="zero-filled")
    axes[0].set(xlabel="iteration", ylabel="recovered share of missing k-space", title="recovered missing k-space")
    axes[1].set(xlabel="iteration", ylabel="PSNR (dB)", title="PSNR of the EMA image")
    axes[0].legend(fontsize=6)
    names.append(common.save_figure(fig, out / "recovery_over_iterations.png"))

    fig, ax = plt.subplots(figsize=(5, 3.6))
    x = [couplings[k] for k in labels]
    yv = [runs[k, "dip"]["recovered"][-1] for k in labels]
    ax.scatter(x, yv)
    for k, a, b in zip(labels, x, yv):
        ax.annotate(k, (a, b), fontsize=7)
    ax.set(
        xlabel="kernel coupling at initialisation",
        ylabel="recovered share, vanilla DIP (final)",
        title=f"coupling vs recovery (Spearman {rho:+.2f})",
    )
    names.append(common.save_figure(fig, out / "coupling_and_recovery.png"))

    fig, ax = plt.subplots(figsize=(8, 3.4))
    pos = np.arange(len(BAND_EDGES) - 1)
    keys = [k for k in runs]
    width = 0.8 / (len(keys) + 1)
    for i, key in enumerate(keys):
        ax.bar(pos + i * width, runs[key]["recovered_bands"][-1], width, label=f"{key[0]} ({key[1]})")
    ax.bar(pos + len(keys) * width, zero_filled["recovered_bands"], width, color="k", label="zero-filled")
    ax.set_xticks(pos + 0.4, [f"{lo:g}-{hi:g}" for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:])])
    ax.set(
        xlabel="radial band |k| / k_max", ylabel="recovered share (final)", title="recovered missing k-space per band"
    )
    ax.axhline(0.0, color="k", lw=0.5)
    ax.legend(fontsize=6, ncol=2)
    names.append(common.save_figure(fig, out / "recovered_per_band.png"))
    return names


# %%
def main(argv=None) -> dict:
    p = common.parser(
        "Frequency recovery of DIP networks: kernel coupling and recovered k-space", 128, "ntk_frequency_recovery"
    )
    p.add_argument("--kernel-size", type=int, default=64, help="image size of the kernel coupling (default 64)")
    p.add_argument("--probes", type=int, default=256, help="Gaussian probes of the coupling estimate (0: exact)")
    p.add_argument("--iters", type=int, default=500, help="DIP iterations (default 500, the product budget)")
    p.add_argument("--snr", type=float, default=30.0, help="SNR of the trained problem in dB (default 30)")
    args = p.parse_args(argv)
    out = common.prepare_out(args.out)
    size, kernel_size, probes, iterations = (
        (32, 16, 16, 20) if args.quick else (args.size, args.kernel_size, args.probes, args.iters)
    )
    labels = ["unet2", "deep_decoder"] if args.quick else list(common.ARCHITECTURES)
    key = jax.random.PRNGKey(args.seed)
    problem = common.make_problem("multi-coil", size, 8, snr_db=args.snr, seed=args.seed)
    zf = np.asarray(problem.operator.adjoint(problem.y_kspace))
    bands = common.radial_bands(problem.hw, BAND_EDGES)
    zero_filled = {
        "psnr": float(psnr(zf, ref=problem.x)),
        "recovered": float(missing_kspace_recovered(zf, problem.x, problem.mask)),
        "recovered_bands": [float(missing_kspace_recovered(zf, problem.x, problem.mask, b)) for b in bands],
    }
    print(f"zero-filled: PSNR {zero_filled['psnr']:.2f} recovered {zero_filled['recovered']:.3f}", flush=True)
    couplings, params, runs = {}, {}, {}
    for label in labels:
        (couplings[label], params[label]), seconds = common.timed(kernel_coupling, label, kernel_size, probes, key)
        print(f"{label:13s} params {params[label]:7d} coupling {couplings[label]:.4f} ({seconds:.0f} s)", flush=True)
        methods = ["dip", "sgdip"] if label.startswith("unet") else ["dip"]
        for method in methods:
            r = runs[label, method] = trained_recovery(problem, label, method, iterations, key)
            print(
                f"{label:13s} {method:5s} PSNR final {r['psnr'][-1]:.2f} (max {r['psnr'].max():.2f}) "
                f"recovered final {r['recovered'][-1]:.3f} bands "
                + " ".join(f"{v:.3f}" for v in r["recovered_bands"][-1])
                + f" ({r['seconds']:.0f} s)",
                flush=True,
            )
    rho = spearman([couplings[k] for k in labels], [runs[k, "dip"]["recovered"][-1] for k in labels])
    print(f"Spearman rank correlation (coupling, recovered share of vanilla DIP): {rho:+.3f}")
    summary = {
        "size": size,
        "kernel_size": kernel_size,
        "probes": probes,
        "coils": 8,
        "acceleration": 4.0,
        "snr_db": args.snr,
        "iterations": iterations,
        "band_edges": BAND_EDGES,
        "networks": {k: common.ARCHITECTURES[k] for k in labels},
        "zero_filled": zero_filled,
        "spearman_coupling_recovered": rho,
        "figures": figures(out, couplings, runs, zero_filled, rho),
        "results": {
            label: {
                "params": params[label],
                "coupling": couplings[label],
                **{method: runs[label, method] for method in ("dip", "sgdip") if (label, method) in runs},
            }
            for label in labels
        },
    }
    path = common.write_summary(out, summary)
    print(f"wrote {path}")
    return summary


if __name__ == "__main__":
    main()
