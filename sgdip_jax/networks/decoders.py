"""Under-parameterised decoder networks: Deep Decoder and ConvDecoder.

DeepDecoder (Heckel & Hand, "Deep Decoder: Concise Image Representations from Untrained
Non-convolutional Networks", ICLR 2019; ``decodernw`` in the authors' supplement code): ``num_layers``
blocks of 1x1 convolution without bias (C -> k) -> x2 bilinear upsampling (not after the last block)
-> ReLU -> channel normalisation (BatchNorm with affine parameters in the original), then a 1x1
convolution to the output channels and an optional sigmoid. The defaults (6 blocks of k = 128
channels, 5 upsamplings, sigmoid) are the authors' defaults (``num_channels_up=[128]*5``).

ConvDecoder (Darestani & Heckel, "Accelerated MRI with Un-trained Neural Networks", IEEE TCI 2021;
``convdecoder`` in the authors' code): ``num_layers - 1`` blocks of nearest-neighbour upsampling to the
next size of a geometric schedule ``ceil(in * (out / in)^(n / (num_layers - 1)))``, n = 1..num_layers-2,
then ``out_size``, -> 3x3 convolution without bias -> ReLU -> BatchNorm; then a last 3x3 convolution ->
ReLU -> BatchNorm and a 1x1 convolution to the output channels (the MRI setting: ``need_last=True``,
no sigmoid). Defaults follow the authors' multi-coil MRI notebook: 8 layers of 160 channels, no
sigmoid; the input's spatial size is free (the authors use 8 x 4 for 640 x 368 k-space).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from ..config import check_choice
from .layers import INITS, NORMS, Norm, conv_inits, resize_half_pixel_bilinear, resize_nearest


def _check_common(name: str, x: jnp.ndarray, norm: str, weight_init: str, out_size) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} input must be (B, H, W, C), got shape {x.shape}")
    check_choice(norm, NORMS, "norm")
    check_choice(weight_init, INITS, "weight_init")
    if out_size is not None and (len(out_size) != 2 or min(out_size) < 1):
        raise ValueError(f"{name} out_size must be (H, W) of positive ints, got {out_size!r}")


class DeepDecoder(nn.Module):
    """Deep Decoder. Input ``(B, h, w, C)``; output ``(B, h 2^num_up, w 2^num_up, out_channels)``
    with ``num_up = num_layers - 1``, or ``out_size`` when given (the last upsampling then goes to
    ``out_size`` instead of doubling)."""

    out_channels: int = 3
    num_layers: int = 6
    features: int = 128
    out_size: tuple[int, int] | None = None
    need_sigmoid: bool = True
    norm: str = "batch"
    weight_init: str = "default"

    @property
    def num_up(self) -> int:
        return self.num_layers - 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        _check_common("DeepDecoder", x, self.norm, self.weight_init, self.out_size)
        if self.num_layers < 1:
            raise ValueError(f"DeepDecoder num_layers must be >= 1, got {self.num_layers}")
        for i in range(self.num_layers):
            x = nn.Conv(self.features, (1, 1), use_bias=False, **conv_inits(self.weight_init))(x)
            if i < self.num_up:
                size = (2 * x.shape[-3], 2 * x.shape[-2])
                if i == self.num_up - 1 and self.out_size is not None:
                    size = tuple(self.out_size)
                x = resize_half_pixel_bilinear(x, size)
            x = nn.relu(x)
            x = Norm(self.norm)(x, train)
        if self.num_up == 0 and self.out_size is not None:
            x = resize_half_pixel_bilinear(x, tuple(self.out_size))
        x = nn.Conv(self.out_channels, (1, 1), use_bias=False, **conv_inits(self.weight_init))(x)
        return nn.sigmoid(x) if self.need_sigmoid else x


def geometric_sizes(in_size: tuple[int, int], out_size: tuple[int, int], num_layers: int) -> list[tuple[int, int]]:
    """ConvDecoder's upsampling schedule: ``num_layers - 1`` sizes, the n-th being
    ``ceil(in * (out / in)^(n / (num_layers - 1)))`` per axis and the last exactly ``out_size``."""
    steps = num_layers - 1
    scale = [(o / i) ** (1.0 / steps) for i, o in zip(in_size, out_size)]
    sizes = [tuple(math.ceil(s**n * i) for s, i in zip(scale, in_size)) for n in range(1, steps)]
    return sizes + [tuple(out_size)]


class ConvDecoder(nn.Module):
    """ConvDecoder. Input ``(B, h, w, C)`` of any small spatial size (``in_size`` is the size
    ``network_input_shape`` asks for); output ``(B, *out_size, out_channels)``. ``out_size`` is required."""

    out_channels: int = 2
    num_layers: int = 8
    features: int = 160
    out_size: tuple[int, int] | None = None
    in_size: tuple[int, int] = (8, 8)
    kernel_size: int = 3
    need_sigmoid: bool = False
    norm: str = "batch"
    weight_init: str = "default"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        _check_common("ConvDecoder", x, self.norm, self.weight_init, self.out_size)
        if self.out_size is None:
            raise ValueError("ConvDecoder needs out_size=(H, W), e.g. get_network('conv_decoder', out_size=(H, W))")
        if self.num_layers < 2:
            raise ValueError(f"ConvDecoder num_layers must be >= 2, got {self.num_layers}")
        pad = (self.kernel_size - 1) // 2
        conv = dict(padding=((pad, pad), (pad, pad)), use_bias=False, **conv_inits(self.weight_init))
        k = (self.kernel_size, self.kernel_size)
        for size in geometric_sizes(x.shape[-3:-1], self.out_size, self.num_layers):
            x = resize_nearest(x, size)
            x = Norm(self.norm)(nn.relu(nn.Conv(self.features, k, **conv)(x)), train)
        x = Norm(self.norm)(nn.relu(nn.Conv(self.features, k, **conv)(x)), train)
        x = nn.Conv(self.out_channels, (1, 1), use_bias=False, **conv_inits(self.weight_init))(x)
        return nn.sigmoid(x) if self.need_sigmoid else x
