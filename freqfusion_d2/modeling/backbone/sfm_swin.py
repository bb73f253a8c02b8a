"""Swin Transformer with Spatial Frequency Modulation (Chen et al., TPAMI 2025): an adaptive
resampler (ARS) on the input of each chosen patch merging, the stage outputs demodulated back to
the undistorted frame (see :mod:`.sfm_resnet`). Parameter names are those of
:class:`D2SwinTransformer` plus ``ars.*`` and ``demod.*``."""

from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from torch import nn

from ...layers.sampling_grid import compose_positions, subsample_positions
from ..sfm_config import make_ars, make_demodulator
from .sfm_resnet import check_ars_stages
from .swin import D2SwinTransformer

__all__ = ["SFMSwinTransformer"]


@BACKBONE_REGISTRY.register()
class SFMSwinTransformer(D2SwinTransformer):
    """:class:`D2SwinTransformer` whose patch merging into each stage of ``resamplers``
    (``res3``-``res5``) reads an adaptively resampled input."""

    @configurable
    def __init__(
        self,
        *,
        resamplers: Mapping[str, nn.Module],
        demodulators: Mapping[str, nn.Module],
        **kwargs,
    ):
        """
        Args:
            resamplers: stage name -> ARS on the tokens entering that stage's patch merging
                (channels of the previous stage).
            demodulators: stage name -> MSAU for each output stage after the first ARS.
            kwargs: the arguments of :class:`D2SwinTransformer`.
        """
        super().__init__(**kwargs)
        names = [f"res{i + 2}" for i in range(self.num_layers)]
        check_ars_stages(list(resamplers), names[1:], "SFMSwinTransformer")
        first = min((names.index(s) for s in resamplers), default=len(names))
        needed = [s for s in names[first:] if s in self._out_features]
        missing = [s for s in needed if s not in demodulators]
        if missing:
            raise ValueError(
                f"SFMSwinTransformer: demodulators missing for the output stages {missing}"
            )
        self.ars = nn.ModuleDict(dict(resamplers))
        self.demod = nn.ModuleDict({k: demodulators[k] for k in needed})

    @classmethod
    def from_config(cls, cfg, input_shape=None):
        ret = super().from_config(cfg, input_shape)
        names = [f"res{i + 2}" for i in range(len(cfg.MODEL.SWIN.DEPTHS))]
        ars_stages = list(cfg.MODEL.SFM.ARS_STAGES)
        check_ars_stages(ars_stages, names[1:], "SFMSwinTransformer")
        channels = {n: cfg.MODEL.SWIN.EMBED_DIM * 2 ** (i - 1) for i, n in enumerate(names)}
        ret["resamplers"] = {n: make_ars(cfg, channels[n]) for n in ars_stages}
        ret["demodulators"] = {n: make_demodulator(cfg) for n in names}
        return ret

    def forward_with_positions(
        self, x: torch.Tensor
    ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Optional[torch.Tensor]]]:
        """Outputs in the uniform frame, and the position field of each raw stage output."""
        if x.dim() != 4:
            raise ValueError(
                f"SFMSwinTransformer: input must be (N, C, H, W), got {tuple(x.shape)}"
            )
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        if self.ape:
            x = x + F.interpolate(self.absolute_pos_embed, size=(h, w), mode="bicubic")
        x = self.pos_drop(x.flatten(2).transpose(1, 2))
        outs, fields, positions = {}, {}, None
        for i, layer in enumerate(self.layers):
            name = f"res{i + 2}"
            x = layer.forward_blocks(x, h, w)
            fields[name] = positions
            if i in self.out_indices and name in self._out_features:
                out = getattr(self, f"norm{i}")(x)
                out = out.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
                outs[name] = (
                    out if positions is None else self.demod[name].demodulate(out, positions)
                )
            if layer.downsample is None:
                continue
            following = f"res{i + 3}"
            if following in self.ars:
                n, _, c = x.shape
                feat = x.transpose(1, 2).reshape(n, c, h, w)
                feat, grid = self.ars[following](feat)
                positions = compose_positions(positions, grid)
                x = feat.flatten(2).transpose(1, 2)
            x = layer.downsample(x, h, w)
            if positions is not None:
                positions = subsample_positions(positions, 2, mode="merge")
            h, w = (h + 1) // 2, (w + 1) // 2
        return outs, fields

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (N, 3, H, W) image tensor.

        Returns:
            dict of the requested features, NCHW, in the undistorted frame.
        """
        return self.forward_with_positions(x)[0]
