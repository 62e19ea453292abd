"""Empirical NTKs against Jacobians from jax.jacfwd, NTK-vector products, the kernel-regime
predictor against explicit linear-model training, spectra against numpy.linalg.eigh, and the
Fourier-basis kernel against an explicit DFT matrix."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import expm

from sgdip_jax.networks import apply_network, get_network, init_network
from sgdip_jax.ntk import (
    KernelRegime,
    LinearMap,
    NullSpace,
    coupling,
    coupling_vp,
    dense_matrix,
    empirical_ntk_fn,
    fourier_kernel,
    fourier_real,
    fourier_real_t,
    gradient_descent,
    kernel_limit,
    lanczos_eigh,
    ntk_matrix,
    ntk_vp_fn,
    null_space_fraction,
    operator_map,
    randomized_eigh,
    sandwich,
)
from sgdip_jax.operators import MultiCoilMRI, fft2c


class TinyNet(nn.Module):
    """Conv -> GroupNorm -> ReLU -> 1x1 conv: per-sample, with several parameter leaves."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.GroupNorm(num_groups=1)(nn.Conv(3, (3, 3))(x)))
        return nn.Conv(2, (1, 1))(x)


@pytest.fixture(scope="module")
def tiny():
    net = TinyNet()
    x1 = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 3, 1))
    x2 = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 3, 1))
    params = net.init(jax.random.PRNGKey(2), x1)
    f = lambda p, x: net.apply(p, x)  # noqa: E731

    @jax.jit
    def jacobian(x):
        jac = jax.jacfwd(f)(params, x)
        out = f(params, x).shape
        return jnp.concatenate([leaf.reshape(out + (-1,)) for leaf in jax.tree.leaves(jac)], axis=-1)

    # Raw kernel J(x1) J(xb)^T, axes (a0..a3, b0..b3), in float64. The network acts per sample, so
    # one Jacobian of the concatenated batch holds both.
    j = np.asarray(jacobian(jnp.concatenate([x1, x2])), np.float64)
    j1, j2 = j[:2], j[2:]
    raw = {"same": np.einsum("abcdp,efghp->abcdefgh", j1, j1)}
    raw["cross"] = np.einsum("abcdp,efghp->abcdefgh", j1, j2)
    return f, params, x1, x2, raw


def expected_layout(raw, trace, diag):
    """neural-tangents' layout written out with explicit einsum letters: traced axes summed over
    i1 = i2 and divided by their size, diagonal axes once, the others interleaved."""
    a, b, res = list("abcd"), list("efgh"), []
    for i in range(4):
        if i in trace:
            b[i] = a[i]
        elif i in diag:
            b[i] = a[i]
            res.append(a[i])
        else:
            res += [a[i], b[i]]
    size = np.prod([raw.shape[i] for i in trace]) if trace else 1
    return np.einsum("".join(a + b) + "->" + "".join(res), raw) / size


SETTINGS = [
    ((), (), None, "cross"),  # full kernel, layout (N1, N2, H, H, W, W, C, C)
    ((-1,), (1,), 0, "cross"),  # trace + diagonal + per-sample vmap
    ((1, 2), (0,), None, "same"),  # two traced axes, diagonal over the batch
]


@pytest.mark.parametrize("implementation", [1, 2, 3])
@pytest.mark.parametrize("trace,diag,vmap_axes,which", SETTINGS)
def test_empirical_ntk_equals_jacobian_product(tiny, implementation, trace, diag, vmap_axes, which):
    f, params, x1, x2, raw = tiny
    fn = jax.jit(empirical_ntk_fn(f, trace, diag, vmap_axes, implementation, block_size=7))
    kernel = np.asarray(fn(x1, None if which == "same" else x2, params))
    expected = expected_layout(raw[which], tuple(t % 4 for t in trace), tuple(d % 4 for d in diag))
    assert kernel.shape == expected.shape
    np.testing.assert_allclose(kernel, expected, rtol=0, atol=2e-6 * np.abs(expected).max())


def test_layout_example_and_errors(tiny):
    f, params, x1, x2, _ = tiny
    kernel = jax.jit(empirical_ntk_fn(f, trace_axes=()))(x1, x2, params)
    assert kernel.shape == (2, 3, 4, 4, 3, 3, 2, 2)
    with pytest.raises(ValueError, match="implementation"):
        empirical_ntk_fn(f, implementation=0)
    with pytest.raises(ValueError, match="overlap"):
        empirical_ntk_fn(f, trace_axes=(-1,), diagonal_axes=(3,))(x1, None, params)
    with pytest.raises(ValueError, match="vmap_axes"):
        empirical_ntk_fn(f, vmap_axes=(0, 0, {}))


