"""Tests for sgdip_jax.networks: reference parameter counts, shapes, determinism, gradients,
BatchNorm state threading, per-sample functions without batch statistics, jit/vmap, resizing."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgdip_jax.networks import (
    NETWORKS,
    ConvDecoder,
    DeepDecoder,
    SkipNet,
    UNet,
    apply_network,
    decoders,
    get_network,
    init_network,
    layers,
    network_input_shape,
    param_count,
    registry,
    skip,
    unet,
    with_image_size,
)

# XLA compiles the default threefry PRNG slowly on CPU; the tests that run networks use the "rbg"
# implementation (test_default_prng_init_is_deterministic covers the default one).
KEY = jax.random.key(0, impl="rbg")
HW = (16, 12)
# Compiling dominates the running time of these tiny networks; skip LLVM's expensive passes.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# Tiny variants of every registered family (what actually runs in the tests).
TINY = {
    "unet2": dict(base=4),
    "skip": dict(num_channels_down=(4, 8), num_channels_up=(4, 8), num_channels_skip=(2, 0)),
    "deep_decoder": dict(features=6, num_layers=3),
    "conv_decoder": dict(features=6, num_layers=3, in_size=(4, 3)),
}


def tiny(name: str, hw: tuple[int, int], **kw) -> tuple:
    """Tiny module set up for an ``hw`` output and a random input (batch 2) of the shape it needs."""
    net = with_image_size(get_network(name, out_channels=2, **TINY[name], **kw), hw)
    shape = network_input_shape(net, hw, 3)
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, *shape)), jnp.float32)
    return net, x


def loss_and_grads(net, variables, x):
    """One training step's quantities: ``(out, new_variables, grad_params, grad_x)`` of
    ``sum(sin(3 f(x)))`` in train mode."""

    def loss(params, z):
        out, new_vars = apply_network(net, {**variables, "params": params}, z, True)
        return jnp.sum(jnp.sin(3.0 * out)), (out, new_vars)

    (_, (out, new_vars)), (g_params, g_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables["params"], x
    )
    return out, new_vars, g_params, g_x


@functools.cache
def compiled(name: str, norm: str = "batch") -> tuple:
    """``(net, x, init, apply, step)``: jit-compiled ``init_network``, ``apply_network`` and
    ``loss_and_grads`` for a tiny network, shared by the tests (compilation dominates their time)."""
    net, x = tiny(name, HW, norm=norm)
    init = jit(functools.partial(init_network, net))
    apply = jit(functools.partial(apply_network, net), static_argnums=2)
    step = jit(functools.partial(loss_and_grads, net))
    return net, x, init, apply, step


def shape_params(net, x_shape) -> dict:
    """Variables as shape structs (nothing is materialised)."""
    return jax.eval_shape(functools.partial(init_network, net), KEY, jax.ShapeDtypeStruct(x_shape, jnp.float32))


# ---------------------------------------------------------------------------------------------
# Parameter counts


@pytest.mark.parametrize("name,expected", [("unet4", 17_266_882), ("unet5", 69_185_218)])
def test_unet_param_count_matches_reference(name, expected):
    variables = shape_params(get_network(name, out_channels=2), (1, 64, 64, 2))
    assert param_count(variables) == expected
    assert "batch_stats" in variables


def test_skip_param_count_matches_original_layer_list():
    # Original DIP skip(): per scale with input depth d: skip conv d->4 (+bias) + BN(4); two down convs
    # d->128, 128->128 (3x3, +bias) + 2 BN; BN(4+128) on the concatenation; up conv 132->128 (3x3)
    # + BN; 1x1 conv 128->128 + BN; finally a 1x1 conv 128->3. BN has 2 parameters per channel.
    def scale(d):
        return (
            (d * 4 + 4 + 2 * 4)
            + (d * 128 * 9 + 128 + 2 * 128)
            + (128 * 128 * 9 + 128 + 2 * 128)
            + 2 * 132
            + (132 * 128 * 9 + 128 + 2 * 128)
            + (128 * 128 + 128 + 2 * 128)
        )

    expected = scale(32) + 4 * scale(128) + 128 * 3 + 3
    assert param_count(shape_params(get_network("skip"), (1, 64, 64, 32))) == expected


def test_deep_decoder_param_count_is_heckels():
    # 6 bias-free 1x1 convs (C_in->128, then 128->128), 6 affine BNs, a bias-free 1x1 conv 128->3.
    expected = 32 * 128 + 5 * 128 * 128 + 6 * 2 * 128 + 128 * 3
    assert param_count(shape_params(get_network("deep_decoder"), (1, 2, 2, 32))) == expected


# ---------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("hw", [(64, 64), (96, 80), (640, 372)])
def test_output_shape_matches_image(name, hw):
    net, x = tiny(name, hw)
    out = jax.eval_shape(lambda v: apply_network(net, v, x, True)[0], shape_params(net, x.shape))
    assert out.shape == (2, *hw, 2)


def test_full_size_unet_on_fastmri_shape():
    net = get_network("unet5", out_channels=2)
    variables = shape_params(net, (1, 640, 372, 2))
    out = jax.eval_shape(lambda v: apply_network(net, v, jnp.zeros((1, 640, 372, 2)), True)[0], variables)
    assert out.shape == (1, 640, 372, 2)


@pytest.mark.parametrize("depth", range(1, 7))
def test_unet_depths_and_transposed_upsampling(depth):
    for bilinear in (True, False):
        net = get_network("unet", depth=depth, base=2, bilinear=bilinear, out_channels=1)
        variables = shape_params(net, (1, 65, 70, 2))
        out = jax.eval_shape(lambda v, net=net: net.apply(v, jnp.zeros((1, 65, 70, 2))), variables)
        assert out.shape == (1, 65, 70, 1)
    with pytest.raises(ValueError, match="H, W >= 64"):
        shape_params(UNet(depth=6, base=2), (1, 63, 70, 2))


def test_unet_widths_follow_reference_family():
    params = shape_params(UNet(depth=3, base=8, out_channels=2), (1, 32, 32, 2))["params"]
    blocks = [params[f"DoubleConv_{i}"] for i in range(7)]
    widths = [b[c]["kernel"].shape[-1] for b in blocks for c in ("Conv_0", "Conv_1")]
    widths.append(params["Conv_0"]["kernel"].shape[-1])
    # inc 8,8; down 16,16; 32,32; bottom 32,32 (halved); up: mid in/2, out halved except last; 1x1 out.
    assert widths == [8, 8, 16, 16, 32, 32, 32, 32, 32, 16, 16, 8, 8, 8, 2]


@pytest.mark.parametrize(
    "kw",
    [
        dict(downsampling="avg", upsampling="bilinear", padding="reflection"),
        dict(downsampling="max", need1x1_up=False, need_sigmoid=False, filter_size_down=5),
    ],
)
def test_skip_variants_keep_size(kw):
    net, x = tiny("skip", (37, 51), **kw)
    out = jax.eval_shape(lambda v: net.apply(v, x), shape_params(net, x.shape))
    assert out.shape == (2, 37, 51, 2)


# ---------------------------------------------------------------------------------------------
# Running networks: determinism, gradients, BatchNorm state, per-sample functions, jit/vmap


def tree_equal(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        bool(jnp.array_equal(u, v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def test_default_prng_init_is_deterministic():
    net = DeepDecoder(num_layers=1, features=2, out_channels=1)
    x = jnp.ones((1, 4, 4, 1))
    init = jit(functools.partial(init_network, net))
    assert tree_equal(init(jax.random.PRNGKey(3), x), init(jax.random.PRNGKey(3), x))
    assert not tree_equal(init(jax.random.PRNGKey(3), x), init(jax.random.PRNGKey(4), x))


@pytest.mark.parametrize("name", sorted(TINY))
def test_determinism_and_gradient_flow(name):
    net, x, init, _, step = compiled(name)
    variables = init(KEY, x)
    assert tree_equal(variables, init(KEY, x))
    assert not tree_equal(variables["params"], init(jax.random.key(7, impl="rbg"), x)["params"])

    _, _, g_params, g_x = step(variables, x)
    for path, g in jax.tree_util.tree_leaves_with_path(g_params):
        name_ = jax.tree_util.keystr(path)
        assert bool(jnp.all(jnp.isfinite(g))), name_
        if "kernel" in name_ or "scale" in name_:
            assert float(jnp.abs(g).max()) > 0, name_
    assert float(jnp.abs(g_x).max()) > 0


def test_batchnorm_stats_updated_only_in_train_mode():
    net, x, init, apply, _ = compiled("unet2")
    variables = init(KEY, x)
    out_eval, same = apply(variables, x, False)
    assert tree_equal(same, variables)
    out_train, updated = apply(variables, x, True)
    assert set(updated) == {"params", "batch_stats"}
    assert tree_equal(updated["params"], variables["params"])
    assert not np.allclose(out_eval, out_train)

    # PyTorch momentum 0.1: running_mean = 0.9 * 0 + 0.1 * batch mean of the first conv's output
    # (Flax keeps the biased batch variance).
    first = variables["params"]["DoubleConv_0"]["Conv_0"]
    conv = (
        jax.lax.conv_general_dilated(
            x, first["kernel"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        + first["bias"]
    )
    stats = updated["batch_stats"]["DoubleConv_0"]["Norm_0"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["mean"], 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-4)

    # Eval mode uses the running averages: once they have converged to this batch's statistics,
    # the eval output equals the train output.
    converged = updated
    for _ in range(200):
        converged = apply(converged, x, True)[1]
    np.testing.assert_allclose(apply(converged, x, False)[0], out_train, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name,norm", [(n, "group") for n in sorted(TINY)] + [("deep_decoder", "none")])
def test_norms_without_batch_statistics_are_per_sample(name, norm):
    net, x, init, apply, _ = compiled(name, norm)
    variables = init(KEY, x)
    assert set(variables) == {"params"}
    out, same = apply(variables, x, True)
    assert tree_equal(same, variables)
    out2, _ = apply(variables, x.at[1].set(-x[1]), True)
    np.testing.assert_array_equal(out2[0], out[0])
    assert not np.allclose(out2[1], out[1])


@pytest.mark.parametrize("name", sorted(TINY))
def test_norm_none_has_no_norm_parameters(name):
    net, x = tiny(name, HW, norm="none")
    variables = shape_params(net, x.shape)
    assert set(variables) == {"params"}
    assert not any("Norm" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(variables))


@pytest.mark.parametrize("name", sorted(TINY))
def test_jit_and_vmap_over_independent_networks(name):
    """A batch of independent networks (one per slice) under jit(vmap(.)) equals the per-network
    computations: init and the whole training step for the U-Net, the train-mode forward pass for
    the others (their gradients are covered above; vmap commutes with grad)."""
    net, x, init, apply, step = compiled(name)
    xs = jnp.stack([x, 2 * x, -x])
    if name == "unet2":
        stacked = jit(jax.vmap(functools.partial(init_network, net)))(jax.random.split(KEY, 3), xs)
        singles = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(3)]
        assert not tree_equal(singles[0]["params"], singles[1]["params"])
        batched, single = jit(jax.vmap(functools.partial(loss_and_grads, net))), step
    else:
        singles = [init(k, xs[i]) for i, k in enumerate(jax.random.split(KEY, 3))]
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *singles)
        batched = jit(jax.vmap(lambda v, z: apply_network(net, v, z, True)))
        single = functools.partial(apply, train=True)
    results = batched(stacked, xs)
    assert results[0].shape == (3, 2, *HW, 2)
    flat = lambda tree: np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(tree)])
    for i in range(3):
        # Relative L2 error per output: gradients of conv biases followed by BatchNorm are pure
        # rounding noise, so elementwise tolerances are meaningless for them.
        for a, b in zip(results, single(singles[i], xs[i])):
            a_i, b = flat(jax.tree.map(lambda leaf, i=i: leaf[i], a)), flat(b)
            assert np.linalg.norm(a_i - b) <= 1e-4 * np.linalg.norm(b)


def test_normal002_init():
    net = UNet(depth=1, base=16, weight_init="normal002")
    variables = jit(functools.partial(init_network, net))(KEY, jnp.zeros((1, 8, 8, 2)))
    kernels = [leaf for p, leaf in jax.tree_util.tree_leaves_with_path(variables["params"]) if "kernel" in str(p)]
    biases = [leaf for p, leaf in jax.tree_util.tree_leaves_with_path(variables["params"]) if "bias" in str(p)]
    big = np.concatenate([np.ravel(k) for k in kernels])
    assert abs(big.std() - 0.02) < 0.002 and abs(big.mean()) < 0.002
    assert all(not np.any(b) for b in biases)


# ---------------------------------------------------------------------------------------------
# Resizing conventions


def align_corners_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Direct bilinear evaluation at align-corners positions of one (H, W) image."""
    h, w = img.shape
    out = np.empty((out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            y = i * (h - 1) / (out_h - 1) if out_h > 1 else 0.0
            x = j * (w - 1) / (out_w - 1) if out_w > 1 else 0.0
            y0, x0 = min(int(y), h - 1), min(int(x), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            ty, tx = y - y0, x - x0
            out[i, j] = (
                (1 - ty) * (1 - tx) * img[y0, x0]
                + (1 - ty) * tx * img[y0, x1]
                + ty * (1 - tx) * img[y1, x0]
                + ty * tx * img[y1, x1]
            )
    return out


@pytest.mark.parametrize("hw", [(5, 7), (1, 4), (6, 6)])
def test_align_corners_upsampling_matches_closed_form(hw):
    img = np.random.default_rng(0).normal(size=hw)
    up = layers.upsample2_align_corners(jnp.asarray(img, jnp.float32)[None, :, :, None])
    np.testing.assert_allclose(up[0, :, :, 0], align_corners_reference(img, 2 * hw[0], 2 * hw[1]), atol=1e-5)
    # Corners are reproduced exactly and a linear ramp stays a linear ramp.
    ramp = np.add.outer(np.arange(hw[0]), 10 * np.arange(hw[1])).astype(np.float32)
    up = np.asarray(layers.upsample2_align_corners(jnp.asarray(ramp)[None, :, :, None]))[0, :, :, 0]
    yy = np.linspace(0, hw[0] - 1, 2 * hw[0]) if hw[0] > 1 else np.zeros(2)
    np.testing.assert_allclose(up, np.add.outer(yy, 10 * np.linspace(0, hw[1] - 1, 2 * hw[1])), atol=1e-4)


def test_resizing_matches_torch_interpolate():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    img = np.random.default_rng(1).normal(size=(2, 3, 5, 7)).astype(np.float32)  # NCHW
    nhwc = jnp.asarray(img.transpose(0, 2, 3, 1))
    to_nchw = lambda a: np.asarray(a).transpose(0, 3, 1, 2)
    t = torch.from_numpy(img)
    ref = F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=True).numpy()
    np.testing.assert_allclose(to_nchw(layers.upsample2_align_corners(nhwc)), ref, atol=1e-5)
    ref = F.interpolate(t, size=(11, 6), mode="bilinear", align_corners=True).numpy()
    np.testing.assert_allclose(to_nchw(layers.resize_align_corners(nhwc, (11, 6))), ref, atol=1e-5)
    ref = F.interpolate(t, size=(10, 14), mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(to_nchw(layers.resize_half_pixel_bilinear(nhwc, (10, 14))), ref, atol=1e-5)
    ref = F.interpolate(t, size=(9, 17), mode="nearest").numpy()
    np.testing.assert_array_equal(to_nchw(layers.resize_nearest(nhwc, (9, 17))), ref)


def test_nearest_x2_repeats_pixels_and_pad_or_crop():
    x = jnp.arange(12.0).reshape(1, 3, 4, 1)
    np.testing.assert_array_equal(layers.resize_nearest(x, (6, 8))[0, :, :, 0], np.kron(x[0, :, :, 0], np.ones((2, 2))))
    padded = layers.pad_or_crop_to(x, (6, 5))
    assert padded.shape == (1, 6, 5, 1)
    np.testing.assert_array_equal(padded[0, 1:4, 0:4, 0], x[0, :, :, 0])
    np.testing.assert_array_equal(layers.pad_or_crop_to(padded, (3, 4)), x)


def test_conv_decoder_schedule_is_geometric():
    sizes = decoders.geometric_sizes((8, 4), (640, 368), 8)
    assert len(sizes) == 7 and sizes[-1] == (640, 368)
    ratios = np.array(sizes[1:-1], float) / np.array(sizes[:-2], float)
    np.testing.assert_allclose(ratios, np.broadcast_to([80 ** (1 / 7), 92 ** (1 / 7)], ratios.shape), rtol=0.1)


# ---------------------------------------------------------------------------------------------
# Registry and errors


def test_registry_names_and_errors():
    assert {"unet", "skip", "deep_decoder", "conv_decoder", *(f"unet{d}" for d in range(1, 7))} == set(NETWORKS)
    assert get_network("unet3").depth == 3 and isinstance(get_network("unet", depth=2), UNet)
    assert isinstance(get_network("skip"), SkipNet)
    assert isinstance(get_network("deep_decoder"), DeepDecoder)
    assert get_network("conv_decoder", out_size=[32, 16]).out_size == (32, 16)
    with pytest.raises(ValueError, match="conv_decoder.*unet6"):
        get_network("resnet")
    with pytest.raises(ValueError, match="nonsense"):
        get_network("unet4", nonsense=1)
    with pytest.raises(ValueError, match="norm"):
        init_network(UNet(depth=1, norm="layer"), KEY, jnp.zeros((1, 8, 8, 2)))
    with pytest.raises(ValueError, match="out_size"):
        init_network(ConvDecoder(), KEY, jnp.zeros((1, 8, 8, 2)))


def test_network_input_shape():
    assert network_input_shape(get_network("unet4"), (640, 372), 2) == (640, 372, 2)
    assert network_input_shape(get_network("deep_decoder"), (64, 96), 32) == (2, 3, 32)
    with pytest.raises(ValueError, match="with_image_size"):
        network_input_shape(get_network("deep_decoder"), (640, 372), 32)
    dd = with_image_size(get_network("deep_decoder"), (640, 372))
    assert network_input_shape(dd, (640, 372), 32) == (20, 12, 32)
    with pytest.raises(ValueError, match="out_size"):
        network_input_shape(dd, (64, 64), 32)
    cd = with_image_size(get_network("conv_decoder", in_size=(8, 4)), (640, 368))
    assert network_input_shape(cd, (640, 368), 2) == (8, 4, 2)
    assert with_image_size(get_network("skip"), (5, 5)) == get_network("skip")


@pytest.mark.parametrize(
    "module,source", [(unet, "Ronneberger"), (skip, "Ulyanov"), (decoders, "Heckel & Hand"), (decoders, "Darestani")]
)
def test_module_docstrings_state_architecture_and_source(module, source):
    assert source in module.__doc__ and len(module.__doc__.split()) > 60
    assert registry.__doc__
