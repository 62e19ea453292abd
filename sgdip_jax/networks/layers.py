"""Building blocks shared by the networks: normalisation choice, weight initialisation, resizing
(align-corners and half-pixel bilinear, PyTorch-style nearest), pad/crop to a target size, and
zero/reflection padded convolution.

All tensors are real and channels-last ``(B, H, W, C)``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..config import check_choice

NORMS = ("batch", "group", "none")
INITS = ("default", "normal002")
GROUPNORM_MAX_GROUPS = 32

# PyTorch BatchNorm2d: running = (1 - 0.1) * running + 0.1 * batch, eps 1e-5.
# Flax's momentum is the weight of the old value, hence 0.9.
BATCHNORM_MOMENTUM = 0.9
NORM_EPS = 1e-5


def conv_inits(init: str) -> dict:
    """Keyword arguments ``kernel_init``/``bias_init`` for ``nn.Conv``.

    ``"default"``: Flax's defaults (LeCun-normal kernel, zero bias).
    ``"normal002"``: kernel ~ N(0, 0.02^2), zero bias, as in the reference DIP code.
    """
    check_choice(init, INITS, "weight_init")
    if init == "default":
        return {}
    return {"kernel_init": nn.initializers.normal(stddev=0.02), "bias_init": nn.initializers.zeros}


def group_count(channels: int) -> int:
    """Number of GroupNorm groups: gcd(channels, 32) (32 groups as Wu & He when it divides)."""
    return math.gcd(channels, GROUPNORM_MAX_GROUPS)


class Norm(nn.Module):
    """Per-channel normalisation selected by name.

    ``"batch"``: BatchNorm (affine; batch statistics in train mode, running averages otherwise,
    PyTorch momentum 0.1 / eps 1e-5; unlike PyTorch the running variance tracks the biased batch
    variance, a relative difference of 1/(B H W)). ``"group"``: GroupNorm with gcd(C, 32) groups,
    i.e. per-channel (instance) normalisation below 32 channels; per sample, no state.
    ``"none"``: identity.
    """

    kind: str = "batch"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        check_choice(self.kind, NORMS, "norm")
        if self.kind == "batch":
            return nn.BatchNorm(use_running_average=not train, momentum=BATCHNORM_MOMENTUM, epsilon=NORM_EPS)(x)
        if self.kind == "group":
            return nn.GroupNorm(num_groups=group_count(x.shape[-1]), epsilon=NORM_EPS)(x)
        return x


def align_corners_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear-interpolation matrix ``M`` (n_out, n_in) with align-corners sampling.

    Output sample ``i`` reads the input at ``s_i = i (n_in - 1) / (n_out - 1)`` (``s_i = 0`` when
    ``n_out == 1``) and ``M[i, floor(s_i)] = 1 - t``, ``M[i, floor(s_i) + 1] = t`` with
    ``t = s_i - floor(s_i)``; this is PyTorch's ``align_corners=True`` bilinear convention.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got n_in={n_in}, n_out={n_out}")
    m = np.zeros((n_out, n_in), np.float64)
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = np.arange(n_out) * scale
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    t = src - lo
    np.add.at(m, (np.arange(n_out), lo), 1.0 - t)
    np.add.at(m, (np.arange(n_out), hi), t)
    return m.astype(np.float32)


def resize_align_corners(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Bilinear resize of ``(B, H, W, C)`` to ``size`` with align-corners semantics: the separable
    matrices of :func:`align_corners_matrix` applied at full float32 precision (no TF32)."""
    mh = jnp.asarray(align_corners_matrix(x.shape[-3], size[0]), x.dtype)
    mw = jnp.asarray(align_corners_matrix(x.shape[-2], size[1]), x.dtype)
    return jnp.einsum("ih,jw,...hwc->...ijc", mh, mw, x, precision=jax.lax.Precision.HIGHEST)


def upsample2_align_corners(x: jnp.ndarray) -> jnp.ndarray:
    """x2 bilinear upsampling, ``nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)``."""
    return resize_align_corners(x, (2 * x.shape[-3], 2 * x.shape[-2]))


def resize_half_pixel_bilinear(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Bilinear resize of ``(B, H, W, C)`` to ``size`` with half-pixel centres and edge clamping,
    i.e. ``F.interpolate(mode="bilinear", align_corners=False)`` for upsampling."""
    return jax.image.resize(x, x.shape[:-3] + tuple(size) + x.shape[-1:], method="bilinear", antialias=False)


def nearest_matrix(n_in: int, n_out: int) -> np.ndarray:
    """0/1 selection matrix (n_out, n_in) of PyTorch's ``mode="nearest"``: output ``i`` copies input
    ``floor(i n_in / n_out)``."""
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), (np.arange(n_out) * n_in) // n_out] = 1.0
    return m


def resize_nearest(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Nearest-neighbour resize of ``(B, H, W, C)`` to ``size`` (PyTorch ``mode="nearest"``).

    Integer factors repeat pixels; other sizes apply the separable selection matrices."""
    (h, w), (oh, ow) = x.shape[-3:-1], size
    if oh % h == 0 and ow % w == 0:
        return jnp.repeat(jnp.repeat(x, oh // h, axis=-3), ow // w, axis=-2)
    mh = jnp.asarray(nearest_matrix(h, oh), x.dtype)
    mw = jnp.asarray(nearest_matrix(w, ow), x.dtype)
    return jnp.einsum("ih,jw,...hwc->...ijc", mh, mw, x, precision=jax.lax.Precision.HIGHEST)


def pad_or_crop_to(x: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Zero-pad or centre-crop the spatial axes of ``(..., H, W, C)`` to ``size``.

    Padding puts ``d // 2`` before and ``d - d // 2`` after (as the reference U-Net's ``F.pad``);
    cropping removes ``d // 2`` before.
    """
    for axis, target in zip((-3, -2), size):
        n = x.shape[axis]
        if n < target:
            d = target - n
            widths = [(0, 0)] * x.ndim
            widths[axis] = (d // 2, d - d // 2)
            x = jnp.pad(x, widths)
        elif n > target:
            start = (n - target) // 2
            x = jax.lax.slice_in_dim(x, start, start + target, axis=x.ndim + axis)
    return x


class PaddedConv(nn.Module):
    """Stride-``strides`` convolution with "same"-style padding ``(k - 1) // 2`` of the given mode
    (``"zero"`` or ``"reflection"``), as ``nn.Conv2d(padding=(k-1)//2)`` / ``ReflectionPad2d``."""

    features: int
    kernel_size: int
    strides: int = 1
    padding: str = "zero"
    use_bias: bool = True
    weight_init: str = "default"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        check_choice(self.padding, ("zero", "reflection"), "padding")
        p = (self.kernel_size - 1) // 2
        if self.padding == "reflection" and p > 0:
            x = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(p, p), (p, p), (0, 0)], mode="reflect")
            pad = "VALID"
        else:
            pad = ((p, p), (p, p))
        return nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=(self.strides, self.strides),
            padding=pad,
            use_bias=self.use_bias,
            **conv_inits(self.weight_init),
        )(x)
