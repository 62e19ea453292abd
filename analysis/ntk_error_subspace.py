# %% [markdown]
# # Error subspace of DIP in the kernel regime
#
# Claim (kernel regime, noiseless `y = A x*`): training `1/2 ||A f(theta) - y||^2` with a constant
# kernel `K = J J^T` converges to `f(inf) - x* = (I - P)(f(0) - x*)`, `P = K A^T (A K A^T)^+ A`, so the
# limiting error lies in the null space of `A` and what the network adds there is confined to
# `range(K A^T)`. The closer the network is to its linearisation (wide, small steps), the better
# the kernel prediction describes actual gradient-descent training.
#
# Experiment at `--size` (64 px: `n = 8192` real outputs), nothing of size `n x n` or `n x P` formed
# except the operator's null space: the bundled shoulder image, noiseless, VDRS 4x, single-coil
# (`null(A)` is the unsampled k-space, 3/4 of the image space) and 8 simulated coils (the product's
# case: twice as many measurements as unknowns, so the exact null space is (nearly) empty and what
# matters is the *effective* null space, the right-singular directions of `A` with singular value
# below `1e-3 ||A||`). Networks: the product's depth-4 U-Net (`common.ARCHITECTURES`, the product's
# weight init) at base widths 2-16, and Deep Decoder. For each network and problem:
#
# * the predicted trajectory: plain gradient descent on the network's linearisation at
#   initialisation (`sgdip_jax.ntk.gradient_descent(linearized=True)`; its iterates are exactly the
#   discrete kernel-regime trajectory), step `eta = 0.5 / lambda_max(A K A^T)` (Lanczos on NTK-vector
#   products);
# * the kernel limit `f(inf)` by `CG_ITERS` conjugate-residual steps on `A K A^T`
#   (`sgdip_jax.ntk.kernel_limit`; its relative data residual is reported, so an unconverged limit
#   shows: network kernels are badly conditioned, so the limit is seldom reached);
# * the actual network trained by plain gradient descent with the same step.
#
# Reported: first, whether DIP reconstructs here at all: PSNR of vanilla DIP as the product trains it
# (Adam, the widest U-Net of the sweep, the same iteration count) against the zero-filled image; then
# PSNR of the GD-trained and linearised networks and of the kernel limit, the relative gap
# `||f_nn(t) - f_lin(t)|| / ||f_lin(t) - f(0)||` over iterations, the fraction of the error energy in
# the exact and the effective null space over iterations (trained, predicted) and for the kernel
# limit, and the final gap against the parameter count with a fitted power law
# `gap ~ c P^b` per problem.
#
# With noise (`--snr`: 8 coils, VDRS 4x, noisy k-space instead of the noiseless problems), `y = A x* + e`
# and the limit is `f(inf) - x* = (I - P)(f(0) - x*) + K A^T (A K A^T)^+ e`: the fitted noise adds an
# error in `range(K A^T)`, so the share in null(A) drops below 1 by the part of the error that is noise.
#
# Run: `python analysis/ntk_error_subspace.py` (writes analysis/outputs/ntk_error_subspace/; `--help`
# lists options)

# %%
from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from sgdip_jax.methods import DIPConfig  # noqa: E402
from sgdip_jax.ntk import NullSpace, gradient_descent, kernel_limit, lanczos_eigh, ntk_vp_fn, sandwich  # noqa: E402

ETA_SCALE = 0.5
NULL_TOL = 1e-3  # effective null space: singular values below NULL_TOL * s_max
CG_ITERS = 150
WIDTH_NET = "unet4"  # the width sweep varies this network's base width
WIDTHS = (2, 4, 8, 16)
# (coils, acceleration, SNR in dB or None for noiseless) per problem
PROBLEMS = {"single-coil 4x": (1, 4.0, None), "8 coils 4x": (8, 4.0, None)}


NOISY = "8 coils 4x"  # the problem --snr makes noisy (the single-coil problem is noiseless only)


def noisy_problems(snrs) -> dict:
    """``--snr``: the :data:`NOISY` problem at each SNR."""
    coils, acceleration, _ = PROBLEMS[NOISY]
    return {f"{NOISY}, {snr:g} dB": (coils, acceleration, snr) for snr in snrs}


# %%
def networks(hw, key, widths) -> dict[str, common.DipNet]:
    """The width sweep of :data:`WIDTH_NET` and Deep Decoder, by display name."""
    nets = {
        f"{WIDTH_NET} base {b}": common.make_network(
            WIDTH_NET, hw, key, {**common.PRODUCT_INIT, "base": b}, zoo=common.ARCHITECTURES
        )
        for b in widths
    }
    nets["deep_decoder"] = common.make_network("deep_decoder", hw, key, common.PRODUCT_INIT, zoo=common.ARCHITECTURES)
    return nets


