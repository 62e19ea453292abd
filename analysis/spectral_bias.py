# %% [markdown]
# # Spectral bias, overfitting, and NTK spectra from kernel-vector products
#
# Claims: (1) in the kernel regime the residual decays along the eigenvectors of `A K A^T` at rates
# set by their eigenvalues, and the large-eigenvalue directions are low spatial frequencies (spectral
# bias), so low-frequency k-space is fitted first; (2) with noisy `y`, vanilla DIP eventually fits the
# noise (PSNR peaks and then falls), while self-guided DIP is meant to plateau; (3) top eigenpairs of
# `K` and `A K A^T` can be computed from NTK-vector products (Lanczos) without forming `K`, so
# 128 x 128 outputs are feasible.
#
# Experiment: the bundled shoulder image at `--size` (128 px), 8 simulated coils, VDRS 4x, at each
# SNR of `--snr` (default 20 dB, where vanilla DIP overfits; `--snr 30` the other case).
# (1) Lanczos top-k of `K` and `A K A^T` from `ntk_vp_fn` for the product's network (depth-4
# U-Net, width 16, GroupNorm so that it is a per-sample function) and the energy-weighted mean
# k-space radius of each eigenvector; at sizes <= 64 also the dense eigen-decomposition (checking
# Lanczos), the radius by eigenvalue decile, and the kernel-regime
# gradient-descent prediction of the error per radial k-space band. (2) `sgdip_jax.methods` vanilla
# DIP and self-guided DIP with the library defaults on the demo's network (the same U-Net with the
# library's BatchNorm) to `--iters` = 3x the product
# budget: PSNR of the EMA image per iteration, at the budget and at the end, and the error per band.
#
# Run: `python analysis/spectral_bias.py` (writes analysis/outputs/spectral_bias/; `--help` lists options)

# %%
from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from sgdip_jax.config import NetworkConfig  # noqa: E402
from sgdip_jax.methods import DIPConfig, SGDIPConfig  # noqa: E402
from sgdip_jax.ntk import KernelRegime, dense_matrix, lanczos_eigh, ntk_vp_fn, sandwich  # noqa: E402
from sgdip_jax.operators import measured_entries  # noqa: E402

DENSE_MAX_SIZE = 64
COILS = 8
BUDGET = 500  # the product's default iteration count
# the product's network (depth-4 U-Net, width 16) for the kernel; quick: a depth-1 U-Net of width 8
NETWORKS = {"unet4-16": ("unet4", {"base": 16}, 2), "unet1": common.ZOO["unet1"]}
DIP_NETWORK = NetworkConfig(name="unet4", base=16)  # the demo's network (the library default is base 64)
BAND_EDGES = (0.0, 0.125, 0.25, 0.5, 1.0)


# %%
def location_energy(vectors: np.ndarray, keep: np.ndarray, shape: tuple) -> np.ndarray:
    """Energy per k-space location ``(k, H, W)`` of measurement-space vectors ``(k, m)`` ([Re; Im] of
    the measured entries ``keep`` of a ``(C, H, W)`` array), summed over coils."""
    half = vectors.shape[1] // 2
    energy = np.zeros((vectors.shape[0], int(np.prod(shape))))
    energy[:, keep] = vectors[:, :half] ** 2 + vectors[:, half:] ** 2
    return energy.reshape((vectors.shape[0],) + tuple(shape)).sum(axis=1)


