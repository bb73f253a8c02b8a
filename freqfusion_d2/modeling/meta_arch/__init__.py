"""Mask2Former meta-architecture (META_ARCH_REGISTRY); Mask2Former and SFM semantic heads
(SEM_SEG_HEADS_REGISTRY)."""

from .mask_former_head import MaskFormerHead
from .maskformer_model import MaskFormer
from .sfm_semantic_fpn_head import SFMSemSegFPNHead

__all__ = ["MaskFormer", "MaskFormerHead", "SFMSemSegFPNHead"]
