"""Empirical neural tangent kernels on ``jax.jvp`` / ``jax.vjp`` / ``jax.vmap``.

For a function ``f(params, x)`` with Jacobian ``J(x) = d f(params, x) / d params`` the empirical NTK is

    Theta(x1, x2) = J(x1) J(x2)^T = sum over parameter leaves l of  J_l(x1) J_l(x2)^T,

a tensor over the output axes of ``f(params, x1)`` and ``f(params, x2)``. The calling convention and the
output layout are those of neural-tangents' ``empirical_ntk_fn`` (checked against neural-tangents 0.6.5
by ``analysis/ntk_oracle``):

* ``ntk_fn(x1, x2, params, **apply_kwargs)``; ``x2=None`` means ``x2 = x1``.
* Output axes ``i`` in ``trace_axes`` are traced: summed over ``i1 = i2`` and divided by their size
  (neural-tangents' normalisation, so a trace over channels is the channel *mean*).
* Output axes in ``diagonal_axes`` keep only ``i1 = i2`` and appear once.
* Every other output axis appears twice, interleaved: outputs ``(N1, H, W, C)`` and ``(N2, H, W, C)``
  with ``trace_axes=()`` give a kernel of shape ``(N1, N2, H, H, W, W, C, C)``.
* ``vmap_axes`` (``None``, an int, or ``(in_axes, out_axes)``) certifies that ``f`` acts independently on
  the slices of ``x`` along ``in_axes`` (outputs batched along ``out_axes``), so Jacobians are computed
  per sample. No BatchNorm in training mode across a batch.

Implementations (all return the same kernel; they differ in cost and memory):

* ``1`` Jacobian contraction: reverse-mode Jacobians ``J(x1)``, ``J(x2)`` (one VJP per output entry),
  then ``einsum`` over parameters. Memory: ``O(N_out P)``.
* ``2`` NTK-vector products: column ``Theta e_k = J(x1) (J(x2)^T e_k)`` by one VJP and one JVP per
  output entry of ``x2``; no Jacobian is stored. Memory: ``O(N_out1 N_out2)`` plus one VJP/JVP batch.
* ``3`` leaf-wise forward-mode contraction (ours; *not* neural-tangents' structured-derivative rules):
  for each parameter leaf separately, its forward-mode Jacobian (one JVP per scalar of the leaf) is
  computed and contracted, and the products are accumulated, so at most one leaf's Jacobians are held.

``block_size`` (an extension; neural-tangents has no such argument) evaluates the VJPs / JVPs over
basis vectors in chunks of that many through ``jax.lax.map`` instead of one ``vmap`` over all of them,
bounding the memory of the batched derivative passes for large outputs (DIP images).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["empirical_ntk_fn", "ntk_vp_fn", "ntk_matrix"]

IMPLEMENTATIONS = (1, 2, 3)


def _canonical_axes(axes: int | Sequence[int], ndim: int, field: str) -> tuple[int, ...]:
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"{field}: axis {a} is out of range for outputs with {ndim} axes")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{field}: repeated axes {axes}")
    return tuple(sorted(out))


def _layout(ndim: int, trace: tuple[int, ...], diag: tuple[int, ...]):
    """``einsum`` sublists: output-1 axes, output-2 axes, result axes (neural-tangents' order)."""
    s1, s2, res = [], [], []
    for i in range(ndim):
        s1.append(i)
        if i in trace:
            s2.append(i)
        elif i in diag:
            s2.append(i)
            res.append(i)
        else:
            s2.append(ndim + i)
            res += [i, ndim + i]
    return s1, s2, res


def _vmap_spec(vmap_axes) -> tuple[int, int] | None:
    if vmap_axes is None:
        return None
    if isinstance(vmap_axes, int):
        return vmap_axes, vmap_axes
    if isinstance(vmap_axes, (tuple, list)) and len(vmap_axes) == 2 and all(isinstance(a, int) for a in vmap_axes):
        return int(vmap_axes[0]), int(vmap_axes[1])
    raise ValueError(f"vmap_axes: expected None, an int or (in_axes, out_axes) of ints, got {vmap_axes!r}")


def _basis_map(fn: Callable, n: int, block_size: int | None, dtype) -> Any:
    """``fn(e_k)`` for the ``n`` standard basis vectors ``e_k`` (flat, ``dtype``), stacked on axis 0.

    All at once with ``vmap`` when ``block_size`` is None, else ``block_size`` at a time.
    """

    def one(k):
        return fn(jnp.zeros((n,), dtype).at[k].set(1))

    ks = jnp.arange(n)
    if block_size is None or block_size >= n:
        return jax.vmap(one)(ks)
    return jax.lax.map(one, ks, batch_size=int(block_size))


def _jacobian_rev(fn: Callable, params, block_size):
    """Reverse-mode Jacobian of ``fn(params) -> array``: leaves of shape ``out_shape + leaf_shape``."""
    out, vjp = jax.vjp(fn, params)
    rows = _basis_map(lambda e: vjp(e.reshape(out.shape))[0], out.size, block_size, out.dtype)
    return jax.tree.map(lambda r: r.reshape(out.shape + r.shape[1:]), rows)


def _leaf_jacobian_fwd(fn: Callable, params, index: int, block_size):
    """Forward-mode Jacobian of ``fn`` w.r.t. parameter leaf ``index``: shape ``out_shape + leaf_shape``."""
    leaves, treedef = jax.tree.flatten(params)
    leaf = leaves[index]

    def g(p):
        return fn(jax.tree.unflatten(treedef, leaves[:index] + [p] + leaves[index + 1 :]))

    out_shape = jax.eval_shape(g, leaf).shape
    cols = _basis_map(lambda e: jax.jvp(g, (leaf,), (e.reshape(leaf.shape),))[1], leaf.size, block_size, leaf.dtype)
    return jnp.moveaxis(cols, 0, -1).reshape(out_shape + leaf.shape)


def _per_sample(f, params, x, spec, out_ndim, jac_fn):
    """``jac_fn(fn)`` for ``fn = f(params, x)``, or, with ``spec = (in_axis, out_axis)``, per-sample
    evaluation stacked so the result has the layout of the full (batched) computation."""
    if spec is None:
        return jac_fn(lambda p: f(p, x))
    in_axis, out_axis = spec
    in_axis %= x.ndim
    out_axis %= out_ndim

    def single(xi):
        return jac_fn(lambda p: jnp.squeeze(f(p, jnp.expand_dims(xi, in_axis)), out_axis))

    return jax.vmap(single, in_axes=in_axis, out_axes=out_axis)(x)


def empirical_ntk_fn(
    f: Callable,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes=None,
    implementation: int = 1,
    block_size: int | None = None,
) -> Callable:
    """Function ``ntk_fn(x1, x2, params, **apply_kwargs)`` computing the empirical NTK of ``f``.

    ``f(params, x, **apply_kwargs)`` returns one array. See the module docstring for the layout,
    ``trace_axes`` / ``diagonal_axes`` / ``vmap_axes`` and the three implementations.
    Wrap the result in ``jax.jit`` (with ``static_argnames`` for non-array keyword arguments) to compile it.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation: expected one of {IMPLEMENTATIONS}, got {implementation!r}")
    if block_size is not None and int(block_size) < 1:
        raise ValueError(f"block_size: expected a positive int or None, got {block_size!r}")
    spec = _vmap_spec(vmap_axes)

    def ntk_fn(x1, x2, params, **apply_kwargs):
        fk = (lambda p, x: f(p, x, **apply_kwargs)) if apply_kwargs else f
        same = x2 is None
        x2 = x1 if same else x2
        out1 = jax.eval_shape(fk, params, x1)
        out2 = jax.eval_shape(fk, params, x2)
        if not (hasattr(out1, "shape") and hasattr(out2, "shape")):
            raise ValueError("f must return a single array (pytree outputs are not supported)")
        ndim = len(out1.shape)
        if len(out2.shape) != ndim:
            raise ValueError(f"f(params, x1) and f(params, x2) have different ranks: {out1.shape} vs {out2.shape}")
        trace = _canonical_axes(trace_axes, ndim, "trace_axes")
        diag = _canonical_axes(diagonal_axes, ndim, "diagonal_axes")
        if set(trace) & set(diag):
            raise ValueError(f"trace_axes {trace} and diagonal_axes {diag} overlap")
        for i in trace + diag:
            if out1.shape[i] != out2.shape[i]:
                raise ValueError(f"traced/diagonal output axis {i} differs in size: {out1.shape} vs {out2.shape}")
        s1, s2, res = _layout(ndim, trace, diag)
        scale = 1.0 / math.prod(out1.shape[i] for i in trace)
        p_label = 2 * ndim

        def contract(j1, j2):
            j1 = j1.reshape(j1.shape[:ndim] + (-1,))
            j2 = j2.reshape(j2.shape[:ndim] + (-1,))
            return jnp.einsum(j1, s1 + [p_label], j2, s2 + [p_label], res)

        if implementation == 1:
            jac = lambda fn: _jacobian_rev(fn, params, block_size)  # noqa: E731
            j1 = _per_sample(fk, params, x1, spec, ndim, jac)
            j2 = j1 if same else _per_sample(fk, params, x2, spec, ndim, jac)
            kernel = sum(jax.tree.leaves(jax.tree.map(contract, j1, j2)))
        elif implementation == 3:
            kernel = 0.0
            for index in range(len(jax.tree.leaves(params))):
                jac = lambda fn, i=index: _leaf_jacobian_fwd(fn, params, i, block_size)  # noqa: E731
                j1 = _per_sample(fk, params, x1, spec, ndim, jac)
                j2 = j1 if same else _per_sample(fk, params, x2, spec, ndim, jac)
                kernel = kernel + contract(j1, j2)
        else:
            raw = _raw_kernel_vp(fk, params, x1, x2, spec, ndim, block_size)
            kernel = jnp.einsum(raw, s1 + s2, res)
        return kernel * scale

    return ntk_fn


def _pair_columns(f1: Callable, f2: Callable, params, block_size):
    """Raw kernel ``J1 J2^T`` of shape ``out1_shape + out2_shape`` by NTK-vector products."""
    out2, vjp2 = jax.vjp(f2, params)
    out1 = jax.eval_shape(f1, params)
    cols = _basis_map(
        lambda e: jax.jvp(f1, (params,), vjp2(e.reshape(out2.shape)))[1], out2.size, block_size, out2.dtype
    )
    cols = cols.reshape(out2.shape + out1.shape)
    return jnp.moveaxis(cols, range(out2.ndim), range(out1.ndim, out1.ndim + out2.ndim))


def _raw_kernel_vp(f, params, x1, x2, spec, ndim, block_size):
    """Implementation 2: raw kernel ``(out1..., out2...)``; per sample pair when ``spec`` is given."""
    if spec is None:
        return _pair_columns(lambda p: f(p, x1), lambda p: f(p, x2), params, block_size)
    in_axis, out_axis = spec
    in_axis %= x1.ndim
    out_axis %= ndim

    def pair(a, b):
        single = lambda xi: lambda p: jnp.squeeze(f(p, jnp.expand_dims(xi, in_axis)), out_axis)  # noqa: E731
        return _pair_columns(single(a), single(b), params, block_size)

    pairs = jax.vmap(jax.vmap(pair, in_axes=(None, in_axis)), in_axes=(in_axis, None))(x1, x2)
    return jnp.moveaxis(pairs, (0, 1), (out_axis, ndim + out_axis))


def ntk_vp_fn(f: Callable, params, x1, x2=None, **apply_kwargs) -> Callable:
    """``v -> Theta(x1, x2) v`` without forming the kernel: ``J(x1) (J(x2)^T v)`` (one VJP + one JVP).

    ``v`` has the shape of ``f(params, x2)`` (or is flat of that size); the result has the shape of
    ``f(params, x1)`` (flat when ``v`` is flat). Compiled once; memory is that of one forward and one
    backward pass, nothing of size ``N_out^2`` or ``N_out x P``.
    """
    x2 = x1 if x2 is None else x2
    shape2 = jax.eval_shape(lambda p: f(p, x2, **apply_kwargs), params).shape

    @jax.jit
    def vp(p, a, b, v):
        out, vjp = jax.vjp(lambda q: f(q, b, **apply_kwargs), p)
        tangent = vjp(v.astype(out.dtype))
        return jax.jvp(lambda q: f(q, a, **apply_kwargs), (p,), tangent)[1]

    def apply(v):
        v = jnp.asarray(v)
        if v.shape != shape2 and v.shape != (math.prod(shape2),):
            raise ValueError(f"v: expected shape {shape2} or ({math.prod(shape2)},), got {v.shape}")
        out = vp(params, x1, x2, v.reshape(shape2))
        return out.reshape(-1) if v.ndim == 1 and len(shape2) != 1 else out

    return apply


def ntk_matrix(
    f: Callable, params, x, implementation: int = 2, block_size: int | None = 256, **apply_kwargs
) -> jnp.ndarray:
    """The full kernel of ``f(params, x)`` as an ``(N_out, N_out)`` matrix, rows and columns in the
    row-major order of the output (for a DIP network ``(1, H, W, C)``: pixel-major, channel-minor).

    ``K = J J^T`` with ``J`` the ``(N_out, P)`` Jacobian, evaluated in chunks of ``block_size`` basis
    vectors (see :func:`empirical_ntk_fn`). Memory ``4 N_out^2`` bytes for the result; use
    :func:`ntk_vp_fn` with :mod:`sgdip_jax.ntk.spectra` when that is too large.
    """
    ntk = empirical_ntk_fn(f, trace_axes=(), implementation=implementation, block_size=block_size)
    kernel = jax.jit(lambda p, a: ntk(a, None, p, **apply_kwargs))(params, x)
    ndim = kernel.ndim // 2
    kernel = jnp.transpose(kernel, tuple(range(0, 2 * ndim, 2)) + tuple(range(1, 2 * ndim, 2)))
    n = math.prod(kernel.shape[:ndim])
    return kernel.reshape(n, n)
