"""``MaskFormerHeadFreqAware``: :class:`MaskFormerHead` whose final masks are refined to the
input resolution by image-guided CARAFE (the FreqFusion Mask2Former fork's head of its Cityscapes
Swin models; github.com/Linwei-Chen/FreqFusion,
``Mask2Former/mask2former/modeling/meta_arch/mask_former_head.py``)."""

from typing import Dict, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...layers import CascadeImageGuidedUpsample
from .mask_former_head import MaskFormerHead

__all__ = ["MaskFormerHeadFreqAware"]


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHeadFreqAware(MaskFormerHead):
    """:class:`MaskFormerHead` + image-guided mask upsampling.

    ``forward(features, mask=None, img=None)`` needs ``img``, the normalised padded input batch
    (B, 3, H, W) (:class:`~freqfusion_d2.modeling.meta_arch.MaskFormerFreqAware` passes it). The
    mask features are compressed by ``comp_conv`` (a 3x3 conv to ``compress_channels``) and guide
    ``IGU``, two 2x :class:`~freqfusion_d2.layers.ImageGuidedUpsample` steps that take the final
    ``pred_masks`` from stride 4 to the input resolution; the auxiliary predictions keep their
    resolution. Extra state-dict keys: ``comp_conv.0.*`` and ``IGU.up.{0,1}.*``.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        mask_dim: int,
        compress_channels: int = 4,
        compress_kernel: int = 3,
        num_upsamplers: int = 2,
        use_checkpoint: bool = True,
        **kwargs,
    ):
        """
        Args:
            input_shape, kwargs: as in :class:`MaskFormerHead`.
            mask_dim: channels of the pixel decoder's mask features.
            compress_channels: channels of the guidance feature (official: 4).
            compress_kernel: kernel size of ``comp_conv`` (official: 3).
            num_upsamplers: 2x refinement steps (official: 2, from stride 4 to 1).
            use_checkpoint: recompute ``comp_conv`` and the refinement in backward while
                training (official: on).
        """
        super().__init__(input_shape, **kwargs)
        self.use_checkpoint = use_checkpoint
        self.IGU = CascadeImageGuidedUpsample(
            n=num_upsamplers, use_checkpoint=use_checkpoint, feat_channels=compress_channels
        )
        # Keeps PyTorch's default conv init: the official xavier_init call is given the
        # Sequential, which has no weight, so it does nothing.
        self.comp_conv = nn.Sequential(
            nn.Conv2d(
                mask_dim,
                compress_channels,
                kernel_size=compress_kernel,
                padding=compress_kernel // 2,
            )
        )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret["mask_dim"] = cfg.MODEL.SEM_SEG_HEAD.MASK_DIM
        return ret

    def forward(
        self,
        features: Dict[str, torch.Tensor],
        mask: Optional[torch.Tensor] = None,
        img: Optional[torch.Tensor] = None,
    ):
        """
        Args:
            features: backbone features by name.
            mask: passed on to the decoder.
            img: (B, 3, H, W) normalised padded images.

        Returns:
            the decoder's prediction dict, with ``pred_masks`` at (H, W).
        """
        return self.layers(features, mask, img)

    def layers(self, features, mask=None, img=None):
        if img is None:
            raise ValueError(
                "MaskFormerHeadFreqAware: img (the normalised input batch) is required; use it "
                "with MODEL.META_ARCHITECTURE 'MaskFormerFreqAware'"
            )
        mask_features, encoder_features, multi_scale_features = self.pixel_decoder.forward_features(
            features
        )
        predictions = self._predict(
            features, mask_features, encoder_features, multi_scale_features, mask
        )
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            guide = checkpoint(self.comp_conv, mask_features, use_reentrant=False)
        else:
            guide = self.comp_conv(mask_features)
        predictions["pred_masks"] = self.IGU(guide, predictions["pred_masks"], img)
        return predictions
