"""Detectron2's ResNet with Spatial Frequency Modulation (Chen et al., TPAMI 2025).

An adaptive resampler (ARS) runs on the input of each chosen stage, before its stride-2 block,
as the paper's Fig. 2 places it on the 1/4 -> 1/8, 1/8 -> 1/16 and 1/16 -> 1/32 transitions.
The backbone tracks where every sample of every stage sits in the undistorted image frame (the
ARS grids composed through the strided blocks) and hands each stage output to the decoder back
in that frame, demodulated by a :class:`~freqfusion_d2.layers.MultiScaleAdaptiveUpsampler` of
its own. Decoders, losses and ROI heads therefore see ordinary, aligned features. Parameter names
of the ResNet are detectron2's, so ResNet, FPN and whole-model checkpoints of the baseline load
(the new modules ``ars.*`` and ``demod.*`` are the only missing keys); new SFM modules are the
identity, so such a model starts as its baseline.
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import ResNet, build_resnet_backbone
from torch import nn

from ...layers.sampling_grid import compose_positions, subsample_positions
from ..sfm_config import make_ars, make_demodulator

__all__ = ["SFMResNet", "build_resnet_sfm_backbone", "build_resnet_sfm_fpn_backbone"]


def check_ars_stages(ars_stages: Sequence[str], stage_names: Sequence[str], owner: str):
    """Raises if an ARS stage is not one of the backbone's stages."""
    bad = [s for s in ars_stages if s not in stage_names]
    if bad:
        raise ValueError(
            f"{owner}: MODEL.SFM.ARS_STAGES {bad} are not stages of this backbone "
            f"({list(stage_names)})"
        )


class SFMResNet(ResNet):
    """ResNet whose chosen stages resample their input adaptively.

    ``forward(x)`` returns the ResNet's outputs in the uniform frame;
    :meth:`forward_with_positions` also returns, per stage, the position field of its raw
    (modulated) output, or None where no ARS came before it.
    """

    def __init__(
        self,
        stem: nn.Module,
        stages: Sequence[Sequence[nn.Module]],
        *,
        resamplers: Mapping[str, nn.Module],
        demodulators: Mapping[str, nn.Module],
        out_features: Optional[List[str]] = None,
        freeze_at: int = 0,
    ):
        """
        Args:
            stem, stages, out_features, freeze_at: as detectron2's ``ResNet``.
            resamplers: stage name -> ARS run on that stage's input (``res2``-``res5``).
            demodulators: stage name -> MSAU for each output stage at or after the first ARS.
        """
        super().__init__(stem, stages, out_features=out_features, freeze_at=freeze_at)
        check_ars_stages(list(resamplers), self.stage_names, "SFMResNet")
        first = min((self.stage_names.index(s) for s in resamplers), default=len(self.stage_names))
        needed = [s for s in self._out_features if s in self.stage_names[first:]]
        missing = [s for s in needed if s not in demodulators]
        if missing:
            raise ValueError(f"SFMResNet: demodulators missing for the output stages {missing}")
        self.ars = nn.ModuleDict(dict(resamplers))
        self.demod = nn.ModuleDict({k: demodulators[k] for k in needed})
        self._stage_strides = {
            name: int(np.prod([block.stride for block in stage]))
            for name, stage in zip(self.stage_names, self.stages)
        }

    def forward_with_positions(
        self, x: torch.Tensor
    ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Optional[torch.Tensor]]]:
        """Outputs in the uniform frame, and the position field of each raw stage output."""
        if x.dim() != 4:
            raise ValueError(f"SFMResNet: input must be (N, C, H, W), got {tuple(x.shape)}")
        outputs, fields = {}, {}
        x = self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        positions = None
        for name, stage in zip(self.stage_names, self.stages):
            if name in self.ars:
                x, grid = self.ars[name](x)
                positions = compose_positions(positions, grid)
            x = stage(x)
            if positions is not None:
                positions = subsample_positions(positions, self._stage_strides[name])
                if positions.shape[-2:] != x.shape[-2:]:
                    raise RuntimeError(
                        f"SFMResNet: {name} output {tuple(x.shape[-2:])} does not match its "
                        f"position field {tuple(positions.shape[-2:])}"
                    )
            fields[name] = positions
            if name in self._out_features:
                outputs[name] = (
                    x if positions is None else self.demod[name].demodulate(x, positions)
                )
        return outputs, fields

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (N, C, H, W) images.

        Returns:
            dict of the requested stage outputs, in the undistorted frame.
        """
        return self.forward_with_positions(x)[0]


def sfm_resnet_from(base: ResNet, cfg) -> SFMResNet:
    """An :class:`SFMResNet` made of the stem and stages of a built detectron2 ResNet, with the
    ARS and demodulators of ``cfg.MODEL.SFM``."""
    stage_names = list(base.stage_names)
    ars_stages = list(cfg.MODEL.SFM.ARS_STAGES)
    check_ars_stages(ars_stages, stage_names, "build_resnet_sfm_backbone")
    channels = dict(base._out_feature_channels)
    previous = ["stem"] + stage_names[:-1]
    resamplers = {
        name: make_ars(cfg, channels[prev])
        for name, prev in zip(stage_names, previous)
        if name in ars_stages
    }
    # SFMResNet keeps those of the output stages at or after the first ARS.
    demodulators = {
        name: make_demodulator(cfg) for name in base._out_features if name in stage_names
    }
    return SFMResNet(
        base.stem,
        base.stages,
        resamplers=resamplers,
        demodulators=demodulators,
        out_features=list(base._out_features),
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )


@BACKBONE_REGISTRY.register()
def build_resnet_sfm_backbone(cfg, input_shape: ShapeSpec) -> SFMResNet:
    """detectron2's ``build_resnet_backbone`` (``MODEL.RESNETS.*``) with ARS before the stages
    of ``MODEL.SFM.ARS_STAGES``."""
    return sfm_resnet_from(build_resnet_backbone(cfg, input_shape), cfg)


@BACKBONE_REGISTRY.register()
def build_resnet_sfm_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """detectron2's ``build_resnet_fpn_backbone`` (max-pooled P6) on an :class:`SFMResNet`."""
    bottom_up = build_resnet_sfm_backbone(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