def mean_radius(energy: np.ndarray) -> np.ndarray:
    """Energy-weighted mean normalised k-space radius of ``(k, H, W)`` energies."""
    h, w = energy.shape[-2:]
    ky, kx = np.meshgrid((np.arange(h) - h // 2) / (h / 2), (np.arange(w) - w // 2) / (w / 2), indexing="ij")
    r = np.sqrt(kx**2 + ky**2)
    return np.sum(energy * r, axis=(-2, -1)) / np.sum(energy, axis=(-2, -1))


def band_errors(images: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Relative k-space error per radial band: ``(T, bands)`` for complex images ``(T, H, W)``."""
    from sgdip_jax.operators import fft2c

    diff = np.asarray(fft2c(jnp.asarray(images, jnp.complex64))) - np.asarray(fft2c(jnp.asarray(x, jnp.complex64)))
    ref = np.asarray(fft2c(jnp.asarray(x, jnp.complex64)))
    bands = common.radial_bands(x.shape, BAND_EDGES)
    return np.stack([np.linalg.norm(diff[:, b], axis=-1) / np.linalg.norm(ref[b]) for b in bands], axis=1)


def measured_band_errors(images: np.ndarray, problem: common.Problem) -> np.ndarray:
    """Relative error of ``A f`` against the noiseless ``A x`` on the *measured* entries only, per
    radial band: ``(T, bands)``. Unlike :func:`band_errors` it does not mix fitting with the mask (the
    centre is fully sampled, the outer bands mostly not)."""
    forward = jax.jit(problem.operator.__call__)
    clean = np.asarray(forward(jnp.asarray(problem.x, jnp.complex64)))
    measured = measured_entries(problem.operator, clean.shape).reshape(clean.shape)
    selections = [measured & band for band in common.radial_bands(problem.hw, BAND_EDGES)]
    errors = np.empty((len(images), len(selections)))
    for t, image in enumerate(images):
        diff = np.asarray(forward(jnp.asarray(image, jnp.complex64))) - clean
        errors[t] = [np.linalg.norm(diff[sel]) / np.linalg.norm(clean[sel]) for sel in selections]
    return errors


def halfway_iterations(steps: np.ndarray, errors: np.ndarray) -> list[int]:
    """Per band, the first iteration whose error is halfway (or further) from the first recorded value
    to the run's smallest: which bands the fit reaches first."""
    target = 0.5 * (errors[0] + errors.min(axis=0))
    return [int(steps[np.argmax(errors[:, b] <= target[b])]) for b in range(errors.shape[1])]


# %%
def spectra(problem: common.Problem, net: common.DipNet, k: int, num_iter: int, dense: bool, cache=None) -> dict:
    """Lanczos top-k of ``K`` and ``A K A^T`` from NTK-vector products (and dense references)."""
    vp = ntk_vp_fn(net.apply, net.params, net.z)
    n, m = 2 * problem.hw[0] * problem.hw[1], problem.A.shape[0]
    out = {
        "n": n,
        "m": m,
        "k": k,
        "num_iter": num_iter,
        "lanczos_basis_bytes": 4 * (num_iter + 1) * n,
        "dense_kernel_bytes": 4 * n * n,
    }
    vectors = {}
    for name, matvec, dim in (("K", vp, n), ("AKAt", sandwich(vp, problem.A), m)):
        t0 = time.perf_counter()
        w, vectors[name] = lanczos_eigh(matvec, dim, k, num_iter=num_iter)
        w = np.asarray(jax.block_until_ready(w), np.float64)
        seconds = time.perf_counter() - t0
        # Ritz residuals ||M v - w v|| / w: small without any dense reference.
        residual = [float(jnp.linalg.norm(matvec(v) - wi * v) / wi) for v, wi in zip(vectors[name].T, w)]
        out[name] = {"lanczos_eigvals": w, "lanczos_seconds": seconds, "lanczos_ritz_residual": residual}
    keep = np.flatnonzero(measured_entries(problem.operator, problem.y_kspace.shape))
    top = {name: np.asarray(v, np.float64).T for name, v in vectors.items()}
    out["AKAt"]["lanczos_mean_radius"] = mean_radius(location_energy(top["AKAt"], keep, problem.y_kspace.shape))
    out["K"]["lanczos_mean_radius"] = mean_radius(np.abs(common.kspace(top["K"], problem.hw)) ** 2)
    if dense:
        K, t_kernel = common.timed(common.kernel, net, cache)
        A = dense_matrix(problem.A)
        out["seconds_dense_kernel"] = t_kernel
        for name, M in (("K", K), ("AKAt", A @ K @ A.T)):
            lam, vec = np.linalg.eigh(M)
            lam, vec = lam[::-1], vec[:, ::-1]
            out[name].update(
                {
                    "dense_eigvals": lam,
                    "lanczos_rel_error": np.abs(out[name]["lanczos_eigvals"] - lam[:k]) / lam[:k],
                    "lanczos_vector_overlap": np.abs(np.sum(np.asarray(vectors[name]) * vec[:, :k], axis=0)),
                    "_dense_vectors": vec,
                }
            )
        out["_K"], out["_A"] = K, A
    return out


# %%
def dip_runs(problem: common.Problem, key, iterations: int, budget: int, network: NetworkConfig, methods) -> dict:
    """Vanilla DIP (``"dip"``) and self-guided DIP (``"sgdip"``) of ``methods`` with the library
    defaults on ``network``."""
    chunk = max(1, iterations // 60)
    configs = {
        "dip": DIPConfig(network=network, iterations=iterations, chunk=chunk),
        "sgdip": SGDIPConfig(network=network, iterations=iterations, chunk=chunk),
    }
    runs = {}
    for method in methods:
        config = configs[method]
        (result, steps, images, _), seconds = common.timed(common.run_tracked, method, problem, config, key)
        curve = np.asarray(result.history["psnr"])
        measured = measured_band_errors(images, problem)
        runs[method] = {
            "network": f"{config.network.name}/{config.network.base}",
            "iterations": steps,
            "psnr_history": curve,
            "psnr_at_budget": curve[min(budget, curve.size) - 1],
            "psnr_final": curve[-1],
            "psnr_max": curve.max(),
            "psnr_argmax_iteration": int(curve.argmax()) + 1,  # history[i]: after i + 1 iterations
            "psnr_drop_after_peak": curve.max() - curve[-1],
            "band_errors": band_errors(images, problem.x),
            "measured_band_errors": measured,
            "measured_halfway_iteration": halfway_iterations(steps, measured),
            "seconds": seconds,
        }
    return runs


# %%
def figures(out: Path, spec: dict, radii: dict, predicted: dict, runs: dict) -> list[str]:
    """``predicted`` / ``runs``: per SNR (dB), the kernel-regime prediction (or ``None``) and the DIP runs."""
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, name in zip(axes, ("K", "AKAt")):
        s = spec[name]
        if "dense_eigvals" in s:
            lam = s["dense_eigvals"]
            ax.semilogy(np.arange(1, lam.size + 1), np.clip(lam / lam[0], 1e-12, None), lw=1, label="dense eigh")
            ref = lam[0]
        else:
            ref = s["lanczos_eigvals"][0]
        ax.semilogy(
            np.arange(1, spec["k"] + 1), s["lanczos_eigvals"] / ref, "o", ms=3, label=f"Lanczos top-{spec['k']}"
        )
        ax.set(title=f"eigenvalues of {'K' if name == 'K' else 'A K A^T'} (normalised)", xlabel="index", ylim=(1e-8, 2))
        ax.set_xscale("log")
        ax.legend(fontsize=7)
    names.append(common.save_figure(fig, out / "eigenvalues.png"))

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for name, r in radii.items():
        ax.plot(np.arange(1, r.size + 1), r, lw=0.6, label=f"{name} (dense)")
    for name in ("K", "AKAt"):
        r = spec[name]["lanczos_mean_radius"]
        ax.plot(
            np.arange(1, r.size + 1), r, "o", ms=3, label=f"{'K' if name == 'K' else 'A K A^T'} (Lanczos top-{r.size})"
        )
    ax.set(xscale="log", xlabel="eigenvector index (descending eigenvalue)", ylabel="mean |k| / k_max")
    ax.set_title("frequency content of eigenvectors")
    ax.legend(fontsize=7)
    names.append(common.save_figure(fig, out / "eigenvector_frequency.png"))

    labels = [f"|k| in [{lo}, {hi})" for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:])]
    for snr, by_method in runs.items():
        pred = predicted.get(snr)
        panels = [("kernel regime (GD prediction)", pred["iterations"], pred["band_errors"])] if pred else []
        panels += [(f"{m} (EMA)", r["iterations"], r["band_errors"]) for m, r in by_method.items()]
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.2 * (len(panels) + 1), 3.4))
        for ax, (title, steps, err) in zip(axes, panels):
            for b in range(err.shape[1]):
                ax.plot(steps, err[:, b], label=labels[b])
            ax.set(title=title, xlabel="iteration", ylabel="relative k-space error per band", yscale="log")
            if title.startswith("kernel"):
                ax.set_xscale("log")
            ax.legend(fontsize=6)
        ax = axes[-1]
        for m, r in by_method.items():
            ax.plot(np.arange(1, r["psnr_history"].size + 1), r["psnr_history"], label=m)
        if pred:
            ax.plot(pred["iterations"], pred["psnr"], "k--", lw=0.8, label="kernel regime (GD)")
        ax.set(xlabel="iteration", ylabel="PSNR (dB)", title=f"PSNR vs iteration ({snr:g} dB SNR)", xscale="log")
        ax.legend(fontsize=7)
        names.append(common.save_figure(fig, out / f"bands_and_psnr_{snr:g}dB.png"))
    return names