def analyse(problem: common.Problem, null: NullSpace, effective: NullSpace, net: common.DipNet, iterations: int):
    """Kernel prediction vs gradient-descent training of one network on one problem."""
    f0 = np.asarray(jax.jit(net.flat)(net.params), np.float64)
    x_s, y_s = common.rescaled(problem, f0)
    vp = ntk_vp_fn(net.apply, net.params, net.z)
    m = problem.A.shape[0]
    (lam, _), t_lanczos = common.timed(lanczos_eigh, sandwich(vp, problem.A), m, k=1, num_iter=20)
    eta = ETA_SCALE / float(lam[0])
    record = np.unique(np.concatenate([[0], np.geomspace(1, iterations, 12).astype(int)]))
    trained, t_train = common.timed(gradient_descent, net.flat, net.params, problem.A, y_s, eta, record)
    predicted, t_lin = common.timed(
        gradient_descent, net.flat, net.params, problem.A, y_s, eta, record, linearized=True
    )
    (limit, limit_residual), t_cg = common.timed(kernel_limit, vp, problem.A, f0, y_s, maxiter=CG_ITERS)
    moved = np.linalg.norm(predicted - f0, axis=1)
    gap = np.linalg.norm(trained - predicted, axis=1) / np.where(moved > 0, moved, np.inf)

    def residual(f):
        r = np.asarray(problem.A.matvec(jnp.asarray(f, jnp.float32)), np.float64) - y_s
        return np.linalg.norm(r) / np.linalg.norm(y_s)

    x_image = common.images(x_s, problem.hw)
    return {
        "params": net.n_params,
        "eta": eta,
        "lambda_max": float(lam[0]),
        "iterations": record,
        "gap": gap,
        "final_gap": gap[-1],
        "psnr_trained": common.psnr(common.images(trained, problem.hw), ref=x_image),
        "psnr_predicted": common.psnr(common.images(predicted, problem.hw), ref=x_image),
        "psnr_kernel_limit": float(common.psnr(common.images(limit, problem.hw)[None], ref=x_image)[0]),
        "data_residual_trained": [residual(f) for f in trained],
        "data_residual_predicted": [residual(f) for f in predicted],
        "data_residual_kernel_limit": limit_residual,
        "null_fraction_trained": null.fraction(trained - x_s),
        "null_fraction_predicted": null.fraction(predicted - x_s),
        "null_fraction_kernel_limit": null.fraction(limit - x_s),
        "effective_null_fraction_trained": effective.fraction(trained - x_s),
        "effective_null_fraction_predicted": effective.fraction(predicted - x_s),
        "effective_null_fraction_kernel_limit": effective.fraction(limit - x_s),
        "seconds": {"lanczos": t_lanczos, "trained": t_train, "linearized": t_lin, "kernel_limit": t_cg},
        "_images": {"x": x_s, "limit": limit, "trained": trained[-1], "predicted": predicted[-1]},
    }


