# %% [markdown]
# # Error subspace of DIP in the kernel regime
#
# Claim (kernel regime, noiseless `y = A x*`): training `1/2 ||A f(theta) - y||^2` with a constant
# kernel `K = J J^T` converges to `f(inf) - x* = (I - P)(f(0) - x*)`, `P = K A^T (A K A^T)^+ A`, so the
# limiting error lies in the null space of `A` and what the network adds there is confined to
# `range(K A^T)`. The closer the network is to its linearisation (wide, small steps), the better
# the kernel prediction describes actual gradient-descent training.
#
# Experiment: single-coil (VDRS 4x) and 4-coil (VDRS 8x) Cartesian MRI of the bundled shoulder image
# (noiseless) at a small size; real DIP networks (U-Nets of depth 1-4, a wide U-Net, Deep Decoder,
# ConvDecoder; GroupNorm so the network is a per-sample function). For each: the empirical NTK of the output at
# initialisation, the predicted gradient-descent trajectory (step `eta = 0.5 / lambda_max(A K A^T)`)
# and limit, and the actual network trained by plain gradient descent with the same step.
# Reported: relative gap `||f_nn(t) - f_lin(t)|| / ||f_lin(t) - f(0)||` over iterations, the fraction of
# the error energy in null(A) (trained network after the last iteration; kernel limit; also for the
# effective null space, the right-singular directions of A with singular value below 1e-3 ||A||), the
# null-space error left by the kernel limit, and the final gap against the U-Net's width.
#
# Run: `python analysis/ntk_error_subspace.py` (writes analysis/outputs/ntk_error_subspace/; `--help` lists options)

# %%
from __future__ import annotations

import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from sgdip_jax.ntk import KernelRegime, dense_matrix, gradient_descent, null_space_fraction  # noqa: E402

ETA_SCALE = 0.5
NULL_TOL = 1e-3
WIDTH_NET = "unet2"  # the width sweep varies this zoo network's base width


# %%
def analyse(problem: common.Problem, A_dense: np.ndarray, net: common.DipNet, K: np.ndarray, iterations: int) -> dict:
    """Kernel prediction vs gradient-descent training of one network (kernel ``K``) on one problem."""
    f0 = np.asarray(jax.jit(net.flat)(net.params), np.float64)
    x_s, y_s = common.rescaled(problem, f0)
    regime = KernelRegime(K, A_dense)
    eta = ETA_SCALE / regime.lambda_max
    record = np.unique(np.concatenate([[0], np.geomspace(1, iterations, 14).astype(int)]))
    predicted = regime.outputs(f0, y_s, record, eta, discrete=True)
    trained, t_train = common.timed(gradient_descent, net.flat, net.params, problem.A, y_s, eta, record)
    moved = np.linalg.norm(predicted - f0, axis=1)
    gap = np.linalg.norm(trained - predicted, axis=1) / np.where(moved > 0, moved, np.inf)
    limit = regime.limit(f0, y_s)
    errors = np.stack([trained[-1] - x_s, predicted[-1] - x_s, limit - x_s, f0 - x_s])
    fractions = null_space_fraction(A_dense, errors)
    # Effective null space: directions that A measures with gain below NULL_TOL * ||A|| (ill-conditioned
    # multi-coil operators have many such directions besides the exact null space).
    effective = null_space_fraction(A_dense, errors, rcond=NULL_TOL)
    null_energy = fractions * np.sum(errors**2, axis=1)
    residual = lambda f: np.linalg.norm(A_dense @ f - y_s) / np.linalg.norm(y_s)  # noqa: E731
    rel = lambda f: np.linalg.norm(f - x_s, axis=-1) / np.linalg.norm(x_s)  # noqa: E731
    return {
        "params": net.n_params,
        "eta": eta,
        "lambda_max": regime.lambda_max,
        "rank_AKAt": int(regime.keep.sum()),
        "m": int(A_dense.shape[0]),
        "iterations": record,
        "gap": gap,
        "final_gap": gap[-1],
        "error_trained": rel(trained),
        "error_predicted": rel(predicted),
        "error_kernel_limit": rel(limit),
        "data_residual_trained": residual(trained[-1]),
        "data_residual_kernel_limit": residual(limit),
        "null_fraction_trained": fractions[0],
        "null_fraction_predicted": fractions[1],
        "null_fraction_kernel_limit": fractions[2],
        "effective_null_fraction_trained": effective[0],
        "effective_null_fraction_kernel_limit": effective[2],
        "null_error_left_by_limit": float(np.sqrt(null_energy[2] / null_energy[3])),
        "seconds_training": t_train,
        "_images": {"x": x_s, "limit": limit, "trained": trained[-1], "predicted": predicted[-1]},
    }


