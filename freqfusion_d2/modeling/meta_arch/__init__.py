"""Mask2Former meta-architectures (META_ARCH_REGISTRY) and heads (SEM_SEG_HEADS_REGISTRY)."""

from .mask_former_head import MaskFormerHead
from .mask_former_head_freq_aware import MaskFormerHeadFreqAware
from .maskformer_freq_aware import MaskFormerFreqAware
from .maskformer_model import MaskFormer

__all__ = ["MaskFormer", "MaskFormerFreqAware", "MaskFormerHead", "MaskFormerHeadFreqAware"]