def product_dip(problem: common.Problem, base: int, iterations: int, key) -> dict:
    """Vanilla DIP as the product runs it (Adam, :class:`~sgdip_jax.methods.DIPConfig` defaults) with the
    sweep's U-Net of width ``base``: PSNR of the moving-average image after every tenth of the run."""
    _, _, in_channels = common.ARCHITECTURES[WIDTH_NET]
    network = common.network_config(WIDTH_NET, {"base": base})
    chunk = max(1, iterations // 10)
    config = DIPConfig(network=network, iterations=iterations, chunk=chunk, input_channels=in_channels)
    (_, steps, images, _), seconds = common.timed(common.run_tracked, "dip", problem, config, key)
    return {"base": base, "iterations": steps, "psnr": common.psnr(images, ref=problem.x), "seconds": seconds}


def width_fit(per_net: dict) -> dict:
    """Least-squares power law ``final gap = c P^b`` over the width sweep (``P``: parameter count)."""
    sweep = [r for name, r in per_net.items() if name.startswith(f"{WIDTH_NET} base")]
    params = np.array([r["params"] for r in sweep], np.float64)
    gaps = np.array([r["final_gap"] for r in sweep], np.float64)
    if len(sweep) < 2:
        return {"params": params, "final_gap": gaps, "exponent": None, "log_c": None}
    b, log_c = np.polyfit(np.log(params), np.log(gaps), 1)
    return {"params": params, "final_gap": gaps, "exponent": b, "log_c": log_c}


# %%
def figures(out: Path, results: dict, fits: dict, zero_filled: dict, product: dict, hw) -> list[str]:
    import matplotlib.pyplot as plt

    names = []
    cols = len(results)
    fig, axes = plt.subplots(2, cols, figsize=(5 * cols, 7), squeeze=False)
    for j, (prob, per_net) in enumerate(results.items()):
        for label, r in per_net.items():
            (line,) = axes[0, j].plot(r["iterations"], r["psnr_trained"], marker="o", ms=3, label=f"{label}")
            axes[0, j].plot(r["iterations"], r["psnr_predicted"], ls="--", color=line.get_color(), lw=0.8)
            axes[1, j].loglog(r["iterations"][1:], r["gap"][1:], marker="o", ms=3, label=label)
        axes[0, j].axhline(zero_filled[prob], color="k", lw=0.8, ls=":", label="zero-filled")
        dip = product[prob]
        axes[0, j].plot(dip["iterations"], dip["psnr"], "k-", lw=1.2, label=f"DIP with Adam (base {dip['base']})")
        axes[0, j].set(title=f"{prob}: PSNR (solid: GD, dashed: linearised)", xlabel="iteration", ylabel="dB")
        axes[0, j].set_xscale("symlog", linthresh=1)
        axes[0, j].set_xlim(left=0)
        axes[0, j].legend(fontsize=7)
        axes[1, j].set(
            title=f"{prob}: kernel prediction vs GD", xlabel="iteration", ylabel="||f_nn - f_lin|| / ||f_lin - f0||"
        )
        axes[1, j].legend(fontsize=7)
    names.append(common.save_figure(fig, out / "psnr_and_gap_over_iterations.png"))

    fig, axes = plt.subplots(2, cols, figsize=(5 * cols, 7), squeeze=False)
    for j, (prob, per_net) in enumerate(results.items()):
        for i, (key, space) in enumerate(
            [("null_fraction", "null(A)"), ("effective_null_fraction", "effective null(A)")]
        ):
            ax = axes[i, j]
            for label, r in per_net.items():
                (line,) = ax.plot(r["iterations"], r[f"{key}_trained"], marker="o", ms=3, label=label)
                ax.axhline(r[f"{key}_kernel_limit"], color=line.get_color(), lw=0.8, ls="--")
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(left=0)
            ax.set(
                title=f"{prob}: error energy in {space}\n(dashed: kernel limit)", xlabel="iteration", ylim=(-0.02, 1.02)
            )
            ax.legend(fontsize=7)
    names.append(common.save_figure(fig, out / "null_space_fraction.png"))

    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for prob, fit in fits.items():
        (line,) = ax.loglog(fit["params"], fit["final_gap"], marker="o", ls="", label=prob)
        if fit["exponent"] is not None:
            p = np.geomspace(fit["params"].min(), fit["params"].max(), 20)
            ax.loglog(
                p,
                np.exp(fit["log_c"]) * p ** fit["exponent"],
                color=line.get_color(),
                lw=0.8,
                label=f"fit: gap ~ P^{fit['exponent']:.2f}",
            )
    ax.set(title=f"{WIDTH_NET}: final gap vs width", xlabel="parameters P", ylabel="final relative gap")
    ax.legend(fontsize=7)
    names.append(common.save_figure(fig, out / "gap_vs_width.png"))

    prob, per_net = next(iter(results.items()))
    label = max(per_net, key=lambda k: per_net[k]["params"])
    im = per_net[label]["_images"]
    mag = lambda v: np.abs(common.images(v, hw))  # noqa: E731
    panels = [
        ("x* (scaled)", mag(im["x"])),
        ("kernel limit", mag(im["limit"])),
        ("GD trained", mag(im["trained"])),
        ("|trained - x*|", mag(im["trained"] - im["x"])),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
    for ax, (title, img) in zip(axes, panels):
        ax.imshow(img, cmap="gray")
        ax.set_title(f"{label}, {prob}: {title}", fontsize=7)
        ax.axis("off")
    names.append(common.save_figure(fig, out / "images.png"))
    return names


# %%
def main(argv=None) -> dict:
    p = common.parser("Kernel-regime error subspace of DIP networks", 64, "ntk_error_subspace", cache=False)
    p.add_argument(
        "--iters",
        type=int,
        default=500,
        help="iterations of gradient descent and of the Adam-trained DIP beside it (default 500; --quick: 30)",
    )
    p.add_argument(
        "--snr",
        type=float,
        nargs="+",
        default=None,
        help="SNRs in dB: 8 coils 4x with noisy k-space at each, instead of the noiseless problems "
        "(default: noiseless single-coil and 8 coils)",
    )
    args = p.parse_args(argv)
    out = common.prepare_out(args.out)
    size, iterations = (16, 30) if args.quick else (args.size, args.iters)
    widths = (2,) if args.quick else WIDTHS
    problems = PROBLEMS if args.snr is None else noisy_problems(args.snr)
    if args.quick:
        problems = dict(list(problems.items())[:1])
    key = jax.random.PRNGKey(args.seed)
    hw = (size, size)
    nets = networks(hw, key, widths)
    if args.quick:
        nets = {k: v for k, v in nets.items() if k.startswith(WIDTH_NET)}

    results, fits, zero_filled, spaces, product = {}, {}, {}, {}, {}
    for prob_label, (coils, acceleration, snr) in problems.items():
        problem = common.make_problem(prob_label, size, coils, acceleration, snr_db=snr, seed=args.seed)
        zf = np.asarray(problem.operator.adjoint(jnp.asarray(problem.y_kspace)))
        zero_filled[prob_label] = float(common.psnr(zf[None], ref=problem.x)[0])
        null, t_null = common.timed(NullSpace, problem.A)
        effective = null.at(NULL_TOL)
        spaces[prob_label] = {
            "m": int(problem.A.shape[0]),
            "n": int(problem.A.shape[1]),
            "null_dim": null.dim,
            "effective_null_dim": effective.dim,
            "seconds": t_null,
        }
        print(
            f"{prob_label}: m {problem.A.shape[0]} n {problem.A.shape[1]}, dim null(A) {null.dim}, "
            f"effective {effective.dim} ({t_null:.0f} s); zero-filled PSNR {zero_filled[prob_label]:.2f} dB",
            flush=True,
        )
        dip = product[prob_label] = product_dip(problem, widths[-1], iterations, key)
        print(
            f"{prob_label}: vanilla DIP as the product trains it (Adam, {WIDTH_NET} base {widths[-1]}, "
            f"{iterations} iterations): PSNR {dip['psnr'][-1]:.2f} dB (zero-filled {zero_filled[prob_label]:.2f}; "
            f"{dip['seconds']:.0f} s)",
            flush=True,
        )
        results[prob_label] = {}
        for name, net in nets.items():
            r = results[prob_label][name] = analyse(problem, null, effective, net, iterations)
            s = r["seconds"]
            print(
                f"{prob_label:15s} {name:14s} params {r['params']:7d}  PSNR GD {r['psnr_trained'][-1]:.2f} "
                f"lin {r['psnr_predicted'][-1]:.2f} limit {r['psnr_kernel_limit']:.2f}  final gap "
                f"{r['final_gap']:.3f}  null fraction trained {r['null_fraction_trained'][-1]:.4f} limit "
                f"{r['null_fraction_kernel_limit']:.4f} (effective: trained "
                f"{r['effective_null_fraction_trained'][-1]:.4f} limit "
                f"{r['effective_null_fraction_kernel_limit']:.4f}); limit residual "
                f"{r['data_residual_kernel_limit']:.1e}  ({s['trained']:.0f} s GD, {s['linearized']:.0f} s lin, "
                f"{s['kernel_limit']:.0f} s CG)",
                flush=True,
            )
        fits[prob_label] = width_fit(results[prob_label])
        if fits[prob_label]["exponent"] is not None:
            print(f"{prob_label}: final gap ~ P^{fits[prob_label]['exponent']:.3f}", flush=True)

    summary = {
        "size": size,
        "iterations": iterations,
        "eta": f"{ETA_SCALE} / lambda_max(A K A^T)",
        "effective_null_rcond": NULL_TOL,
        "kernel_limit_iterations": CG_ITERS,
        "problems": {
            k: {"coils": c, "acceleration": a, "snr_db": snr, **spaces[k]} for k, (c, a, snr) in problems.items()
        },
        "networks": {name: {"label": net.label, "params": net.n_params} for name, net in nets.items()},
        "zero_filled_psnr": zero_filled,
        "product_dip": product,
        "figures": figures(out, results, fits, zero_filled, product, hw),
        "width_fit": fits,
    }
    strip = lambda r: {k: v for k, v in r.items() if not k.startswith("_")}  # noqa: E731
    summary["results"] = {p: {n: strip(r) for n, r in per.items()} for p, per in results.items()}
    path = common.write_summary(out, summary)
    print(f"wrote {path}")
    return summary


if __name__ == "__main__":
    main()
