# %% [markdown]
# # Frequency recovery by architecture
#
# Claim: for single-coil Cartesian MRI, with `K_hat = F K F^H` the network's NTK in the Fourier basis,
# unsampled frequencies `Omega^c` change during (kernel-regime) training only through the block
# `K_hat[Omega^c, Omega]`. A kernel nearly diagonal in the Fourier basis cannot fill in missing
# k-space. Expected (paper): a Deep Decoder (1x1 convolutions + fixed upsampling) couples frequencies
# far less than a U-Net and recovers missing frequencies much worse.
#
# Experiment: the bundled shoulder image, single coil, VDRS 4x line mask, at a small size; for each
# network of the zoo: the empirical NTK at initialisation (GroupNorm), `K_hat` in the real
# representation (2 x 2 blocks per pair of k-space locations), the coupling
# `||K_hat[Omega^c, Omega]||_F / ||K_hat[Omega, Omega]||_F`, the share of `K_hat`'s energy on its block
# diagonal, and the unsampled-k-space error `||(1 - M)(F x_hat - F x)|| / ||(1 - M) F x||` of
# (a) the kernel-regime outputs started from a zero output (gradient flow at `t = 1e2 .. 1e5` in units of
# `1 / lambda_max(A K A^T)`, and the limit `x_hat = P x`: what the kernel can put into the missing
# lines) and (b) vanilla DIP (`sgdip_jax.methods.dip`, Adam) over iterations (EMA image).
# An unsampled error of 1 is what zero-filling gives; below 1, some missing k-space was recovered. The
# cosine between the filled-in and the true missing k-space tells whether what was added there points
# the right way (1), is unrelated (0) or wrong (-1), independently of its magnitude.
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

from sgdip_jax.config import NetworkConfig  # noqa: E402
from sgdip_jax.methods import DIPConfig  # noqa: E402
from sgdip_jax.ntk import KernelRegime, coupling, dense_matrix, fourier_kernel, frequency_block_norms  # noqa: E402

KERNEL_TIMES = (1e2, 1e3, 1e4, 1e5)


