"""Detectron2's FPN with FreqFusion in the top-down path.

The official FreqFusion FPN is ``FreqFusionCARAFEFPN`` in
``mmdetection/mmdet/models/necks/fpn_carafe.py`` (github.com/Linwei-Chen/FreqFusion); here the
fusions go into detectron2's ``FPN.forward`` (``detectron2/modeling/backbone/fpn.py``).
"""

import copy
import math
from typing import Any, Dict, Optional

import fvcore.nn.weight_init as weight_init
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from torch import nn

from ..freqfusion_config import (
    freqfusion_kwargs_from_config,
    freqfusion_use_checkpoint,
    make_freqfusion,
)

__all__ = [
    "FreqFusionFPN",
    "build_resnet_freqfusion_fpn_backbone",
    "build_retinanet_resnet_freqfusion_fpn_backbone",
]


class FreqFusionFPN(FPN):
    """FPN whose top-down "nearest 2x upsample + add" is a FreqFusion of the two levels.

    At each level, ``hr`` is the lateral conv output and ``lr`` the previous (coarser) top-down
    feature; the new top-down feature is ``hr_out + lr_out`` (halved for ``fuse_type="avg"``).
    Lateral and output convs and the top block are detectron2's, under detectron2's names, so
    detectron2 FPN checkpoints load; the fusions are ``fpn_freqfusion{stage}`` with ``stage``
    the level of the high-resolution input (2, 3, 4 for res2-res5).

    With ``extra_p6`` the top of the top-down path is an extra lateral (3x3 stride-2 conv on
    the coarsest input, ``fpn_lateral{s+1}``) fused into P{s} by ``fpn_freqfusion{s}``, and
    its output conv gives P{s+1}, as in the official mmdet neck. Inputs then need to be
    divisible by twice the coarsest stride.
    """

    # Official values of the model-dependent options (the mmdet FreqFusionCARAFEFPN neck).
    official_freqfusion = {
        "feature_resample": True,
        "feature_resample_norm": True,
        "hamming_window": True,
    }

    @configurable
    def __init__(
        self,
        *,
        bottom_up: Backbone,
        in_features,
        out_channels: int,
        norm: str = "",
        top_block: Optional[nn.Module] = None,
        fuse_type: str = "sum",
        square_pad: int = 0,
        freqfusion_kwargs: Optional[Dict[str, Any]] = None,
        use_checkpoint: bool = False,
        extra_p6: bool = False,
    ):
        """
        Args:
            bottom_up, in_features, out_channels, norm, top_block, fuse_type, square_pad: as in
                detectron2's :class:`FPN`.
            freqfusion_kwargs: options of every FreqFusion (see
                :func:`freqfusion_d2.modeling.make_freqfusion`), e.g. ``compress_ratio``.
            use_checkpoint: recompute the fusions in backward to save memory.
            extra_p6: add the mmdet-style P6 lateral and fusion; excludes ``top_block``.
        """
        if extra_p6 and top_block is not None:
            raise ValueError(
                "FreqFusionFPN: extra_p6=True builds its own P6; top_block must be None"
            )
        super().__init__(
            bottom_up=bottom_up,
            in_features=in_features,
            out_channels=out_channels,
            norm=norm,
            top_block=top_block,
            fuse_type=fuse_type,
            square_pad=square_pad,
        )
        freqfusion_kwargs = dict(freqfusion_kwargs or {})
        strides = [bottom_up.output_shape()[f].stride for f in in_features]
        stages = [int(math.log2(s)) for s in strides]
        self.extra_p6 = extra_p6
        self.use_checkpoint = use_checkpoint
        self.fuse_type = fuse_type
        # Output shapes from detectron2's public FPN.output_shape(), plus the extra level; kept
        # here so that nothing writes FPN's private shape fields.
        self._shapes = dict(super().output_shape())
        self._divisibility = super().size_divisibility

        if extra_p6:
            top_stage = stages[-1] + 1
            in_channels = bottom_up.output_shape()[in_features[-1]].channels
            use_bias = norm == ""
            lateral = Conv2d(
                in_channels,
                out_channels,
                kernel_size=3,
                stride=2,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
            )
            output = Conv2d(
                out_channels,
                out_channels,
                kernel_size=3,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, out_channels),
            )
            weight_init.c2_xavier_fill(lateral)
            weight_init.c2_xavier_fill(output)
            self.add_module(f"fpn_lateral{top_stage}", lateral)
            self.add_module(f"fpn_output{top_stage}", output)
            self.lateral_convs = [lateral] + self.lateral_convs
            self.output_convs = [output] + self.output_convs
            stages = stages + [top_stage]
            self._shapes[f"p{top_stage}"] = ShapeSpec(channels=out_channels, stride=2**top_stage)
            self._divisibility = 2**top_stage

        # One fusion per high-resolution level, in top-down order like the conv lists.
        self.fusions = []
        for stage in reversed(stages[:-1]):
            fusion = make_freqfusion(out_channels, out_channels, **freqfusion_kwargs)
            self.add_module(f"fpn_freqfusion{stage}", fusion)
            self.fusions.append(fusion)
        # The convs of the levels below the top, aligned with the fusions (TorchScript can
        # neither slice nor index module lists in a loop).
        self._top_down_laterals = self.lateral_convs[1:]
        self._top_down_outputs = self.output_convs[1:]
        # Output names, high to low resolution (a list attribute, for TorchScript).
        self._output_names = list(self._shapes)

    def __prepare_scriptable__(self):
        """The copy that ``torch.jit.script`` compiles: the module lists become
        ``nn.ModuleList`` (so parameter names of the scripted module differ, as for
        detectron2's scripted FPN)."""
        ret = copy.deepcopy(self)
        for name, _ in self.named_children():
            if name.startswith("fpn_"):
                delattr(ret, name)
        for name in (
            "lateral_convs",
            "output_convs",
            "fusions",
            "_top_down_laterals",
            "_top_down_outputs",
        ):
            modules = ret.__dict__.pop(name)
            setattr(ret, name, nn.ModuleList(modules))
        return ret

    @property
    def size_divisibility(self) -> int:
        return self._divisibility

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._shapes)

    @classmethod
    def from_config(cls, cfg, bottom_up: Backbone, top_block: Optional[nn.Module] = None):
        extra_p6 = cfg.MODEL.FREQFUSION.FPN_EXTRA_P6
        if top_block is None and not extra_p6:
            top_block = LastLevelMaxPool()
        return {
            "bottom_up": bottom_up,
            "in_features": cfg.MODEL.FPN.IN_FEATURES,
            "out_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "norm": cfg.MODEL.FPN.NORM,
            "top_block": top_block,
            "fuse_type": cfg.MODEL.FPN.FUSE_TYPE,
            "freqfusion_kwargs": freqfusion_kwargs_from_config(cfg, **cls.official_freqfusion),
            "use_checkpoint": freqfusion_use_checkpoint(cfg, official=False),
            "extra_p6": extra_p6,
        }

    def forward(self, x):
        """
        Args:
            x: (N, C, H, W) images; H and W divisible by ``size_divisibility``.

        Returns:
            dict[str, Tensor]: "p<stage>" features, high to low resolution.
        """
        bottom_up_features = self.bottom_up(x)
        # Inputs of the lateral convs in top-down order (coarsest first).
        inputs = [bottom_up_features[f] for f in self.in_features[::-1]]
        if self.extra_p6:
            inputs = [inputs[0]] + inputs
        prev = self.lateral_convs[0](inputs[0])
        results = [self.output_convs[0](prev)]
        for idx, (lateral_conv, output_conv, fusion) in enumerate(
            zip(self._top_down_laterals, self._top_down_outputs, self.fusions)
        ):
            _, hr_out, lr_out = fusion(lateral_conv(inputs[idx + 1]), prev, self.use_checkpoint)
            prev = hr_out + lr_out
            if self.fuse_type == "avg":
                prev = prev / 2
            results.insert(0, output_conv(prev))

        names = self._output_names
        if self.top_block is not None:
            if self.top_block.in_feature in bottom_up_features:
                top_in = bottom_up_features[self.top_block.in_feature]
            else:
                top_in = results[names.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_in))
        if len(results) != len(names):
            raise RuntimeError(
                f"FreqFusionFPN produced {len(results)} maps for {len(names)} output features "
                f"{names}"
            )
        return {name: res for name, res in zip(names, results)}


@BACKBONE_REGISTRY.register()
def build_resnet_freqfusion_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + FreqFusion FPN with a max-pooled P6 (or the mmdet-style P6 with
    ``MODEL.FREQFUSION.FPN_EXTRA_P6``): the drop-in for ``build_resnet_fpn_backbone``."""
    return FreqFusionFPN(cfg, bottom_up=build_resnet_backbone(cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_retinanet_resnet_freqfusion_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + FreqFusion FPN with P6/P7 convs on res5: the drop-in for
    ``build_retinanet_resnet_fpn_backbone``."""
    if cfg.MODEL.FREQFUSION.FPN_EXTRA_P6:
        raise ValueError(
            "MODEL.FREQFUSION.FPN_EXTRA_P6 cannot be combined with RetinaNet's P6/P7 top block"
        )
    bottom_up = build_resnet_backbone(cfg, input_shape)
    in_channels = bottom_up.output_shape()["res5"].channels
    top_block = LastLevelP6P7(in_channels, cfg.MODEL.FPN.OUT_CHANNELS)
    return FreqFusionFPN(cfg, bottom_up=bottom_up, top_block=top_block)