# %%
def figures(out: Path, results: dict, widths: dict, hw) -> list[str]:
    import matplotlib.pyplot as plt

    names = []
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, (prob, per_net) in zip(axes[0], results.items()):
        for label, r in per_net.items():
            ax.loglog(r["iterations"][1:], r["gap"][1:], marker="o", ms=3, label=label)
        ax.set(title=f"{prob}: kernel prediction vs GD", xlabel="iteration", ylabel="||f_nn - f_lin|| / ||f_lin - f0||")
        ax.legend(fontsize=7)
    names.append(common.save_figure(fig, out / "gap_over_iterations.png"))

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.4), squeeze=False)
    for ax, (prob, per_net) in zip(axes[0], results.items()):
        labels = list(per_net)
        pos = np.arange(len(labels))
        bars = [
            ("null_fraction_trained", "trained (last iteration)"),
            ("effective_null_fraction_trained", "trained, effective null space"),
            ("null_fraction_kernel_limit", "kernel limit"),
            ("effective_null_fraction_kernel_limit", "kernel limit, effective null space"),
        ]
        for i, (key, text) in enumerate(bars):
            ax.bar(pos + 0.2 * (i - 1.5), [per_net[k][key] for k in labels], 0.2, label=text)
        ax.set_xticks(pos, labels, rotation=30, fontsize=7)
        ax.set(title=f"{prob}: error energy in null(A)", ylim=(0, 1.05))
        ax.legend(fontsize=7, loc="lower right")
    names.append(common.save_figure(fig, out / "null_space_fraction.png"))

    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    ax.loglog([w["params"] for w in widths.values()], [w["final_gap"] for w in widths.values()], marker="o")
    for base, w in widths.items():
        ax.annotate(f"base {base}", (w["params"], w["final_gap"]), fontsize=7)
    ax.set(title="U-Net depth 2: final gap vs width", xlabel="parameters", ylabel="final relative gap")
    names.append(common.save_figure(fig, out / "gap_vs_width.png"))

    prob, per_net = next(iter(results.items()))
    label = "unet2-wide" if "unet2-wide" in per_net else next(iter(per_net))
    im = per_net[label]["_images"]
    mag = lambda v: np.abs(v.reshape(*hw, 2)[..., 0] + 1j * v.reshape(*hw, 2)[..., 1])  # noqa: E731
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
    args = common.parser("Kernel-regime error subspace of DIP networks", 32, "ntk_error_subspace").parse_args(argv)
    out = common.prepare_out(args.out)
    size = 16 if args.quick else args.size
    iterations = 30 if args.quick else 1000
    labels = [WIDTH_NET] if args.quick else list(common.ZOO)
    bases = [common.ZOO[WIDTH_NET][1]["base"]] if args.quick else [2, 4, 8, 16, 32]
    # (coils, acceleration): 4 coils at 4x measure as many numbers as the image has, and A has no null
    # space; at 8x half of the image space is unmeasured.
    problems = {"single-coil 4x": (1, 4.0), "multi-coil (4 coils) 8x": (4, 8.0)}
    problems = dict(list(problems.items())[:1]) if args.quick else problems
    key = jax.random.PRNGKey(args.seed)

    # Networks by display name -> (zoo label, base override). A width-sweep member equal to a zoo
    # network (same registry name and base) shares its kernel and its runs.
    specs = {label: (label, None) for label in labels}
    width_names = {}
    for base in bases:
        same = [lab for lab in labels if common.ZOO[lab][0] == WIDTH_NET and common.ZOO[lab][1].get("base") == base]
        width_names[base] = same[0] if same else f"{WIDTH_NET} base {base}"
        specs.setdefault(width_names[base], (WIDTH_NET, base))
    hw = (size, size)
    nets, kernels = {}, {}
    for name, (label, base) in specs.items():
        nets[name] = common.make_network(label, hw, key, overrides=None if base is None else {"base": base})
        kernels[name] = common.timed(common.kernel, nets[name], args.cache)
        print(f"kernel of {name} ({nets[name].n_params} parameters): {kernels[name][1]:.0f}s", flush=True)

    results, summary = (
        {},
        {
            "size": size,
            "iterations": iterations,
            "eta": f"{ETA_SCALE} / lambda_max(A K A^T)",
            "problems": problems,
            "networks": {k: common.ZOO[k] for k in labels},
        },
    )
    for prob_label, (coils, acceleration) in problems.items():
        problem = common.make_problem(prob_label, size, coils, acceleration, seed=args.seed)
        A_dense = dense_matrix(problem.A)
        results[prob_label] = {}
        for name, net in nets.items():
            if coils > 1 and name not in labels:
                continue
            r = results[prob_label][name] = analyse(problem, A_dense, net, kernels[name][0], iterations)
            r["seconds_kernel"] = kernels[name][1]
            print(
                f"{prob_label:22s} {name:16s} params {r['params']:7d}  final gap {r['final_gap']:.3f}  "
                f"null fraction trained {r['null_fraction_trained']:.4f} "
                f"limit {r['null_fraction_kernel_limit']:.6f} (effective: trained "
                f"{r['effective_null_fraction_trained']:.4f} "
                f"limit {r['effective_null_fraction_kernel_limit']:.6f})  "
                f"train {r['seconds_training']:.0f}s",
                flush=True,
            )
    single = results["single-coil 4x"]
    widths = {base: single[name] for base, name in width_names.items()}
    results = {p: {n: r for n, r in per.items() if n in labels} for p, per in results.items()}

    summary["figures"] = figures(out, results, widths, hw)
    strip = lambda r: {k: v for k, v in r.items() if not k.startswith("_")}  # noqa: E731
    summary["results"] = {p: {n: strip(r) for n, r in per.items()} for p, per in results.items()}
    summary[f"width_sweep_{WIDTH_NET}_single_coil"] = {str(b): strip(r) for b, r in widths.items()}
    path = common.write_summary(out, summary)
    print(f"wrote {path}")
    return summary


if __name__ == "__main__":
    main()
