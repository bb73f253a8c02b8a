"""Mask2Former's pixel decoder: a deformable-attention encoder over res3-res5 plus an FPN step to
res2 (``MSDeformAttnPixelDecoder``). Parameter names equal upstream's."""

import logging
from typing import Callable, Dict, List, Optional, Tuple, Union

import fvcore.nn.weight_init as weight_init
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from .deformable_encoder import MSDeformAttnTransformerEncoderOnly

logger = logging.getLogger(__name__)

__all__ = ["MSDeformAttnPixelDecoder"]


@SEM_SEG_HEADS_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable-attention pixel decoder.

    ``forward_features(features)`` returns ``(mask_features, encoder_out, multi_scale_features)``:
    per-pixel embeddings at the finest input stride (``common_stride``), the encoder output at
    the coarsest level, and the three coarsest outputs (coarsest first) for the transformer
    decoder. The whole method runs in float32 with autocast disabled, whatever the caller's
    autocast state (the deformable attention and the optional FreqFusion modules need it).
    """

    # Number of levels handed to the transformer decoder.
    maskformer_num_feature_levels = 3

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
        transformer_in_features: List[str],
        transformer_n_points: int = 4,
        common_stride: int,
    ):
        """
        Args:
            input_shape: shapes of the backbone features used (all of them go through either
                the encoder or the FPN step).
            transformer_dropout: dropout of the encoder layers.
            transformer_nheads: heads of the deformable attention.
            transformer_dim_feedforward: FFN width of the encoder layers.
            transformer_enc_layers: number of encoder layers.
            conv_dim: decoder width C (a multiple of 32: the projections use GroupNorm(32, C)).
            mask_dim: channels M of the mask features.
            norm: normalisation of the FPN convs ("" for none, with biases).
            transformer_in_features: names of the features given to the encoder.
            transformer_n_points: sampling points per head and level.
            common_stride: stride of the mask features.
        """
        super().__init__()
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MSDeformAttnPixelDecoder: transformer_in_features {missing} are not among the "
                f"input features {sorted(input_shape)}"
            )
        if conv_dim % 32 != 0:
            raise ValueError(
                f"MSDeformAttnPixelDecoder: conv_dim must be a multiple of 32 (GroupNorm(32)), "
                f"got {conv_dim}"
            )
        transformer_input_shape = sorted(
            ((k, v) for k, v in input_shape.items() if k in transformer_in_features),
            key=lambda kv: kv[1].stride,
        )
        input_shape = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in input_shape]
        self.feature_strides = [v.stride for _, v in input_shape]
        self.feature_channels = [v.channels for _, v in input_shape]
        self.transformer_in_features = [k for k, _ in transformer_input_shape]
        transformer_in_channels = [v.channels for _, v in transformer_input_shape]
        self.transformer_feature_strides = [v.stride for _, v in transformer_input_shape]
        self.transformer_num_feature_levels = len(self.transformer_in_features)

        # One projection per encoder level, coarsest first.
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for c in transformer_in_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)

        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        self.common_stride = common_stride
        # FPN levels between the finest encoder stride and the mask-feature stride.
        stride = min(self.transformer_feature_strides)
        self.num_fpn_levels = int(np.log2(stride) - np.log2(self.common_stride))
        if self.num_fpn_levels < 0:
            raise ValueError(
                f"MSDeformAttnPixelDecoder: common_stride={common_stride} is coarser than the "
                f"finest encoder stride {stride}"
            )
        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for idx, in_channels in enumerate(self.feature_channels[: self.num_fpn_levels]):
            lateral_conv = Conv2d(
                in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim)
            )
            output_conv = Conv2d(
                conv_dim,
                conv_dim,
                kernel_size=3,
                stride=1,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
            weight_init.c2_xavier_fill(lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            self.add_module(f"adapter_{idx + 1}", lateral_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # Plain lists (no extra state-dict keys), coarsest first as the forward visits them.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        mf = cfg.MODEL.MASK_FORMER
        n_heads_key = head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS
        if n_heads_key != mf.NHEADS:
            logger.warning(
                "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS=%s is ignored (as "
                "upstream); the deformable encoder uses MODEL.MASK_FORMER.NHEADS=%s.",
                n_heads_key,
                mf.NHEADS,
            )
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": mf.DROPOUT,
            "transformer_nheads": mf.NHEADS,
            "transformer_dim_feedforward": head.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES,
            "transformer_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            "common_stride": head.COMMON_STRIDE,
        }

    def _project_inputs(
        self, features: Dict[str, torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """Projected encoder inputs and their positional encodings, coarsest level first."""
        srcs, pos = [], []
        for idx, f in enumerate(self.transformer_in_features[::-1]):
            x = features[f].float()
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        return srcs, pos

    def _run_encoder(self, srcs, pos, contiguous: bool = False) -> List[torch.Tensor]:
        """Encoder outputs split back into (N, C, H_l, W_l) maps, coarsest first."""
        y, spatial_shapes, level_start_index = self.transformer(srcs, pos)
        bs = y.shape[0]
        sizes = spatial_shapes.prod(1).tolist()
        out = []
        for z, (h, w) in zip(torch.split(y, sizes, dim=1), spatial_shapes.tolist()):
            z = z.transpose(1, 2).view(bs, -1, h, w)
            out.append(z.contiguous() if contiguous else z)
        return out

    def _fpn_merge(self, idx: int, lateral: torch.Tensor, coarser: torch.Tensor) -> torch.Tensor:
        """Fuses an FPN lateral with the next coarser output (bilinear upsampling + sum)."""
        up = F.interpolate(coarser, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        return self.output_convs[idx](lateral + up)

    def _finish(self, out: List[torch.Tensor]):
        multi_scale_features = out[: self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale_features

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """
        Args:
            features: backbone features by name.

        Returns:
            (mask_features (N, M, H/s, W/s), encoder output at the coarsest level,
            list of the three coarsest outputs (N, C, h, w), coarsest first); all float32.
        """
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            srcs, pos = self._project_inputs(features)
            out = self._run_encoder(srcs, pos)
            for idx, f in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
                lateral = self.lateral_convs[idx](features[f].float())
                out.append(self._fpn_merge(idx, lateral, out[-1]))
            return self._finish(out)

    def forward(self, features: Dict[str, torch.Tensor]):
        """Same as :meth:`forward_features`."""
        return self.forward_features(features)
