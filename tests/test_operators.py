"""Forward operators: adjointness, agreement with SigPy and closed-form DFTs, norms, jit/vmap, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sigpy.mri
from hypothesis import given, settings
from hypothesis import strategies as st

from sgdip_jax.channels import from_channels, n_channels, to_channels
from sgdip_jax.operators import Inpainting, LinearOperator, MultiCoilMRI, fft2c, ifft2c


def _crandn(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _mri_problem(seed, coils, height, width, line_mask):
    rng = np.random.default_rng(seed)
    smaps = _crandn(rng, (coils, height, width))
    mask_shape = (1, width) if line_mask else (height, width)
    mask = (rng.uniform(size=mask_shape) < 0.6).astype(np.float32)
    mask.flat[0] = 1.0  # never empty
    return rng, smaps, mask


def _dot_error(x, y, ax, ahy):
    """|<A x, y> - <x, A^H y>| / (|A x| |y|) from ``A x`` and ``A^H y``, in float64 on the host."""
    ax, ahy = np.asarray(ax, np.complex128), np.asarray(ahy, np.complex128)
    x, y = np.asarray(x, np.complex128), np.asarray(y, np.complex128)
    lhs, rhs = np.vdot(y.ravel(), ax.ravel()), np.vdot(ahy.ravel(), x.ravel())
    return abs(lhs - rhs) / (np.linalg.norm(ax) * np.linalg.norm(y))


# A few (C, H, W), odd and even, so compiled kernels are reused across hypothesis examples.
mri_cases = dict(
    seed=st.integers(0, 2**31),
    shape=st.sampled_from([(1, 8, 8), (3, 7, 5), (4, 9, 12), (2, 16, 11)]),
    line_mask=st.booleans(),
)
_forward_adjoint = jax.jit(lambda op, x, y: (op(x), op.adjoint(y)))


@settings(max_examples=25, deadline=None)
@given(**mri_cases)
def test_mri_dot_test(seed, shape, line_mask):
    rng, smaps, mask = _mri_problem(seed, *shape, line_mask)
    op = MultiCoilMRI.create(smaps, mask)
    x, y = _crandn(rng, shape[1:]), _crandn(rng, shape)
    assert _dot_error(x, y, *_forward_adjoint(op, x, y)) < 1e-5


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), shape=st.sampled_from([(5, 7), (16, 16)]), colour=st.booleans())
def test_inpainting_dot_test(seed, shape, colour):
    height, width = shape
    rng = np.random.default_rng(seed)
    mask = (rng.uniform(size=(height, width)) < 0.5).astype(np.float32)
    mask.flat[0] = 1.0
    op = Inpainting.create(mask, channels=3 if colour else None)
    shape = (height, width, 3) if colour else (height, width)
    assert op.image_shape == shape
    x, y = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    assert _dot_error(x, y, *_forward_adjoint(op, x, y)) < 1e-5


@settings(max_examples=12, deadline=None)
@given(**mri_cases)
def test_mri_matches_sigpy_sense(seed, shape, line_mask):
    """Same maps, mask as SigPy weights (0/1, so its sqrt is itself), same centred orthonormal FFT."""
    rng, smaps, mask = _mri_problem(seed, *shape, line_mask)
    op = MultiCoilMRI.create(smaps, mask)
    ref = sigpy.mri.linop.Sense(smaps.astype(np.complex128), weights=np.broadcast_to(mask, shape[1:]))
    x, y = _crandn(rng, shape[1:]), _crandn(rng, shape)
    fwd, adj = map(np.asarray, _forward_adjoint(op, x, y))
    fwd_ref, adj_ref = ref(x.astype(np.complex128)), ref.H(y.astype(np.complex128))
    assert np.linalg.norm(fwd - fwd_ref) <= 1e-5 * np.linalg.norm(fwd_ref)
    assert np.linalg.norm(adj - adj_ref) <= 1e-5 * np.linalg.norm(adj_ref)


def _centred_dft(n):
    """Unitary DFT with indices centred at n // 2:
    F[k, j] = exp(-2 pi i (k - n//2)(j - n//2) / n) / sqrt(n)."""
    idx = np.arange(n) - n // 2
    return np.exp(-2j * np.pi * np.outer(idx, idx) / n) / np.sqrt(n)


@pytest.mark.parametrize("shape", [(8, 8), (7, 5), (2, 6, 9)])
def test_fft2c_is_the_centred_unitary_dft(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    fh, fw = _centred_dft(shape[-2]), _centred_dft(shape[-1])
    expected = np.einsum("ka,...ab,lb->...kl", fh, x, fw)
    assert np.allclose(fft2c(jnp.asarray(x, jnp.complex64)), expected, atol=1e-5)
    assert np.allclose(ifft2c(jnp.asarray(expected, jnp.complex64)), x, atol=1e-5)
    # and numpy's fftshift(fft2(ifftshift(x), norm="ortho"))
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    assert np.allclose(expected, ref)


def _dense(op):
    """The matrix of ``op`` acting on the flattened image (columns = images of basis vectors)."""
    n = int(np.prod(op.image_shape))
    basis = jnp.eye(n, dtype=op.image_dtype).reshape((n, *op.image_shape))
    return np.asarray(jax.vmap(op)(basis)).reshape(n, -1).T


def test_norm_matches_largest_singular_value():
    _, smaps, mask = _mri_problem(3, coils=2, height=6, width=5, line_mask=False)
    op = MultiCoilMRI.create(smaps, mask)
    sigma = np.linalg.svd(_dense(op), compute_uv=False)[0]
    assert float(jax.jit(lambda op: op.norm(iters=300))(op)) == pytest.approx(sigma, rel=1e-4)
    inpaint = Inpainting.create(np.array([[1, 0], [0, 1]], np.float32), channels=3)
    sigma = np.linalg.svd(_dense(inpaint), compute_uv=False)[0]
    assert sigma == pytest.approx(1.0) and float(inpaint.norm()) == pytest.approx(1.0, rel=1e-5)


def _apply_all(op, x, y):
    return op(x), op.adjoint(y), op.normal(x), op.norm()


def test_jit_and_vmap_over_operators():
    """A batch of slices, each with its own maps and mask (one (H, W), stacked as a pytree)."""
    ops = [MultiCoilMRI.create(*_mri_problem(s, 3, 8, 6, line_mask=False)[1:]) for s in range(3)]
    batch = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ops)
    rng = np.random.default_rng(1)
    xs, ys = _crandn(rng, (3, 8, 6)), _crandn(rng, (3, 3, 8, 6))
    batched = jax.jit(jax.vmap(_apply_all))(batch, xs, ys)
    single = jax.jit(_apply_all)
    for i, op in enumerate(ops):
        for got, want in zip(batched, single(op, xs[i], ys[i])):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)
    fwd, adj, normal, norms = batched
    np.testing.assert_allclose(normal, jax.vmap(lambda op, y: op.adjoint(y))(batch, fwd), atol=1e-5)
    assert not np.allclose(norms[0], norms[1])
    # create() works on traced arrays too (value checks are skipped there)
    traced = jax.jit(lambda s, m, x: MultiCoilMRI.create(s, m)(x))(ops[0].smaps, ops[0].mask, xs[0])
    np.testing.assert_allclose(traced, fwd[0], atol=1e-5)


def test_channels_round_trip_and_the_operator_interface():
    _, smaps, mask = _mri_problem(0, 2, 4, 5, line_mask=True)
    op = MultiCoilMRI.create(smaps, mask)
    assert isinstance(op, LinearOperator) and isinstance(Inpainting.create(np.ones((4, 5))), LinearOperator)
    x = _crandn(np.random.default_rng(0), (4, 5))
    assert to_channels(x, op).shape == (4, 5, 2)
    np.testing.assert_array_equal(from_channels(to_channels(x, op), op), x)
    grey, colour = Inpainting.create(np.ones((4, 5))), Inpainting.create(np.ones((4, 5)), channels=3)
    assert to_channels(jnp.ones((4, 5)), grey).shape == (4, 5, 1) and n_channels(grey) == 1
    assert to_channels(jnp.ones((4, 5, 3)), colour).shape == (4, 5, 3) and n_channels(colour) == 3


def test_create_errors():
    smaps = np.ones((2, 6, 5), np.complex64)
    with pytest.raises(ValueError, match=r"smaps: expected shape \(C, H, W\)"):
        MultiCoilMRI.create(smaps[0], np.ones((6, 5)))
    with pytest.raises(ValueError, match=r"mask: expected shape \(6, 5\) or \(1, 5\).*got \(5, 6\)"):
        MultiCoilMRI.create(smaps, np.ones((5, 6)))
    with pytest.raises(ValueError, match=r"mask: expected shape .*got \(2, 5\)"):
        MultiCoilMRI.create(smaps, np.ones((2, 5)))
    with pytest.raises(ValueError, match="mask.*empty"):
        MultiCoilMRI.create(smaps, np.zeros((1, 5)))
    for bad in (np.nan, np.inf):
        broken = smaps.copy()
        broken[1, 2, 3] = bad
        with pytest.raises(ValueError, match="smaps.*NaN or Inf"):
            MultiCoilMRI.create(broken, np.ones((6, 5)))
    with pytest.raises(ValueError, match=r"mask: expected shape \(H, W\)"):
        Inpainting.create(np.ones((4, 5, 3)))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), missing=st.sampled_from([0.3, 0.5, 0.8]), colour=st.booleans())