def measured_figures(out: Path, runs: dict, controls: dict) -> list[str]:
    """Per SNR: the band errors on measured entries of each DIP run, beside the ``A = I`` control."""
    import matplotlib.pyplot as plt

    labels = [f"|k| in [{lo}, {hi})" for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:])]
    names = []
    for snr in runs:
        panels = [(f"{m}, 4x (measured entries)", r) for m, r in runs[snr].items()]
        panels += [(f"{m}, A = I control", r) for m, r in controls[snr].items()]
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
        for ax, (title, r) in zip(axes[0], panels):
            for b, label in enumerate(labels):
                line = ax.plot(r["iterations"], r["measured_band_errors"][:, b], label=label)[0]
                ax.axvline(r["measured_halfway_iteration"][b], color=line.get_color(), ls=":", lw=0.8)
            ax.set(title=title, xlabel="iteration", ylabel="relative error per band", xscale="log", yscale="log")
            ax.legend(fontsize=6)
        fig.suptitle(f"{snr:g} dB: error on measured k-space per band (dotted: halfway to the minimum)")
        names.append(common.save_figure(fig, out / f"measured_bands_{snr:g}dB.png"))
    return names


# %%
def kernel_analysis(problem: common.Problem, net: common.DipNet, spec: dict) -> tuple[dict, dict, dict]:
    """Eigenvector frequency content and the kernel-regime band errors (needs the dense kernel)."""
    keep = np.flatnonzero(measured_entries(problem.operator, problem.y_kspace.shape))
    radii = {
        "A K A^T": mean_radius(location_energy(spec["AKAt"]["_dense_vectors"].T, keep, problem.y_kspace.shape)),
        "K": mean_radius(np.abs(common.kspace(spec["K"]["_dense_vectors"].T, problem.hw)) ** 2),
    }
    f0 = np.asarray(jax.jit(net.flat)(net.params), np.float64)
    x_s, y_s = common.rescaled(problem, f0)
    regime = KernelRegime(spec["_K"], spec["_A"])
    eta = 0.5 / regime.lambda_max
    steps = np.unique(np.concatenate([[0], np.geomspace(1, 1e6, 40).astype(int)]))
    outs = regime.outputs(f0, y_s, steps, eta, discrete=True)
    scale = np.linalg.norm(x_s) / np.linalg.norm(problem.x_flat)
    images = (outs[:, 0::2] + 1j * outs[:, 1::2]).reshape(-1, *problem.hw) / scale
    errors = band_errors(images, problem.x)
    predicted = {"iterations": steps, "band_errors": errors, "psnr": common.psnr(images, ref=problem.x)}
    halved = errors <= 0.5 * errors[:1]
    summary = {f"mean_radius_by_decile_{name}": [d.mean() for d in np.array_split(r, 10)] for name, r in radii.items()}
    summary["kernel_regime"] = {
        "eta": eta,
        "psnr_max": predicted["psnr"].max(),
        "psnr_argmax_iteration": int(steps[predicted["psnr"].argmax()]),
        "psnr_at_1e6": predicted["psnr"][-1],
        "iterations_to_halve_band_error": {
            f"[{lo},{hi})": int(steps[np.argmax(halved[:, b])]) if halved[:, b].any() else None
            for b, (lo, hi) in enumerate(zip(BAND_EDGES[:-1], BAND_EDGES[1:]))
        },
    }
    return radii, predicted, summary