# %%
def dip_config(label: str, hw, iterations: int) -> DIPConfig:
    """Vanilla DIP with the zoo network ``label`` (GroupNorm, as for the kernel)."""
    name, overrides, in_channels = common.ZOO[label]
    options = dict(overrides)
    base = options.pop("base", None)
    if name in ("deep_decoder", "conv_decoder"):
        options["out_size"] = tuple(hw)
    network = NetworkConfig(name=name, base=base, norm="group", options=tuple(options.items()))
    return DIPConfig(network=network, iterations=iterations, chunk=max(1, iterations // 20), input_channels=in_channels)


def analyse(problem: common.Problem, A_dense: np.ndarray, label: str, key, iterations: int, cache=None) -> dict:
    net = common.make_network(label, problem.hw, key)
    K, t_kernel = common.timed(common.kernel, net, cache)
    K_hat = np.asarray(fourier_kernel(K, problem.hw), np.float64)
    blocks = np.asarray(frequency_block_norms(K_hat, problem.hw), np.float64)
    regime = KernelRegime(K, A_dense)
    # Kernel-regime outputs started from a zero output (x_hat(t) = P(t) x for noiseless y): gradient flow
    # with eta = 1 / lambda_max, i.e. t is about the number of gradient-descent steps of that size.
    zero = np.zeros_like(problem.x_flat)
    from_zero = regime.outputs(zero, problem.y, KERNEL_TIMES, 1.0 / regime.lambda_max)
    from_zero = np.concatenate([from_zero, regime.limit(zero, problem.y)[None]])
    kernel_unsampled = common.unsampled_error(from_zero, problem.x_flat, problem.mask)
    kernel_cosine = common.unsampled_cosine(from_zero, problem.x_flat, problem.mask)
    (result, steps, images), t_dip = common.timed(
        common.run_tracked, "dip", problem, dip_config(label, problem.hw, iterations), key
    )
    images_flat = np.stack([np.stack([im.real, im.imag], -1).ravel() for im in images])
    dip_unsampled = common.unsampled_error(images_flat, problem.x_flat, problem.mask)
    dip_cosine = common.unsampled_cosine(images_flat, problem.x_flat, problem.mask)
    return {
        "params": net.n_params,
        "coupling": coupling(K_hat, problem.mask),
        "block_diagonal_energy": float(np.sum(np.diag(blocks) ** 2) / np.sum(blocks**2)),
        "unsampled_error_kernel": {
            **{f"t={t:g}": e for t, e in zip(KERNEL_TIMES, kernel_unsampled)},
            "limit": kernel_unsampled[-1],
        },
        "unsampled_error_kernel_limit": kernel_unsampled[-1],
        "unsampled_error_kernel_t1e4": kernel_unsampled[list(KERNEL_TIMES).index(1e4)],
        "unsampled_cosine_kernel": {
            **{f"t={t:g}": c for t, c in zip(KERNEL_TIMES, kernel_cosine)},
            "limit": kernel_cosine[-1],
        },
        "unsampled_cosine_kernel_limit": kernel_cosine[-1],
        "dip_iterations": steps,
        "dip_unsampled_error": dip_unsampled,
        "dip_unsampled_error_final": dip_unsampled[-1],
        "dip_unsampled_error_min": dip_unsampled.min(),
        "dip_unsampled_cosine": dip_cosine,
        "dip_unsampled_cosine_final": dip_cosine[-1],
        "dip_psnr_max": float(np.max(result.history["psnr"])),
        "dip_psnr_final": float(result.history["psnr"][-1]),
        "seconds_kernel": t_kernel,
        "seconds_dip": t_dip,
        "_blocks": blocks,
    }


# %%
def figures(out: Path, results: dict, mask: np.ndarray) -> list[str]:
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    hw = mask.shape
    names, labels = [], list(results)
    # |K_hat| rows for two reference frequencies: a sampled low one (DC) and a sampled high one.
    sampled_cols = np.flatnonzero(mask[0] > 0)
    high = sampled_cols[np.argmax(np.abs(sampled_cols - hw[1] // 2))]
    refs = {"DC": (hw[0] // 2, hw[1] // 2), f"sampled line {high - hw[1] // 2:+d}": (hw[0] // 2 + hw[0] // 8, high)}
    fig, axes = plt.subplots(len(refs), len(labels), figsize=(1.9 * len(labels), 2.0 * len(refs)), squeeze=False)
    for j, label in enumerate(labels):
        blocks = results[label]["_blocks"]
        for i, (name, (r, c)) in enumerate(refs.items()):
            row = blocks[r * hw[1] + c].reshape(hw)
            ax = axes[i, j]
            ax.imshow(row / row.max(), norm=LogNorm(1e-4, 1), cmap="magma")
            ax.contour(mask, levels=[0.5], colors="c", linewidths=0.3)
            ax.set_title(f"{label}\n|K_hat[., {name}]|", fontsize=7)
            ax.axis("off")
    names.append(common.save_figure(fig, out / "khat_rows.png"))

    fig, axes = plt.subplots(1, len(labels), figsize=(1.9 * len(labels), 2.1), squeeze=False)
    for ax, label in zip(axes[0], labels):
        blocks = results[label]["_blocks"]
        ax.imshow(blocks / blocks.max(), norm=LogNorm(1e-4, 1), cmap="magma")
        ax.set_title(f"{label}: |K_hat|", fontsize=7)
        ax.axis("off")
    names.append(common.save_figure(fig, out / "khat_full.png"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    pos = np.arange(len(labels))
    axes[0].bar(pos, [results[k]["coupling"] for k in labels])
    axes[0].set_xticks(pos, labels, rotation=30, fontsize=7)
    axes[0].set(title="coupling |K_hat[unsampl., sampl.]| / |K_hat[sampl., sampl.]|")
    axes[1].bar(
        pos - 0.27,
        [results[k]["unsampled_error_kernel_t1e4"] for k in labels],
        0.27,
        label="kernel, t = 1e4 / lambda_max",
    )
    axes[1].bar(pos, [results[k]["unsampled_error_kernel_limit"] for k in labels], 0.27, label="kernel limit (P x)")
    axes[1].bar(pos + 0.27, [results[k]["dip_unsampled_error_final"] for k in labels], 0.27, label="DIP (last EMA)")
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="k", lw=0.5)
    axes[1].set_xticks(pos, labels, rotation=30, fontsize=7)
    axes[1].set(title="unsampled k-space error (1 = zero-filled)")
    axes[1].legend(fontsize=7)
    names.append(common.save_figure(fig, out / "coupling_and_recovery.png"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for label in labels:
        r = results[label]
        axes[0].plot(r["dip_iterations"], r["dip_unsampled_error"], label=label)
        axes[1].plot(r["dip_iterations"], r["dip_unsampled_cosine"], label=label)
    axes[0].axhline(1.0, color="k", lw=0.5)
    axes[0].set(xlabel="iteration", ylabel="unsampled k-space error", title="DIP: missing k-space error")
    axes[1].axhline(0.0, color="k", lw=0.5)
    axes[1].set(
        xlabel="iteration",
        ylabel="cosine with the true missing k-space",
        title="DIP: direction of what fills the missing k-space",
    )
    axes[0].legend(fontsize=7)
    names.append(common.save_figure(fig, out / "unsampled_error_over_iterations.png"))
    return names


# %%
def main(argv=None) -> dict:
    args = common.parser(
        "Frequency recovery of DIP networks: NTK in the Fourier basis", 32, "ntk_frequency_recovery"
    ).parse_args(argv)
    out = common.prepare_out(args.out)
    size = 16 if args.quick else args.size
    iterations = 40 if args.quick else 1500
    labels = ["deep_decoder"] if args.quick else list(common.ZOO)
    key = jax.random.PRNGKey(args.seed)
    problem = common.make_problem("single-coil", size, 1, seed=args.seed)
    A_dense = dense_matrix(problem.A)
    results = {}
    for label in labels:
        r = results[label] = analyse(problem, A_dense, label, key, iterations, args.cache)
        print(
            f"{label:13s} params {r['params']:7d} coupling {r['coupling']:.4f} "
            f"block-diag {r['block_diagonal_energy']:.3f} "
            f"unsampled error: kernel t=1e4 {r['unsampled_error_kernel_t1e4']:.3f} "
            f"limit {r['unsampled_error_kernel_limit']:.3f} DIP final {r['dip_unsampled_error_final']:.3f} "
            f"(min {r['dip_unsampled_error_min']:.3f}) cosine: kernel limit {r['unsampled_cosine_kernel_limit']:.3f} "
            f"DIP final {r['dip_unsampled_cosine_final']:.3f} PSNR {r['dip_psnr_final']:.2f}  "
            f"kernel {r['seconds_kernel']:.0f}s DIP {r['seconds_dip']:.0f}s",
            flush=True,
        )
    summary = {
        "size": size,
        "acceleration": 4.0,
        "sampled_fraction": float(problem.mask.mean()),
        "dip_iterations": iterations,
        "networks": {k: common.ZOO[k] for k in labels},
        "figures": figures(out, results, problem.mask),
        "results": {k: {n: v for n, v in r.items() if not n.startswith("_")} for k, r in results.items()},
    }
    path = common.write_summary(out, summary)
    print(f"wrote {path}")
    return summary


if __name__ == "__main__":
    main()