def test_inpainting_fill_is_normalised_gaussian_convolution(seed, missing, colour):
    """Against scipy.ndimage: the missing pixels are (g * (m y)) / (g * m) with g of std
    1/sqrt(mean m) where enough measured weight is near; measured pixels and constants are kept."""
    from scipy import ndimage

    from sgdip_jax.operators.masks import bernoulli_pixels

    rng = np.random.default_rng(seed)
    mask = bernoulli_pixels((24, 20), missing, seed=seed)[0]
    op = Inpainting.create(mask, channels=3 if colour else None)
    x = rng.uniform(size=op.image_shape).astype(np.float32)
    fill = np.asarray(op.fill(op(x)))
    m = np.asarray(op.mask)
    np.testing.assert_array_equal(fill[m > 0], x[m > 0])
    sigma = 1.0 / np.sqrt(mask.mean())
    blur = [sigma, sigma, 0][: m.ndim]
    radius = [(n - 1) // 2 for n in m.shape[:2]] + [0] * (m.ndim - 2)
    kw = {"mode": "constant", "radius": radius}
    weight = ndimage.gaussian_filter(m.astype(np.float64), blur, **kw)
    expected = ndimage.gaussian_filter(m * x.astype(np.float64), blur, **kw) / np.maximum(weight, 1e-12)
    first = (m == 0) & (weight > 0.1 * weight.max())
    np.testing.assert_allclose(fill[first], expected[first], rtol=1e-4, atol=1e-5)
    constant = np.asarray(op.fill(op(jnp.full(op.image_shape, 0.7))))
    np.testing.assert_allclose(constant, 0.7, rtol=1e-5)


def test_inpainting_fill_reaches_a_large_hole():
    from sgdip_jax.operators.masks import box

    op = Inpainting.create(box((32, 32), 20)[0])
    x = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    fill = np.asarray(op.fill(op(x)))
    assert np.all(np.isfinite(fill)) and fill.min() >= 0 and fill.max() <= 1
    assert abs(fill[16, 16] - x[16, 16]) < 0.1  # the centre of the hole takes the surrounding mean


@settings(max_examples=8, deadline=None)
@given(**mri_cases)
def test_mri_fill_is_least_squares_by_conjugate_gradients(seed, shape, line_mask):
    """``fill``'s CG steps (CGNR) minimise ``||A x - y||`` over growing Krylov spaces: the residual
    never rises and one step is ``A^H y`` scaled."""
    rng, smaps, mask = _mri_problem(seed, *shape, line_mask)
    op = MultiCoilMRI.create(smaps, mask)
    y = np.asarray(op(_crandn(rng, shape[1:]))) + 0.1 * _crandn(rng, shape) * np.asarray(op.mask)
    residuals = [float(np.linalg.norm(np.asarray(op(op.fill(y, k))) - y)) for k in range(1, 7)]
    assert all(b <= a * (1 + 1e-4) for a, b in zip(residuals, residuals[1:]))
    one, zero_filled = np.asarray(op.fill(y, 1)).ravel(), np.asarray(op.adjoint(y)).ravel()
    np.testing.assert_allclose(
        one, np.vdot(zero_filled, one) / np.vdot(zero_filled, zero_filled) * zero_filled, atol=1e-5
    )


def test_mri_fill_converges_to_the_least_squares_image():
    """Enough CG steps reach the least-squares solution of the dense system (``numpy.linalg.lstsq``)
    where the coils resolve the aliasing (``A`` of full column rank)."""
    rng, smaps, mask = _mri_problem(7, 4, 8, 6, line_mask=True)
    op = MultiCoilMRI.create(smaps, mask)
    dense = _dense(op)
    assert np.linalg.matrix_rank(dense) == dense.shape[1]
    y = np.asarray(op(_crandn(rng, (8, 6)))) + 0.1 * _crandn(rng, (4, 8, 6)) * np.asarray(op.mask)
    solution = np.linalg.lstsq(dense, y.ravel(), rcond=None)[0]
    np.testing.assert_allclose(np.asarray(op.fill(y, 40)).ravel(), solution, atol=1e-3 * np.abs(solution).max())


def test_mri_fill_with_every_entry_sampled_is_the_adjoint():
    """``sum_c |S_c|^2 = 1`` and a full mask make ``A^H A = I``: the first CG step is exact."""
    rng, smaps, _ = _mri_problem(5, 3, 8, 6, line_mask=False)
    smaps = smaps / np.sqrt(np.sum(np.abs(smaps) ** 2, axis=0))
    op = MultiCoilMRI.create(smaps, np.ones((8, 6), np.float32))
    y = _crandn(rng, (3, 8, 6))
    np.testing.assert_allclose(op.fill(y), op.adjoint(y), atol=1e-5)
