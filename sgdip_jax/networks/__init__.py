"""Flax networks for deep image priors: the reference U-Net family, the DIP skip network,
Deep Decoder and ConvDecoder, with a name registry and a pure ``init``/``apply`` interface.

All networks take real channels-last tensors ``(B, h, w, C_in)`` and ``train`` (BatchNorm mode) and
return ``(B, H, W, C_out)``: the U-Net and SkipNet keep the input's size, the decoders upsample a small
input to ``out_size`` (``network_input_shape`` gives the input shape for a target image size).
"""

from .decoders import ConvDecoder, DeepDecoder
from .registry import (
    NETWORKS,
    apply_network,
    get_network,
    init_network,
    network_input_shape,
    param_count,
    with_image_size,
)
from .skip import SkipNet
from .unet import UNet

__all__ = [
    "NETWORKS",
    "ConvDecoder",
    "DeepDecoder",
    "SkipNet",
    "UNet",
    "apply_network",
    "get_network",
    "init_network",
    "network_input_shape",
    "param_count",
    "with_image_size",
]
