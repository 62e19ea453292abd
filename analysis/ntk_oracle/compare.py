"""Cross-check ``sgdip_jax.ntk.empirical_ntk_fn`` against neural-tangents 0.6.5.

neural-tangents cannot be installed next to the project's JAX, so the check runs in two environments
and compares through a file:

1. ``save`` (project environment): builds small plain-Flax networks (defined below with layers that
   exist in Flax 0.8 and current Flax), initialises them, computes our kernels for implementations
   1, 2, 3 and several ``trace_axes`` / ``diagonal_axes`` / ``vmap_axes`` settings, and writes
   parameters, inputs, outputs and kernels to an ``.npz``.
2. ``check`` (oracle environment, ``requirements.txt``): rebuilds the same networks, loads the
   parameters, checks the outputs match, computes neural-tangents' kernels for implementations 1, 2
   and 3 with the same settings and reports relative errors; exits non-zero above ``--tol``.

This file imports neither package at module level, so both environments can run it.
"""

import argparse
import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

IMAGE = (8, 8, 2)
N1, N2 = 2, 3
IMPLEMENTATIONS = (1, 2, 3)
SETTINGS = [
    {"trace_axes": [], "diagonal_axes": [], "vmap_axes": None},
    {"trace_axes": [], "diagonal_axes": [], "vmap_axes": 0},
    {"trace_axes": [-1], "diagonal_axes": [], "vmap_axes": 0},
    {"trace_axes": [], "diagonal_axes": [-1], "vmap_axes": None},
    {"trace_axes": [1, 2], "diagonal_axes": [], "vmap_axes": 0},
]


class ConvNet(nn.Module):
    """3x3 conv (4) -> ReLU -> 3x3 conv (4) -> ReLU -> 1x1 conv (2)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        return nn.Conv(2, (1, 1))(x)


class TinyUNet(nn.Module):
    """One-level U-Net: conv block, 2x2 max-pool, conv block, x2 bilinear upsampling, skip concat,
    conv block, 1x1 output conv. Blocks are 3x3 conv -> (GroupNorm with 2 groups | nothing) -> ReLU."""

    norm: str = "group"

    def block(self, x, features):
        x = nn.Conv(features, (3, 3))(x)
        if self.norm == "group":
            x = nn.GroupNorm(num_groups=2)(x)
        return nn.relu(x)

    @nn.compact
    def __call__(self, x):
        skip = self.block(x, 4)
        x = nn.max_pool(skip, (2, 2), strides=(2, 2))
        x = self.block(x, 8)
        x = jax.image.resize(x, x.shape[:1] + skip.shape[1:3] + x.shape[3:], "bilinear")
        x = self.block(jnp.concatenate([skip, x], axis=-1), 4)
        return nn.Conv(2, (1, 1))(x)


NETWORKS = {"convnet": ConvNet(), "unet_group": TinyUNet(norm="group"), "unet_none": TinyUNet(norm="none")}


def apply_fn(name):
    return lambda params, x: NETWORKS[name].apply({"params": params}, x)


def setting_key(name, i, x2, impl=None):
    return f"{name}/s{i}/{x2}" + ("" if impl is None else f"/impl{impl}")


def save(path):
    """Project environment: our kernels for every network, setting and implementation."""
    from sgdip_jax.ntk import empirical_ntk_fn

    key = jax.random.PRNGKey(0)
    k1, k2, key = jax.random.split(key, 3)
    x1 = jax.random.normal(k1, (N1,) + IMAGE, jnp.float32)
    x2 = jax.random.normal(k2, (N2,) + IMAGE, jnp.float32)
    arrays = {"x1": np.asarray(x1), "x2": np.asarray(x2)}
    for name, net in NETWORKS.items():
        key, sub = jax.random.split(key)
        params = net.init(sub, x1)["params"]
        for p, v in traverse_util.flatten_dict(params, sep="/").items():
            arrays[f"params/{name}/{p}"] = np.asarray(v)
        arrays[f"out/{name}"] = np.asarray(apply_fn(name)(params, x1))
        for i, s in enumerate(SETTINGS):
            for impl in IMPLEMENTATIONS:
                fn = jax.jit(empirical_ntk_fn(apply_fn(name), implementation=impl, **_axes(s)))
                arrays[setting_key(name, i, "same", impl)] = np.asarray(fn(x1, None, params))
                arrays[setting_key(name, i, "cross", impl)] = np.asarray(fn(x1, x2, params))
        print(f"saved kernels of {name}")
    arrays["settings"] = np.asarray(json.dumps(SETTINGS))
    np.savez(path, **arrays)
    print(f"wrote {path}")


def _axes(s):
    return {
        "trace_axes": tuple(s["trace_axes"]),
        "diagonal_axes": tuple(s["diagonal_axes"]),
        "vmap_axes": s["vmap_axes"],
    }


def _rel(a, b):
    """(max |a - b| / max |b|, ||a - b||_F / ||b||_F)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"kernel shapes differ: ours {a.shape} vs neural-tangents {b.shape}")
    return float(np.abs(a - b).max() / np.abs(b).max()), float(np.linalg.norm(a - b) / np.linalg.norm(b))


