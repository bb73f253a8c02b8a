"""Mask2Former meta-architectures (META_ARCH_REGISTRY); Mask2Former and SFM heads
(SEM_SEG_HEADS_REGISTRY)."""

from .mask_former_head import MaskFormerHead
from .mask_former_head_freq_aware import MaskFormerHeadFreqAware
from .maskformer_freq_aware import MaskFormerFreqAware
from .maskformer_model import MaskFormer
from .sfm_semantic_fpn_head import SFMSemSegFPNHead

__all__ = [
    "MaskFormer",
    "MaskFormerFreqAware",
    "MaskFormerHead",
    "MaskFormerHeadFreqAware",
    "SFMSemSegFPNHead",
]
