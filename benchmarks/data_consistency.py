"""How self-guided DIP's final image is formed, measured from one run per case with its other
defaults, after ``--iters`` iterations:

* the moving average of the iterates (EMA, the reported image), as it is and after the final
  data-consistency step ``x + A^H (y - A x)`` (replace the measured k-space, or the known pixels),
  and after the noise-weighted step (:func:`weighted_data_consistency`,
  ``sigma`` estimated from ``y``; MRI only, inpainting is noiseless);
* the mean of the *final* network over ``--draws`` noise draws, ``mean_j f_theta(z + eta_j)`` with
  the training noise (:func:`~sgdip_jax.methods.sgdip.draw_noise`; BatchNorm in batch-statistics
  mode over ``--batch`` draws per pass, as in training), as it is and after the same step;
* the mean of the two, after the step.

Cases are those of ``benchmarks/sweep.py`` (MRI simulated from open images, inpainting of open
photographs), with its best classical method (``lam="auto"``) beside them. PSNR in dB (SSIM).

    python benchmarks/data_consistency.py --size 128 --iters 500 --cases shoulder-4x30 camera-p80
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sgdip_jax import engine
from sgdip_jax.channels import n_channels
from sgdip_jax.config import NetworkConfig
from sgdip_jax.methods import SGDIPConfig
from sgdip_jax.methods.common import build_network, data_consistency, engine_config, network_forward, setup, to_image
from sgdip_jax.methods.parameter_choice import estimate_sigma
from sgdip_jax.methods.sgdip import draw_noise, resolve_auto, sgdip_task
from sgdip_jax.metrics import evaluate
from sgdip_jax.operators import MultiCoilMRI

sys.path.insert(0, str(Path(__file__).parent))
from sweep import ALL_CASES, classical, make_case  # noqa: E402

COLUMNS = ("EMA", "EMA + DC", "EMA + weighted DC", "draw mean", "draw mean + DC", "(EMA + draw mean) / 2 + DC")
DC_BANDS = 16  # rings of k-space with equal numbers of sampled entries


def weighted_data_consistency(operator, x, y, sigma: float, bands: int = DC_BANDS):
    """``x + A^H (W (y - A x))``: the data-consistency step with the residual shrunk per ring of
    k-space, multi-coil MRI only.

    In a ring ``b`` the residual is ``r = e + n``: the error ``e`` of ``x`` plus the noise, with
    ``E|n|^2 = sigma^2``. The scalar ``w`` that minimises ``E|e - w r|^2`` (``e``, ``n``
    uncorrelated) is the Wiener weight ``w_b = E|e|^2 / (E|e|^2 + sigma^2) = max(0, 1 - sigma^2 /
    mean_b |r|^2)``, the mean over the ring's sampled entries of all coils. ``sigma -> 0`` gives
    :func:`data_consistency`; rings where ``x`` already fits the data to the noise level keep ``x``.
    Rings are quantiles of ``|k|`` (``bands`` of them) over the sampled entries.
    """
    r = y - operator(x)
    h, w = r.shape[-2:]
    ky, kx = np.meshgrid((np.arange(h) - h // 2) / h, (np.arange(w) - w // 2) / w, indexing="ij")
    radius = np.hypot(ky, kx)
    sampled = np.broadcast_to(np.asarray(operator.mask) != 0, (h, w))
    edges = np.quantile(radius[sampled], np.linspace(0, 1, bands + 1)[1:-1])
    ring = jnp.asarray(np.where(sampled, np.searchsorted(edges, radius), bands))  # ``bands``: unsampled
    power = jnp.mean(jnp.abs(r) ** 2, axis=tuple(range(r.ndim - 2)))  # over coils (and batch)
    count = jnp.zeros(bands + 1).at[ring].add(1.0)
    mean = jnp.zeros(bands + 1).at[ring].add(power) / jnp.maximum(count, 1.0)
    weight = jnp.clip(1.0 - sigma**2 / jnp.maximum(mean, 1e-30), 0.0, 1.0)
    return x + operator.adjoint(weight[ring].astype(r.real.dtype) * r)


def draw_mean(forward, params, net_state, z, config: SGDIPConfig, draws: int, batch: int, key):
    """``mean_j f_theta(z + eta_j)`` over ``ceil(draws / batch)`` network passes of ``batch`` draws each."""
    one = SGDIPConfig(draws=batch, noise=config.noise, noise_scale=config.noise_scale)
    passes = -(-draws // batch)
    total = 0.0
    for k in jax.random.split(key, passes):
        outs, _ = forward(params, net_state, z + draw_noise(k, z, one))
        total = total + jnp.mean(outs, axis=0)
    return total / passes


def final_images(case, config: SGDIPConfig, draws: int, batch: int, seed: int):
    """``{column: image}`` of :data:`COLUMNS` from one run of ``config`` (its own final step off)."""
    op, y = case.operator, jnp.asarray(case.y)
    config = resolve_auto(config, op)
    task = sgdip_task(config)
    problem = setup(task, op, y, seed)
    params, net_state, z, key, data, *_ = problem.engine_args()
    out = engine.run(engine_config(task, op), params, net_state, z, key, data, progress=False)
    module = build_network(config.network, n_channels(op), tuple(op.image_shape[:2]))
    forward = jax.jit(network_forward(module, config.compute_dtype))
    state, scale = out.state, data["scale"]
    mean = draw_mean(
        forward, state.params, state.net_state, state.z, config, draws, batch, jax.random.PRNGKey(seed + 1)
    )
    ema, drawn = to_image(op, state.ema, scale), to_image(op, mean, scale)
    dc = lambda x: data_consistency(op, x, y)  # noqa: E731
    sigma = estimate_sigma(op, y) if isinstance(op, MultiCoilMRI) else 0.0
    weighted = weighted_data_consistency(op, ema, y, sigma)
    return dict(zip(COLUMNS, (ema, dc(ema), weighted, drawn, dc(drawn), dc(0.5 * (ema + drawn)))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--draws", type=int, default=256, help="noise draws of the final network (default: %(default)s)")
    p.add_argument("--batch", type=int, default=64, help="draws per network pass (default: %(default)s)")
    p.add_argument("--base", type=int, default=16, help="U-Net width (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cases", nargs="+", default=["shoulder-4x30", "head-4x20", "camera-p80"], choices=list(ALL_CASES))
    args = p.parse_args(argv)
    config = SGDIPConfig(network=NetworkConfig("unet4", base=args.base), iterations=args.iters, data_consistency=False)
    print(f"| case | best classical (auto) | {' | '.join(COLUMNS)} |\n|---|---|{'---|' * len(COLUMNS)}")
    for name in args.cases:
        case = make_case(name, args.size, args.seed)
        base = {m: v for m, v in classical(case).items() if m != "zero-filled"}
        best = max(base, key=lambda m: base[m]["psnr"])
        images = final_images(case, config, args.draws, args.batch, args.seed)
        scores = [evaluate(x, ref=case.reference) for x in images.values()]
        cells = " | ".join(f"{m['psnr']:.2f} ({m['ssim']:.4f})" for m in scores)
        print(f"| {name} {args.size}px | {base[best]['psnr']:.2f} ({best}) | {cells} |", flush=True)


if __name__ == "__main__":
    main()
