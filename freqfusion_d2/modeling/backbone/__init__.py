"""Backbones registered in detectron2's BACKBONE_REGISTRY."""

from .freqfusion_fpn import (
    FreqFusionFPN,
    build_resnet_freqfusion_fpn_backbone,
    build_retinanet_resnet_freqfusion_fpn_backbone,
)
from .sfm_resnet import SFMResNet, build_resnet_sfm_backbone, build_resnet_sfm_fpn_backbone
from .sfm_swin import SFMSwinTransformer
from .swin import D2SwinTransformer, SwinTransformer

__all__ = [
    "FreqFusionFPN",
    "build_resnet_freqfusion_fpn_backbone",
    "build_retinanet_resnet_freqfusion_fpn_backbone",
    "SFMResNet",
    "build_resnet_sfm_backbone",
    "build_resnet_sfm_fpn_backbone",
    "SFMSwinTransformer",
    "D2SwinTransformer",
    "SwinTransformer",
]
