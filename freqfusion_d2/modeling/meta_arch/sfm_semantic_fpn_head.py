"""detectron2's semantic FPN head with multi-scale adaptive upsampling (MSAU) of its output
(Spatial Frequency Modulation, Chen et al., TPAMI 2025: MSAU replaces the final bilinear
upsampling of the segmentation output)."""

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead
from torch import nn

from ..sfm_config import make_msau

__all__ = ["SFMSemSegFPNHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class SFMSemSegFPNHead(SemSegFPNHead):
    """``SemSegFPNHead`` whose logits are upsampled by ``upsampler`` (for training losses and
    inference alike); with ``upsampler=None`` it is ``SemSegFPNHead``. The upsampler starts as
    bilinear upsampling, so baseline checkpoints give the baseline's outputs (its parameters,
    ``upsampler.*``, are the only missing keys)."""

    @configurable
    def __init__(
        self, input_shape: Dict[str, ShapeSpec], *, upsampler: Optional[nn.Module] = None, **kwargs
    ):
        """
        Args:
            input_shape, kwargs: as ``SemSegFPNHead``.
            upsampler: a :class:`~freqfusion_d2.layers.MultiScaleAdaptiveUpsampler`, or None.
        """
        super().__init__(input_shape, **kwargs)
        self.upsampler = upsampler

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret["upsampler"] = make_msau(cfg) if cfg.MODEL.SFM.MSAU else None
        return ret

    def _upsample(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsampler is None:
            return F.interpolate(
                x, scale_factor=self.common_stride, mode="bilinear", align_corners=False
            )
        return self.upsampler(x, scale_factor=self.common_stride)

    def forward(self, features, targets=None):
        """As ``SemSegFPNHead.forward``: (None, losses) in training, (logits, {}) otherwise."""
        x = self.layers(features)
        if self.training:
            return None, self.losses(x, targets)
        return self._upsample(x), {}

    def losses(self, predictions, targets):
        predictions = self._upsample(predictions.float())
        loss = F.cross_entropy(
            predictions, targets, reduction="mean", ignore_index=self.ignore_value
        )
        return {"loss_sem_seg": loss * self.loss_weight}
