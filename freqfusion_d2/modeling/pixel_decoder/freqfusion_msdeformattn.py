"""Mask2Former pixel decoders with FreqFusion (Chen et al., TPAMI 2024).

* ``FreqAwareMSDeformAttnPixelDecoder2`` (alias ``FreqFusionMSDeformAttnPixelDecoder``): the
  released FreqFusion decoder. Three FreqFusion modules (``freqfusions.{0,1,2}``): two fuse the
  projected encoder inputs top-down before the deformable encoder (res5 into res4, then the fused
  res4 into res3), the third replaces the bilinear upsampling of the FPN step to res2.
* ``FreqAwareMSDeformAttnPixelDecoder``: the historic v1 decoder that the FreqFusion fork's
  ``maskformer2_FreqAware_R50_bs16_160k.yaml`` names but does not define. Rebuilt from its
  documented behaviour: two pre-encoder modules without the offset generator, run with gradient
  checkpointing, and upstream's bilinear FPN step.

Both keep the parent's contract: ``forward_features`` runs in float32 with autocast disabled,
so FreqFusion never runs in half precision. Their FreqFusion options come from
``MODEL.FREQFUSION.*``, the keys the FPN backbones read; the defaults give the official modules
(hr = lr = CONVS_DIM, compressed to 2 * CONVS_DIM // 8, no Hamming window, no GroupNorm in the
offset generator).
"""

from typing import Any, Dict, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..freqfusion_config import (
    freqfusion_kwargs_from_config,
    freqfusion_use_checkpoint,
    make_freqfusion,
)
from .msdeformattn import MSDeformAttnPixelDecoder

__all__ = [
    "FreqAwareMSDeformAttnPixelDecoder2",
    "FreqFusionMSDeformAttnPixelDecoder",
    "FreqAwareMSDeformAttnPixelDecoder",
]


class _FreqFusionDecoderBase(MSDeformAttnPixelDecoder):
    """Shared construction and pre-encoder fusion of the FreqFusion decoders."""

    # Official values of the model-dependent FreqFusion options and of gradient checkpointing
    # (the decoders of github.com/Linwei-Chen/FreqFusion, Mask2Former/.../msdeformattn.py).
    official_freqfusion = {
        "feature_resample": True,
        "feature_resample_norm": False,
        "hamming_window": False,
    }
    official_use_checkpoint = False
    # FreqFusion modules of the FPN step, after the pre-encoder ones.
    num_fpn_freqfusions = 0

    @configurable
    def __init__(
        self,
        input_shape,
        *,
        freqfusion_kwargs: Optional[Dict[str, Any]] = None,
        use_checkpoint: Optional[bool] = None,
        **kwargs,
    ):
        """
        Args:
            input_shape, kwargs: as in :class:`MSDeformAttnPixelDecoder`.
            freqfusion_kwargs: options of every FreqFusion (see
                :func:`freqfusion_d2.modeling.make_freqfusion`); None gives the official
                modules.
            use_checkpoint: recompute the pre-encoder fusions in backward while training;
                None gives the official choice.
        """
        super().__init__(input_shape, **kwargs)
        self._check_levels()
        if freqfusion_kwargs is None:
            freqfusion_kwargs = dict(self.official_freqfusion)
        self.use_checkpoint = (
            self.official_use_checkpoint if use_checkpoint is None else use_checkpoint
        )
        conv_dim = self.mask_features.in_channels
        # Index order = checkpoint order: pre-encoder fusions first, then the FPN step.
        count = self.transformer_num_feature_levels - 1 + self.num_fpn_freqfusions
        self.freqfusions = nn.ModuleList(
            make_freqfusion(conv_dim, conv_dim, **freqfusion_kwargs) for _ in range(count)
        )

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["freqfusion_kwargs"] = freqfusion_kwargs_from_config(cfg, **cls.official_freqfusion)
        ret["use_checkpoint"] = freqfusion_use_checkpoint(cfg, cls.official_use_checkpoint)
        return ret

    def _check_levels(self) -> None:
        if self.transformer_num_feature_levels != 3:
            raise ValueError(
                f"{type(self).__name__}: needs exactly 3 encoder levels "
                f"(DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES), got "
                f"{self.transformer_in_features}"
            )
        strides = self.transformer_feature_strides
        if any(b != 2 * a for a, b in zip(strides[:-1], strides[1:])):
            raise ValueError(
                f"{type(self).__name__}: encoder levels must be 2x apart, got strides {strides}"
            )

    def _prefuse(self, srcs):
        """Top-down fusion of the projected encoder inputs (coarsest first)."""
        srcs = list(srcs)
        for idx in range(len(srcs) - 1):
            _, hr, lr = self.freqfusions[idx](
                hr_feat=srcs[idx + 1],
                lr_feat=srcs[idx],
                use_checkpoint=self.use_checkpoint and torch.is_grad_enabled(),
            )
            srcs[idx + 1] = hr + lr
        return srcs

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """See :meth:`MSDeformAttnPixelDecoder.forward_features`."""
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            srcs, pos = self._project_inputs(features)
            srcs = self._prefuse(srcs)
            out = self._run_encoder(srcs, pos, contiguous=True)
            for idx, f in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
                lateral = self.lateral_convs[idx](features[f].float())
                out.append(self._fpn_merge(idx, lateral, out[-1]))
            return self._finish(out)