@pytest.fixture(scope="module")
def dip_unet():
    """A real DIP network (U-Net depth 1, GroupNorm) on an 8 x 8 two-channel image, and its kernel
    ``J J^T`` (float64) from ``jax.jacfwd``."""
    net = get_network("unet1", base=2, out_channels=2, norm="group")
    z = jax.random.uniform(jax.random.PRNGKey(3), (1, 8, 8, 2))
    variables = init_network(net, jax.random.PRNGKey(4), z)
    f = lambda p, x: apply_network(net, {**variables, "params": p}, x)[0]  # noqa: E731
    jac = jax.jit(jax.jacfwd(f))(variables["params"], z)
    J = np.concatenate([np.asarray(leaf, np.float64).reshape(128, -1) for leaf in jax.tree.leaves(jac)], axis=1)
    return f, variables["params"], z, J @ J.T


def test_ntk_matrix_and_vector_products(dip_unet):
    f, params, z, K_ref = dip_unet
    K = np.asarray(ntk_matrix(f, params, z, implementation=2, block_size=64))
    np.testing.assert_allclose(K, K_ref, rtol=0, atol=2e-6 * np.abs(K_ref).max())
    v = np.random.default_rng(0).standard_normal((1, 8, 8, 2)).astype(np.float32)
    vp = ntk_vp_fn(f, params, z)
    expected = K_ref @ v.ravel()
    np.testing.assert_allclose(np.asarray(vp(v)).ravel(), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert vp(v.ravel()).shape == (128,)
    with pytest.raises(ValueError, match="expected shape"):
        vp(np.zeros(5, np.float32))


def _linear_problem(rng, n, p, m, dtype=float):
    J = rng.standard_normal((n, p)).astype(dtype)
    A = rng.standard_normal((m, n)).astype(dtype)
    f0 = rng.standard_normal(n).astype(dtype)
    x_true = rng.standard_normal(n).astype(dtype)
    if dtype is complex:
        J, A, f0, x_true = (a + 1j * rng.standard_normal(a.shape) for a in (J, A, f0, x_true))
    return J, A, f0, x_true


@pytest.mark.parametrize("dtype", [float, complex])
def test_kernel_regime_matches_linear_model_training(dtype):
    """f(theta) = f0 + J theta trained by gradient descent on 1/2 ||A f - y||^2 (Wirtinger gradient
    J^H A^H r for complex); its kernel is J J^H, so the predictor must reproduce every iterate."""
    rng = np.random.default_rng(1)
    J, A, f0, x_true = _linear_problem(rng, n=12, p=20, m=5, dtype=dtype)
    y = A @ x_true
    regime = KernelRegime(J @ J.conj().T, A)
    eta = 1.5 / regime.lambda_max
    theta, trained = np.zeros(J.shape[1], J.dtype), []
    for _ in range(61):
        f = f0 + J @ theta
        trained.append(f)
        theta = theta - eta * J.conj().T @ (A.conj().T @ (A @ f - y))
    steps = np.arange(61)
    np.testing.assert_allclose(regime.outputs(f0, y, steps, eta, discrete=True), np.array(trained), atol=1e-10)
    residual = regime.residual(A @ f0 - y, steps, eta, discrete=True)
    np.testing.assert_allclose(residual, (A @ np.array(trained).T).T - y, atol=1e-10)


def test_kernel_regime_flow_limit_and_projector():
    rng = np.random.default_rng(2)
    J, A, f0, x_true = _linear_problem(rng, n=12, p=8, m=5)
    K = J @ J.T
    y = A @ x_true
    regime = KernelRegime(K, A)
    t = 0.7 / regime.lambda_max
    G = A @ K @ A.T
    np.testing.assert_allclose(regime.residual(A @ f0 - y, [t])[0], expm(-G * t) @ (A @ f0 - y), atol=1e-10)
    # f(t) = f(0) - K A^T G^+ (I - exp(-G t)) (A f(0) - y), written with scipy's expm and pinv.
    expected = f0 - K @ A.T @ np.linalg.pinv(G) @ (np.eye(5) - expm(-G * t)) @ (A @ f0 - y)
    np.testing.assert_allclose(regime.outputs(f0, y, [t])[0], expected, atol=1e-10)
    P = regime.projector()
    np.testing.assert_allclose(P @ P, P, atol=1e-10)
    limit = regime.limit(f0, y)
    np.testing.assert_allclose(limit - x_true, (np.eye(12) - P) @ (f0 - x_true), atol=1e-10)
    np.testing.assert_allclose(regime.outputs(f0, y, [1e6 / regime.eigvals[regime.keep][-1]])[0], limit, atol=1e-8)
    assert null_space_fraction(A, limit - x_true) == pytest.approx(1.0, abs=1e-12)
    assert null_space_fraction(A, A.T @ rng.standard_normal(5)) == pytest.approx(0.0, abs=1e-12)


def test_gradient_descent_of_linear_network_matches_prediction():
    """The network trainer on a linear 'network' reproduces the kernel-regime iterates (float32)."""
    rng = np.random.default_rng(3)
    J, A, f0, x_true = _linear_problem(rng, n=10, p=16, m=4)
    Jj, Aj, f0j = (jnp.asarray(a, jnp.float32) for a in (J, A, f0))

    amap = LinearMap(lambda v: Aj @ v, lambda w: Aj.T @ w, A.shape)
    regime = KernelRegime(J @ J.T, amap)
    eta = 1.0 / regime.lambda_max
    outs = gradient_descent(lambda th: f0j + Jj @ th, jnp.zeros(16), amap, A @ x_true, eta, [0, 3, 40])
    pred = regime.outputs(f0, A @ x_true, [0, 3, 40], eta, discrete=True)
    np.testing.assert_allclose(outs, pred, atol=1e-4 * np.abs(pred).max())


def test_matrix_free_kernel_regime_equals_the_dense_prediction(dip_unet):
    """Linearised training of a real U-Net (no kernel formed) against the closed-form kernel-regime
    iterates of its dense ``J J^T`` from ``jax.jacfwd``; the conjugate-residual limit against ``KernelRegime.limit``."""
    f, params, z, K = dip_unet
    rng = np.random.default_rng(5)
    A = rng.standard_normal((24, 128)) / np.sqrt(128)
    Aj = jnp.asarray(A, jnp.float32)
    amap = LinearMap(lambda v: Aj @ v, lambda w: Aj.T @ w, A.shape)
    flat = lambda p: f(p, z).reshape(-1)  # noqa: E731
    f0 = np.asarray(flat(params), np.float64)
    y = A @ rng.standard_normal(128)
    regime = KernelRegime(K, A)
    eta, steps = 1.0 / regime.lambda_max, [0, 1, 7, 60]
    pred = regime.outputs(f0, y, steps, eta, discrete=True)
    lin = gradient_descent(flat, params, amap, y, eta, steps, linearized=True)
    np.testing.assert_allclose(lin, pred, rtol=0, atol=1e-4 * np.abs(pred).max())
    nonlinear = gradient_descent(flat, params, amap, y, eta, steps)
    assert np.abs(nonlinear[-1] - pred[-1]).max() > 10 * np.abs(lin[-1] - pred[-1]).max()

    f_inf, rel = kernel_limit(ntk_vp_fn(f, params, z), amap, f0, y, maxiter=400, tol=1e-7)
    expected = regime.limit(f0, y)
    assert rel < 1e-3
    np.testing.assert_allclose(f_inf, expected, rtol=0, atol=2e-3 * np.abs(expected).max())


def test_null_space_of_single_coil_mri_is_the_unsampled_kspace():
    """For single-coil Cartesian MRI, null(A) is spanned by the unsampled frequencies, so the null-space
    fraction of ``e`` is ``||(1 - M) F e||^2 / ||e||^2`` (orthonormal centred FFT)."""
    rng = np.random.default_rng(6)
    mask = np.zeros((6, 6), np.float32)
    mask[:, [0, 2, 3]] = 1
    op = MultiCoilMRI.create(np.ones((1, 6, 6), np.complex64), mask)
    null = NullSpace(operator_map(op, (1, 6, 6, 2)))
    assert null.dim == 72 - 2 * 18
    e = rng.standard_normal((3, 72))
    k = np.asarray(fft2c(jnp.asarray(e.reshape(3, 6, 6, 2)[..., 0] + 1j * e.reshape(3, 6, 6, 2)[..., 1])))
    expected = np.sum(np.abs((1 - mask) * k) ** 2, axis=(1, 2)) / np.sum(e**2, axis=1)
    np.testing.assert_allclose(null.fraction(e), expected, rtol=1e-5)
    assert null.fraction(e[0]) == pytest.approx(expected[0], rel=1e-5)
    # Four coils blind to the first two image rows measure more numbers than the image has (m > n, the
    # eigh route): the null space is exactly those rows, whatever the mask.
    smaps = rng.standard_normal((4, 6, 6)) + 1j * rng.standard_normal((4, 6, 6))
    smaps[:, :2] = 0
    many = operator_map(MultiCoilMRI.create(smaps.astype(np.complex64), mask), (1, 6, 6, 2))
    assert many.shape[0] > many.shape[1]
    blind = np.sum(e.reshape(3, 6, 6, 2)[:, :2] ** 2, axis=(1, 2, 3)) / np.sum(e**2, axis=1)
    np.testing.assert_allclose(NullSpace(many).fraction(e), blind, rtol=1e-6)


@pytest.mark.parametrize("m", [4, 9])
def test_null_space_at_a_coarser_rcond_counts_the_small_singular_values(m):
    """``A = U diag(s) V^T`` with ``s = 1, 1e-2, 1e-4, 1e-8`` (wide: SVD route; tall: eigh route, whose
    floor of about 1e-7 here puts 1e-8 in the null space): :meth:`NullSpace.at` keeps the directions
    above ``rcond`` and the fraction of ``e = V[:, j]`` is 0 or 1 accordingly."""
    rng = np.random.default_rng(7)
    n = 6
    u, _ = np.linalg.qr(rng.standard_normal((m, 4)))
    v, _ = np.linalg.qr(rng.standard_normal((n, 4)))
    A = u @ np.diag([1.0, 1e-2, 1e-4, 1e-8]) @ v.T
    exact = NullSpace(A, rcond=1e-12)
    exact_dim = n - 4 if m < n else n - 3
    assert exact.dim == exact_dim
    for rcond, kept in ((1e-3, 2), (1e-1, 1)):
        coarse = exact.at(rcond)
        assert coarse.dim == n - kept and exact.dim == exact_dim
        np.testing.assert_allclose(coarse.fraction(v.T), [0.0] * kept + [1.0] * (4 - kept), atol=1e-9)
        np.testing.assert_allclose(coarse.rows @ coarse.rows.T, np.eye(kept), atol=1e-12)


def test_operator_map_is_real_representation():
    rng = np.random.default_rng(4)
    smaps = (rng.standard_normal((2, 4, 4)) + 1j * rng.standard_normal((2, 4, 4))).astype(np.complex64)
    mask = np.zeros((4, 4), np.float32)
    mask[:, [0, 2]] = 1
    op = MultiCoilMRI.create(smaps, mask)
    amap = operator_map(op, (1, 4, 4, 2))
    assert amap.shape == (2 * 2 * 8, 32)
    A = dense_matrix(amap)
    v = rng.standard_normal(32).astype(np.float32)
    image = v.reshape(4, 4, 2)
    y = np.asarray(op(jnp.asarray(image[..., 0] + 1j * image[..., 1])))
    kept = y[:, mask > 0].ravel()
    np.testing.assert_allclose(A @ v, np.concatenate([kept.real, kept.imag]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(dense_matrix(operator_map(op, (1, 4, 4, 2)))), A)
    w = rng.standard_normal(A.shape[0]).astype(np.float32)
    np.testing.assert_allclose(np.asarray(amap.rmatvec(w)), A.T @ w, atol=1e-5)
    single = dense_matrix(operator_map(MultiCoilMRI.create(np.ones((1, 4, 4)), mask), (1, 4, 4, 2)))
    np.testing.assert_allclose(single @ single.T, np.eye(single.shape[0]), atol=1e-6)


def _psd(rng, n, rank):
    B = rng.standard_normal((n, rank))
    decay = np.geomspace(1, 1e-2, rank)
    return (B * decay) @ B.T


@pytest.mark.parametrize("method", ["lanczos", "randomized"])
def test_top_eigenpairs_match_eigh(method):
    rng = np.random.default_rng(5)
    K = _psd(rng, 60, 30)
    w_ref, v_ref = np.linalg.eigh(K)
    w_ref, v_ref = w_ref[::-1][:6], v_ref[:, ::-1][:, :6]
    Kj = jnp.asarray(K, jnp.float32)
    if method == "lanczos":
        w, v = lanczos_eigh(lambda u: Kj @ u, 60, 6, num_iter=40)
    else:
        w, v = randomized_eigh(lambda u: Kj @ u, 60, 6, oversample=14, power_iters=6)
    np.testing.assert_allclose(np.asarray(w), w_ref, rtol=2e-4)
    overlap = np.abs(np.sum(np.asarray(v, np.float64) * v_ref, axis=0))
    np.testing.assert_allclose(overlap, 1.0, atol=2e-3)


def test_lanczos_through_breakdown_and_on_ntk(tiny):
    rng = np.random.default_rng(6)
    K = _psd(rng, 30, 8)  # rank 8: Lanczos with 20 steps breaks down after 8 and must restart
    w, _ = lanczos_eigh(lambda u: jnp.asarray(K, jnp.float32) @ u, 30, 4, num_iter=20)
    np.testing.assert_allclose(np.asarray(w), np.linalg.eigvalsh(K)[::-1][:4], rtol=1e-4)

    # Top eigenvalues of A K A^T for single-coil MRI from NTK-vector products, against the dense kernel.
    f, params, _, _, _ = tiny
    z = jax.random.normal(jax.random.PRNGKey(5), (1, 4, 4, 1))
    K = np.asarray(ntk_matrix(f, params, z, block_size=32), np.float64)
    mask = np.zeros((4, 4), np.float32)
    mask[:, [1, 2]] = 1
    amap = operator_map(MultiCoilMRI.create(np.ones((1, 4, 4)), mask), (1, 4, 4, 2))
    A = dense_matrix(amap)
    w, _ = lanczos_eigh(sandwich(ntk_vp_fn(f, params, z), amap), A.shape[0], 3, num_iter=12)
    np.testing.assert_allclose(np.asarray(w), np.linalg.eigvalsh(A @ K @ A.T)[::-1][:3], rtol=1e-3)


def test_fourier_kernel_against_dft_matrix():
    rng = np.random.default_rng(7)
    h, w = 4, 6
    n = h * w * 2
    K = _psd(rng, n, n)
    # F_r as an explicit real matrix: column j = F_r e_j, with numpy's FFT and the centred convention.
    eye = np.eye(n).reshape(n, h, w, 2)
    images = np.fft.ifftshift(eye[..., 0] + 1j * eye[..., 1], axes=(1, 2))
    spec = np.fft.fftshift(np.fft.fft2(images, norm="ortho"), axes=(1, 2))
    F = np.stack([spec.real, spec.imag], axis=-1).reshape(n, n).T
    np.testing.assert_allclose(F @ F.T, np.eye(n), atol=1e-12)
    K_hat = np.asarray(fourier_kernel(K, (h, w)))
    np.testing.assert_allclose(K_hat, F @ K @ F.T, atol=1e-5 * np.abs(K).max())
    # A kernel diagonal in the Fourier basis does not couple sampled and unsampled frequencies.
    mask = np.zeros((h, w))
    mask[:, :3] = 1
    diagonal = F.T @ np.diag(rng.random(n)) @ F
    assert coupling(fourier_kernel(diagonal, (h, w)), mask) == pytest.approx(0.0, abs=1e-6)
    assert coupling(K_hat, mask) > 0.1
    # ... and fft2c is the same transform as the one used here.
    x = rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))
    k = np.asarray(fft2c(jnp.asarray(x, jnp.complex64)))
    real = lambda a: np.stack([a.real, a.imag], -1).ravel()  # noqa: E731
    np.testing.assert_allclose(F @ real(x), real(k), atol=1e-5)


