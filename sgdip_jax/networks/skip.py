"""The encoder-decoder with skip connections of Deep Image Prior (Ulyanov, Vedaldi & Lempitsky,
CVPR 2018, ``models/skip.py`` of the authors' code).

Architecture, per scale ``i`` (outermost first) with input width ``d``: a skip branch (if
``num_channels_skip[i] > 0``) = conv ``k_skip`` (d -> s_i) -> BN -> LeakyReLU(0.2); a deeper branch =
conv ``k_down`` with stride 2 (or stride 1 followed by 2x2 average/max pooling) (d -> n_i) -> BN ->
LeakyReLU -> conv ``k_down`` (n_i -> n_i) -> BN -> LeakyReLU -> [the next scale, returning u_{i+1}
channels] -> x2 upsampling (nearest or bilinear). The two branches are concatenated
``[skip, deeper]`` -> BN -> conv ``k_up`` (s_i + u_{i+1} -> u_i) -> BN -> LeakyReLU, then optionally
(``need1x1_up``) conv 1x1 -> BN -> LeakyReLU. At the deepest scale the deeper branch has no inner
scale and upsamples its n_i channels. A final 1x1 conv maps u_0 to the output, followed by a sigmoid
when ``need_sigmoid``. All convolutions have biases and "same" padding (zero or reflection).
For sizes not divisible by ``2^scales`` the upsampled deeper branch is centre-cropped (stride
downsampling) or zero-padded (pooling) to its skip's size, so the output always has the input's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from ..config import check_choice
from .layers import (
    INITS,
    NORMS,
    Norm,
    PaddedConv,
    pad_or_crop_to,
    resize_half_pixel_bilinear,
    resize_nearest,
)

LEAKY_SLOPE = 0.2


class SkipNet(nn.Module):
    """DIP skip network; defaults are the original DIP inpainting setting (5 scales of 128 channels,
    4 skip channels, 3x3 down/up and 1x1 skip filters, stride downsampling, nearest upsampling,
    zero padding, BatchNorm, sigmoid output)."""

    out_channels: int = 3
    num_channels_down: Sequence[int] = (128, 128, 128, 128, 128)
    num_channels_up: Sequence[int] = (128, 128, 128, 128, 128)
    num_channels_skip: Sequence[int] = (4, 4, 4, 4, 4)
    filter_size_down: int = 3
    filter_size_up: int = 3
    filter_skip_size: int = 1
    downsampling: str = "stride"
    upsampling: str = "nearest"
    padding: str = "zero"
    need_sigmoid: bool = True
    need1x1_up: bool = True
    norm: str = "batch"
    weight_init: str = "default"

    def _check(self, x: jnp.ndarray) -> None:
        if x.ndim != 4:
            raise ValueError(f"SkipNet input must be (B, H, W, C), got shape {x.shape}")
        lengths = {len(self.num_channels_down), len(self.num_channels_up), len(self.num_channels_skip)}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(
                "num_channels_down, num_channels_up and num_channels_skip must be non-empty and of "
                f"equal length, got {list(self.num_channels_down)}, {list(self.num_channels_up)}, "
                f"{list(self.num_channels_skip)}"
            )
        check_choice(self.downsampling, ("stride", "avg", "max"), "downsampling")
        check_choice(self.upsampling, ("nearest", "bilinear"), "upsampling")
        check_choice(self.padding, ("zero", "reflection"), "padding")
        check_choice(self.norm, NORMS, "norm")
        check_choice(self.weight_init, INITS, "weight_init")

    def _conv_block(self, x: jnp.ndarray, width: int, size: int, train: bool, strides: int = 1) -> jnp.ndarray:
        """conv -> [2x2 pooling] -> norm -> LeakyReLU(0.2)."""
        pooled = strides != 1 and self.downsampling != "stride"
        x = PaddedConv(width, size, 1 if pooled else strides, self.padding, True, self.weight_init)(x)
        if pooled:
            pool = nn.avg_pool if self.downsampling == "avg" else nn.max_pool
            x = pool(x, (strides, strides), strides=(strides, strides))
        x = Norm(self.norm)(x, train)
        return nn.leaky_relu(x, LEAKY_SLOPE)

    def _scale(self, x: jnp.ndarray, i: int, train: bool) -> jnp.ndarray:
        """Scale ``i`` of the network applied to ``x``; returns ``num_channels_up[i]`` channels."""
        deeper = self._conv_block(x, self.num_channels_down[i], self.filter_size_down, train, strides=2)
        deeper = self._conv_block(deeper, self.num_channels_down[i], self.filter_size_down, train)
        if i + 1 < len(self.num_channels_down):
            deeper = self._scale(deeper, i + 1, train)
        up_size = (2 * deeper.shape[-3], 2 * deeper.shape[-2])
        if self.upsampling == "nearest":
            deeper = resize_nearest(deeper, up_size)
        else:
            deeper = resize_half_pixel_bilinear(deeper, up_size)
        deeper = pad_or_crop_to(deeper, x.shape[-3:-1])

        if self.num_channels_skip[i] > 0:
            skip = self._conv_block(x, self.num_channels_skip[i], self.filter_skip_size, train)
            y = jnp.concatenate([skip, deeper], axis=-1)
        else:
            y = deeper
        y = Norm(self.norm)(y, train)
        y = self._conv_block(y, self.num_channels_up[i], self.filter_size_up, train)
        if self.need1x1_up:
            y = self._conv_block(y, self.num_channels_up[i], 1, train)
        return y

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        self._check(x)
        y = self._scale(x, 0, train)
        y = PaddedConv(self.out_channels, 1, 1, self.padding, True, self.weight_init)(y)
        return nn.sigmoid(y) if self.need_sigmoid else y