@SEM_SEG_HEADS_REGISTRY.register()
class FreqAwareMSDeformAttnPixelDecoder2(_FreqFusionDecoderBase):
    """``MSDeformAttnPixelDecoder`` with three FreqFusion modules (the released FreqFusion
    Mask2Former decoder); state-dict keys are the parent's plus ``freqfusions.{0,1,2}.*``.

    ``freqfusions[0]`` fuses res5 into res4 and ``freqfusions[1]`` the fused res4 into res3, both
    before the encoder; ``freqfusions[2]`` fuses the finest encoder output into the res2 lateral.
    """

    num_fpn_freqfusions = 1

    @configurable
    def __init__(self, input_shape, **kwargs):
        """Same arguments as :class:`_FreqFusionDecoderBase`."""
        super().__init__(input_shape, **kwargs)
        if self.num_fpn_levels < 1:
            raise ValueError(
                f"{type(self).__name__}: needs an FPN level finer than the encoder levels "
                f"(common_stride < {min(self.transformer_feature_strides)})"
            )

    def _fpn_merge(self, idx: int, lateral: torch.Tensor, coarser: torch.Tensor) -> torch.Tensor:
        # Every FPN level reuses the last module (only one level exists in practice).
        _, hr, lr = self.freqfusions[-1](hr_feat=lateral, lr_feat=coarser)
        return self.output_convs[idx](hr + lr)


@SEM_SEG_HEADS_REGISTRY.register()
class FreqFusionMSDeformAttnPixelDecoder(FreqAwareMSDeformAttnPixelDecoder2):
    """A clearer name for :class:`FreqAwareMSDeformAttnPixelDecoder2` (identical module)."""


@SEM_SEG_HEADS_REGISTRY.register()
class FreqAwareMSDeformAttnPixelDecoder(_FreqFusionDecoderBase):
    """The historic v1 FreqFusion decoder: two FreqFusion modules without the offset generator
    fuse the encoder inputs top-down (``freqfusions.{0,1}``, same order as v2), with gradient
    checkpointing while training; the FPN step to res2 is upstream's bilinear one.

    No released checkpoint uses it; it exists so that the fork's v1 config builds. Prefer
    ``FreqAwareMSDeformAttnPixelDecoder2``.
    """

    official_freqfusion = {**_FreqFusionDecoderBase.official_freqfusion, "feature_resample": False}
    official_use_checkpoint = True