# %%
def main(argv=None) -> dict:
    p = common.parser(
        "Spectral bias of DIP: NTK spectra, band errors, DIP vs self-guided DIP",
        size=128,
        name="spectral_bias",
        cache=True,
    )
    p.add_argument(
        "--snr",
        type=float,
        nargs="+",
        default=[20.0],
        help="SNRs in dB (default 20; each adds a vanilla and a self-guided DIP run)",
    )
    p.add_argument(
        "--iters", type=int, default=3 * BUDGET, help=f"DIP iterations (default {3 * BUDGET}, 3x the budget)"
    )
    p.add_argument("--no-dip", action="store_true", help="spectra only, no DIP / self-guided DIP runs")
    p.add_argument(
        "--methods", nargs="+", choices=("dip", "sgdip"), default=["dip", "sgdip"], help="the DIP runs (default both)"
    )
    args = p.parse_args(argv)
    out = common.prepare_out(args.out)
    size = 16 if args.quick else args.size
    iterations = 20 if args.quick else args.iters
    budget = min(BUDGET, iterations)
    k, num_iter = (3, 24) if args.quick else (10, 40)
    key = jax.random.PRNGKey(args.seed)
    label = "unet1" if args.quick else "unet4-16"
    problems = {
        snr: common.make_problem(f"multi-coil ({COILS} coils), {snr:g} dB", size, COILS, snr_db=snr, seed=args.seed)
        for snr in (args.snr[:1] if args.quick else args.snr)
    }
    first = problems[args.snr[0]]
    net = common.make_network(label, first.hw, key, zoo=NETWORKS)
    spec = spectra(first, net, k, num_iter, size <= DENSE_MAX_SIZE, args.cache)
    print(
        f"Lanczos top-{k}: K {spec['K']['lanczos_seconds']:.1f}s, A K A^T {spec['AKAt']['lanczos_seconds']:.1f}s; "
        f"basis {spec['lanczos_basis_bytes'] / 2**20:.1f} MiB vs dense K "
        f"{spec['dense_kernel_bytes'] / 2**20:.1f} MiB; mean |k|/k_max of the top eigenvectors of A K A^T "
        f"{np.round(spec['AKAt']['lanczos_mean_radius'], 3)}",
        flush=True,
    )
    network = NetworkConfig(name="unet1", base=8) if args.quick else DIP_NETWORK
    radii, predicted, eigen_summary, runs, controls, per_snr = {}, {}, {}, {}, {}, {}
    for snr, problem in problems.items():
        predicted[snr] = None
        if "_K" in spec:
            radii, predicted[snr], eigen_summary[snr] = kernel_analysis(problem, net, spec)
        control = common.denoising_problem(f"A = I (1 coil, full sampling), {snr:g} dB", size, snr, seed=args.seed)
        runs[snr] = {} if args.no_dip else dip_runs(problem, key, iterations, budget, network, args.methods)
        controls[snr] = {} if args.no_dip else dip_runs(control, key, iterations, budget, network, args.methods)
        per_snr[snr] = {"kernel": eigen_summary.get(snr, {})}
        for part, prob, by_method in (("dip", problem, runs[snr]), ("control", control, controls[snr])):
            zero_filled = np.asarray(prob.operator.adjoint(jnp.asarray(prob.y_kspace)))
            psnr_zf = float(common.psnr(zero_filled[None], ref=prob.x)[0])
            print(f"{snr:g} dB {prob.label}: zero-filled PSNR {psnr_zf:.2f}", flush=True)
            for method, r in by_method.items():
                print(
                    f"{snr:g} dB {part:7s} {method:6s} PSNR @{budget} {r['psnr_at_budget']:.2f} @{iterations} "
                    f"{r['psnr_final']:.2f} max {r['psnr_max']:.2f} at {r['psnr_argmax_iteration']} "
                    f"(drop {r['psnr_drop_after_peak']:.2f} dB) band errors final {np.round(r['band_errors'][-1], 3)}, "
                    f"measured entries: halfway at {r['measured_halfway_iteration']} {r['seconds']:.0f}s",
                    flush=True,
                )
            per_snr[snr][f"{part}_zero_filled_psnr"] = psnr_zf
            per_snr[snr][part] = {
                m: {k2: v for k2, v in r.items() if k2 not in ("psnr_history", "iterations") and "errors" not in k2}
                | {
                    f"{name}_{at}": fn(r[name])
                    for name in ("band_errors", "measured_band_errors")
                    for at, fn in (("final", lambda e: e[-1]), ("min", lambda e: e.min(axis=0)))
                }
                | {"psnr_every_10": r["psnr_history"][9::10]}
                for m, r in by_method.items()
            }
    summary = {
        "size": size,
        "coils": COILS,
        "acceleration": 4.0,
        "budget": budget,
        "iterations": iterations,
        "kernel_network": {"label": label, "zoo": NETWORKS[label], "norm": "group", "params": net.n_params},
        "band_edges": BAND_EDGES,
        "spectra": {
            name: {k2: v for k2, v in spec[name].items() if not k2.startswith("_") and k2 != "dense_eigvals"}
            for name in ("K", "AKAt")
        },
        "memory": {k2: spec[k2] for k2 in ("n", "m", "k", "num_iter", "lanczos_basis_bytes", "dense_kernel_bytes")},
        "snr": {f"{snr:g}": v for snr, v in per_snr.items()},
        "figures": figures(out, spec, radii, predicted, runs) + measured_figures(out, runs, controls),
    }
    path = common.write_summary(out, summary)
    print(f"wrote {path}")
    return summary


if __name__ == "__main__":
    main()
