"""``MaskFormerFreqAware``: :class:`MaskFormer` that also hands the normalised input batch to its
head, for :class:`MaskFormerHeadFreqAware` (the FreqFusion Mask2Former fork's meta-architecture
of its Cityscapes Swin models; github.com/Linwei-Chen/FreqFusion,
``Mask2Former/mask2former/maskformer_model.py``)."""

from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import ImageList

from .mask_former_head_freq_aware import MaskFormerHeadFreqAware
from .maskformer_model import MaskFormer

__all__ = ["MaskFormerFreqAware"]


@META_ARCH_REGISTRY.register()
class MaskFormerFreqAware(MaskFormer):
    """:class:`MaskFormer` whose head receives ``img=images.tensor`` (normalised, padded).

    Training, losses and inference are MaskFormer's; the head's final masks are already at the
    padded input size, so the inference upsampling leaves them unchanged. Same arguments as
    :class:`MaskFormer`; ``sem_seg_head`` must be a :class:`MaskFormerHeadFreqAware`.
    """

    @configurable
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(self.sem_seg_head, MaskFormerHeadFreqAware):
            raise ValueError(
                "MaskFormerFreqAware: sem_seg_head must be a MaskFormerHeadFreqAware "
                f"(MODEL.SEM_SEG_HEAD.NAME), got {type(self.sem_seg_head).__name__}"
            )

    def run_head(self, features: Dict[str, torch.Tensor], images: ImageList):
        return self.sem_seg_head(features, img=images.tensor)
