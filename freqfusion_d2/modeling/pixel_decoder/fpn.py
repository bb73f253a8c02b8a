"""MaskFormer (v1)'s FPN pixel decoder, ``BasePixelDecoder`` (upstream Mask2Former's default
``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``).

A top-down FPN over the input features with nearest-neighbour upsampling: the coarsest feature
goes through a 3x3 conv (``layer_{n}``), every finer one through a 1x1 lateral (``adapter_{i}``)
added to the upsampled coarser output and a 3x3 conv (``layer_{i}``); a 3x3 conv
(``mask_features``) on the finest output gives the mask features. Parameter names equal upstream
Mask2Former's ``pixel_decoder/fpn.py``.
"""

import logging
from typing import Callable, Dict, Optional, Union

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

__all__ = ["BasePixelDecoder"]

logger = logging.getLogger(__name__)


def _output_conv(in_channels: int, conv_dim: int, norm) -> Conv2d:
    conv = Conv2d(
        in_channels,
        conv_dim,
        kernel_size=3,
        stride=1,
        padding=1,
        bias=norm == "",
        norm=get_norm(norm, conv_dim),
        activation=F.relu,
    )
    weight_init.c2_xavier_fill(conv)
    return conv


@SEM_SEG_HEADS_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    """FPN pixel decoder.

    ``forward_features(features)`` returns ``(mask_features, None, multi_scale_features)``: the
    mask features at the finest input stride, no encoder output, and the first three FPN outputs
    in top-down order (coarsest first).
    """

    # Number of FPN outputs handed to a multi-scale decoder.
    maskformer_num_feature_levels = 3

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
    ):
        """
        Args:
            input_shape: shapes of the features used (any number, any strides).
            conv_dim: width of the FPN convs.
            mask_dim: channels of the mask features.
            norm: normalisation of the FPN convs ("" for none, then with biases).
        """
        super().__init__()
        if not input_shape:
            raise ValueError(
                "BasePixelDecoder: input_shape is empty (MODEL.SEM_SEG_HEAD.IN_FEATURES)"
            )
        ordered = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in ordered]
        channels = [v.channels for _, v in ordered]
        lateral_convs, output_convs = [], []
        last = len(channels) - 1
        for idx, in_channels in enumerate(channels):
            if idx == last:
                lateral = None
                output = _output_conv(in_channels, conv_dim, norm)
            else:
                lateral = Conv2d(
                    in_channels,
                    conv_dim,
                    kernel_size=1,
                    bias=norm == "",
                    norm=get_norm(norm, conv_dim),
                )
                weight_init.c2_xavier_fill(lateral)
                output = _output_conv(conv_dim, conv_dim, norm)
                self.add_module(f"adapter_{idx + 1}", lateral)
            self.add_module(f"layer_{idx + 1}", output)
            lateral_convs.append(lateral)
            output_convs.append(output)
        # Plain lists in top-down order (no extra state-dict keys).
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]
        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
        }

    def _coarsest(self, x: torch.Tensor):
        """Output of the coarsest level and the encoder features (None here)."""
        return self.output_convs[0](x), None

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """
        Args:
            features: backbone features by name.

        Returns:
            (mask_features (B, M, H, W) at the finest stride, encoder features or None,
            list of up to three FPN outputs (B, C, h, w), coarsest first).
        """
        multi_scale = []
        encoder_features = None
        y = None
        for idx, name in enumerate(self.in_features[::-1]):
            x = features[name]
            if idx == 0:
                y, encoder_features = self._coarsest(x)
            else:
                lateral = self.lateral_convs[idx](x)
                y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
                y = self.output_convs[idx](y)
            if len(multi_scale) < self.maskformer_num_feature_levels:
                multi_scale.append(y)
        return self.mask_features(y), encoder_features, multi_scale

    def forward(self, features: Dict[str, torch.Tensor]):
        """Same as :meth:`forward_features` (a pixel decoder is used through that method)."""
        return self.forward_features(features)
