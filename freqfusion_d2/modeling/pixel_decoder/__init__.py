"""Mask2Former pixel decoders (registered in detectron2's SEM_SEG_HEADS_REGISTRY)."""

from .build import build_pixel_decoder
from .freqfusion_msdeformattn import (
    FreqAwareMSDeformAttnPixelDecoder,
    FreqAwareMSDeformAttnPixelDecoder2,
    FreqFusionMSDeformAttnPixelDecoder,
)
from .msdeformattn import MSDeformAttnPixelDecoder

__all__ = [
    "build_pixel_decoder",
    "MSDeformAttnPixelDecoder",
    "FreqAwareMSDeformAttnPixelDecoder",
    "FreqAwareMSDeformAttnPixelDecoder2",
    "FreqFusionMSDeformAttnPixelDecoder",
]