@pytest.mark.parametrize("channels", [1, 2])
def test_fourier_real_t_is_the_adjoint(channels):
    rng = np.random.default_rng(8)
    hw = (4, 6)
    x = jnp.asarray(rng.standard_normal(4 * 6 * channels), jnp.float32)
    k = jnp.asarray(rng.standard_normal(4 * 6 * 2), jnp.float32)
    lhs = float(jnp.dot(fourier_real(x, hw, channels), k))
    rhs = float(jnp.dot(x, fourier_real_t(k, hw, channels)))
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_matrix_free_coupling_equals_the_dense_value():
    """:func:`coupling_vp` from NTK-vector products of a small product U-Net against :func:`coupling`
    of its dense Fourier-basis kernel: exact with basis probes, close with Gaussian probes."""
    hw = (8, 8)
    net = get_network("unet1", base=4, norm="group", out_channels=2)
    z = jax.random.normal(jax.random.PRNGKey(3), (1, *hw, 2))
    params = init_network(net, jax.random.PRNGKey(4), z)["params"]
    f = lambda p, x: apply_network(net, {"params": p}, x)[0]  # noqa: E731
    mask = np.zeros(hw, np.float32)
    mask[:, [0, 3, 4, 6]] = 1
    dense = coupling(fourier_kernel(ntk_matrix(f, params, z, block_size=64), hw), mask)
    vp = ntk_vp_fn(f, params, z)
    assert coupling_vp(vp, mask, hw) == pytest.approx(dense, rel=1e-4)
    assert coupling_vp(vp, mask, hw, probes=256, key=jax.random.PRNGKey(0)) == pytest.approx(dense, rel=0.05)
    with pytest.raises(ValueError, match="sampled and unsampled"):
        coupling_vp(vp, np.ones(hw), hw)
