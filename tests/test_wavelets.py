"""Orthogonal Daubechies wavelets in JAX against PyWavelets (periodization mode)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdip_jax.operators import wavelets

pywt = pytest.importorskip("pywt")

NAMES = ["haar", "db2", "db4"]


def _random(shape, complex_=False, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if complex_:
        x = x + 1j * rng.standard_normal(shape)
    return x


def _pywt_leaves(coeffs):
    return [coeffs[0]] + [c for detail in coeffs[1:] for c in detail]


@pytest.mark.parametrize("name", NAMES)
def test_filters_match_pywavelets(name):
    lo, hi = wavelets.filters(name)
    w = pywt.Wavelet(name)
    np.testing.assert_allclose(lo, w.dec_lo, rtol=0, atol=1e-15)
    np.testing.assert_allclose(hi, w.dec_hi, rtol=0, atol=1e-15)


@pytest.mark.filterwarnings("ignore:Level value of .* is too high")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "shape, axes, level, complex_",
    [
        ((32, 48), (-2, -1), 2, False),
        ((32, 32), (-2, -1), None, True),  # default depth, complex input
        ((2, 16, 8), (-2, -1), 1, False),  # batch axis in front
        ((16, 32, 3), (0, 1), 2, False),  # channels-last colour image
        ((8, 8), (-2, -1), 2, True),  # filters longer than the coarse band: wrap-around
    ],
)
def test_wavedec2_matches_pywavelets_periodization(name, shape, axes, level, complex_):
    x = _random(shape, complex_)
    ours = wavelets.wavedec2(jnp.asarray(x, jnp.complex64 if complex_ else jnp.float32), name, level, axes)
    ref = pywt.wavedec2(x, name, mode="periodization", level=level, axes=axes)
    assert len(ours) == len(ref)
    ours_leaves, ref_leaves = jax.tree_util.tree_leaves(ours), _pywt_leaves(ref)
    assert [o.shape for o in ours_leaves] == [r.shape for r in ref_leaves]
    for o, r in zip(ours_leaves, ref_leaves):
        np.testing.assert_allclose(np.asarray(o), r, rtol=0, atol=2e-5)
    back = pywt.waverec2(ref, name, mode="periodization", axes=axes)
    np.testing.assert_allclose(np.asarray(wavelets.waverec2(ours, name, axes)), back, rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [8, 16, 64, 96, 320])
def test_max_level_is_pywavelets_default(name, size):
    assert wavelets.max_level((size, 2 * size), name) == pywt.dwt_max_level(size, pywt.Wavelet(name).dec_len)


@pytest.mark.parametrize("name", NAMES)
def test_perfect_reconstruction_and_orthogonality(name):
    x = jnp.asarray(_random((32, 64), True, seed=1), jnp.complex64)
    coeffs = wavelets.wavedec2(x, name, 3)
    np.testing.assert_allclose(np.asarray(wavelets.waverec2(coeffs, name)), np.asarray(x), atol=2e-6)
    energy = sum(float(jnp.sum(jnp.abs(c) ** 2)) for c in jax.tree_util.tree_leaves(coeffs))
    assert energy == pytest.approx(float(jnp.sum(jnp.abs(x) ** 2)), rel=1e-5)
    # adjoint (dot) test: <W x, c> = <x, W^H c> for random coefficients c
    rng = np.random.default_rng(2)
    c = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.standard_normal(a.shape), jnp.float32), coeffs)
    lhs = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(c), jax.tree_util.tree_leaves(coeffs)))
    rhs = jnp.vdot(wavelets.waverec2(c, name), x)
    assert complex(lhs) == pytest.approx(complex(rhs), rel=1e-5)


def test_transform_is_jittable_and_linear():
    f = jax.jit(lambda x: wavelets.waverec2(wavelets.wavedec2(x, "db4", 2), "db4"))
    x = jnp.asarray(_random((16, 16)), jnp.float32)
    np.testing.assert_allclose(np.asarray(f(x)), np.asarray(x), atol=2e-6)
    a = wavelets.wavedec2(2.0 * x + 1.0, "db2", 1)
    b = wavelets.wavedec2(x, "db2", 1)
    c = wavelets.wavedec2(jnp.ones_like(x), "db2", 1)
    for u, v, w in zip(*map(jax.tree_util.tree_leaves, (a, b, c))):
        np.testing.assert_allclose(np.asarray(u), np.asarray(2 * v + w), atol=1e-5)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="wavelet: expected one of"):
        wavelets.filters("sym5")
    with pytest.raises(ValueError, match="axis 1 of size 20 must be divisible by 2\\*\\*level"):
        wavelets.wavedec2(jnp.zeros((16, 20)), "haar", 3)
