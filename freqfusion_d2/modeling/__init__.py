"""Detectron2 components of freqfusion_d2; importing this registers them."""

from . import meta_arch, pixel_decoder, transformer_decoder  # noqa: F401  (Mask2Former)
from .backbone import (
    D2SwinTransformer,
    FreqFusionFPN,
    build_resnet_freqfusion_fpn_backbone,
    build_retinanet_resnet_freqfusion_fpn_backbone,
)
from .checkpoint_conversion import convert_mmdet_freqfusion_state_dict
from .freqfusion_config import freqfusion_kwargs_from_config, make_freqfusion

__all__ = [
    "D2SwinTransformer",
    "FreqFusionFPN",
    "build_resnet_freqfusion_fpn_backbone",
    "build_retinanet_resnet_freqfusion_fpn_backbone",
    "convert_mmdet_freqfusion_state_dict",
    "freqfusion_kwargs_from_config",
    "make_freqfusion",
]
