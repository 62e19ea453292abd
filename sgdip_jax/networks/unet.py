"""U-Net family of the self-guided DIP reference code.

Architecture (the classic PyTorch U-Net of Ronneberger et al. as popularised by milesial's
``Pytorch-UNet``, which the reference notebook's ``FullUNet`` (depth 4) and ``ExtraDeepUNet``
(depth 5) follow): a DoubleConv block is (3x3 conv with bias, padding 1 -> norm -> ReLU) twice;
the encoder is DoubleConv(C_in, b) followed by ``depth`` Down blocks (2x2 max-pool, DoubleConv)
doubling the width to ``b 2^i``; with bilinear upsampling the bottom block has half its width
(``b 2^depth / 2``). Each of the ``depth`` Up blocks upsamples x2 (bilinear, align-corners), zero-pads
to the skip's size, concatenates ``[skip, up]`` and applies DoubleConv with a mid width of half its
input (output width halved again except in the last block, which outputs ``b``). A 1x1 convolution
maps to ``out_channels`` with no activation. With ``bilinear=False`` the upsampling is a 2x2
transposed convolution halving the width and no widths are halved.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ..config import check_choice
from .layers import INITS, NORMS, Norm, conv_inits, pad_or_crop_to, upsample2_align_corners


class DoubleConv(nn.Module):
    """(3x3 conv, padding 1, with bias -> norm -> ReLU) x 2."""

    features: int
    mid_features: int
    norm: str = "batch"
    weight_init: str = "default"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        for width in (self.mid_features, self.features):
            x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), **conv_inits(self.weight_init))(x)
            x = Norm(self.norm)(x, train)
            x = nn.relu(x)
        return x


class UNet(nn.Module):
    """U-Net of ``depth`` pooling levels (1 to 6 are named ``unet1``..``unet6`` in the registry).

    Maps ``(B, H, W, C_in) -> (B, H, W, out_channels)`` for any ``H, W`` (odd sizes are handled by
    flooring max-pooling and zero-padding the upsampled tensor to its skip's size).
    """

    depth: int = 5
    base: int = 64
    out_channels: int = 2
    bilinear: bool = True
    norm: str = "batch"
    weight_init: str = "default"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.depth < 1:
            raise ValueError(f"UNet depth must be >= 1, got {self.depth}")
        if x.ndim != 4:
            raise ValueError(f"UNet input must be (B, H, W, C), got shape {x.shape}")
        if min(x.shape[1:3]) < 2**self.depth:
            raise ValueError(f"UNet(depth={self.depth}) needs H, W >= {2**self.depth}, got input shape {x.shape}")
        check_choice(self.norm, NORMS, "norm")
        check_choice(self.weight_init, INITS, "weight_init")
        factor = 2 if self.bilinear else 1
        width = [self.base * 2**i for i in range(self.depth + 1)]
        block = dict(norm=self.norm, weight_init=self.weight_init)

        x = DoubleConv(width[0], width[0], **block)(x, train)
        skips = [x]
        for i in range(1, self.depth + 1):
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            out = width[i] // factor if i == self.depth else width[i]
            x = DoubleConv(out, out, **block)(x, train)
            skips.append(x)
        skips.pop()

        for i in range(self.depth, 0, -1):
            skip = skips.pop()
            out = width[i - 1] if i == 1 else width[i - 1] // factor
            if self.bilinear:
                x = upsample2_align_corners(x)
                mid = width[i] // 2
            else:
                x = nn.ConvTranspose(width[i] // 2, (2, 2), strides=(2, 2), **conv_inits(self.weight_init))(x)
                mid = out
            x = pad_or_crop_to(x, skip.shape[-3:-1])
            x = jnp.concatenate([skip, x], axis=-1)
            x = DoubleConv(out, mid, **block)(x, train)

        return nn.Conv(self.out_channels, (1, 1), **conv_inits(self.weight_init))(x)