def check(path, tol):
    """Oracle environment: neural-tangents' kernels against the saved ones."""
    import neural_tangents as nt

    data = np.load(path)
    settings = json.loads(str(data["settings"]))
    if settings != SETTINGS:
        raise ValueError(f"{path}: settings differ from this script's; re-run 'save'")
    x1, x2 = jnp.asarray(data["x1"]), jnp.asarray(data["x2"])
    worst = {impl: [0.0, 0.0] for impl in IMPLEMENTATIONS}
    rows = []
    for name in NETWORKS:
        prefix = f"params/{name}/"
        flat = {k[len(prefix) :]: jnp.asarray(data[k]) for k in data.files if k.startswith(prefix)}
        params = traverse_util.unflatten_dict(flat, sep="/")
        out_err = _rel(apply_fn(name)(params, x1), data[f"out/{name}"])[0]
        if out_err > tol:
            raise ValueError(f"{name}: rebuilt network output differs from the saved one (rel. error {out_err:.2e})")
        for i, s in enumerate(SETTINGS):
            for impl in IMPLEMENTATIONS:
                fn = jax.jit(nt.empirical_ntk_fn(apply_fn(name), implementation=impl, **_axes(s)))
                for which, second in (("same", None), ("cross", x2)):
                    ref = fn(x1, second, params)
                    err = _rel(data[setting_key(name, i, which, impl)], ref)
                    worst[impl] = [max(worst[impl][0], err[0]), max(worst[impl][1], err[1])]
                    rows.append((name, i, which, impl, tuple(np.shape(ref)), *err))
    print(f"{'network':12s} {'setting':40s} {'x2':5s} impl  {'shape':28s} max-rel    fro-rel")
    for name, i, which, impl, shape, e_max, e_fro in rows:
        setting = json.dumps(SETTINGS[i])
        print(f"{name:12s} {setting:40s} {which:5s} {impl:4d}  {str(shape):28s} {e_max:.2e}  {e_fro:.2e}")
    summary = {f"implementation_{k}": {"max_rel": v[0], "fro_rel": v[1]} for k, v in worst.items()}
    print(json.dumps({"neural_tangents": nt.__version__, "jax": jax.__version__, "worst": summary}, indent=2))
    bad = [k for k, v in worst.items() if v[0] > tol]
    if bad:
        print(f"FAILED: implementations {bad} exceed tol {tol}")
        return 1
    print(f"OK: all kernels agree within max relative error {tol}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p_save = sub.add_parser("save", help="project environment: write our kernels to an .npz")
    p_save.add_argument("--out", default="ntk_oracle_kernels.npz")
    p_check = sub.add_parser("check", help="oracle environment: compare with neural-tangents")
    p_check.add_argument("path")
    p_check.add_argument("--tol", type=float, default=1e-5, help="max relative error allowed (default 1e-5)")
    args = parser.parse_args(argv)
    if args.mode == "save":
        save(args.out)
        return 0
    return check(args.path, args.tol)


if __name__ == "__main__":
    sys.exit(main())
