"""Backbones registered in detectron2's BACKBONE_REGISTRY."""

from .freqfusion_fpn import (
    FreqFusionFPN,
    build_resnet_freqfusion_fpn_backbone,
    build_retinanet_resnet_freqfusion_fpn_backbone,
)
from .swin import D2SwinTransformer, SwinTransformer

__all__ = [
    "FreqFusionFPN",
    "build_resnet_freqfusion_fpn_backbone",
    "build_retinanet_resnet_freqfusion_fpn_backbone",
    "D2SwinTransformer",
    "SwinTransformer",
]
