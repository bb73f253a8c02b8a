"""Mask2Former pixel decoders (registered in detectron2's SEM_SEG_HEADS_REGISTRY)."""

from .build import build_pixel_decoder
from .fpn import BasePixelDecoder
from .freqfusion_msdeformattn import (
    FreqAwareMSDeformAttnPixelDecoder,
    FreqAwareMSDeformAttnPixelDecoder2,
    FreqFusionMSDeformAttnPixelDecoder,
)
from .msdeformattn import MSDeformAttnPixelDecoder
from .transformer_encoder_fpn import TransformerEncoderPixelDecoder

__all__ = [
    "build_pixel_decoder",
    "BasePixelDecoder",
    "TransformerEncoderPixelDecoder",
    "MSDeformAttnPixelDecoder",
    "FreqAwareMSDeformAttnPixelDecoder",
    "FreqAwareMSDeformAttnPixelDecoder2",
    "FreqFusionMSDeformAttnPixelDecoder",
]
