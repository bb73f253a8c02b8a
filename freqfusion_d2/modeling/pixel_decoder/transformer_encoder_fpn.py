"""MaskFormer (v1)'s ``TransformerEncoderPixelDecoder``: :class:`BasePixelDecoder` whose coarsest
level first goes through a 1x1 projection and a transformer encoder (upstream Mask2Former's
``pixel_decoder/fpn.py``); the encoder output is returned as the ``"transformer_encoder"``
feature of MaskFormer's predictor."""

from typing import Callable, Dict, Optional, Union

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from ..transformer_decoder.transformer import (
    TransformerEncoder,
    TransformerEncoderLayer,
    xavier_init_matrices,
)
from .fpn import BasePixelDecoder, _output_conv

__all__ = ["TransformerEncoderOnly", "TransformerEncoderPixelDecoder"]


class TransformerEncoderOnly(nn.Module):
    """A DETR encoder over a (B, C, H, W) map; returns a map of the same shape."""

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        layer = TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation, normalize_before
        )
        self.encoder = TransformerEncoder(
            layer, num_encoder_layers, nn.LayerNorm(d_model) if normalize_before else None
        )
        xavier_init_matrices(self)
        self.d_model = d_model
        self.nhead = nhead

    def forward(self, src: torch.Tensor, mask: Optional[torch.Tensor], pos_embed: torch.Tensor):
        """src, pos_embed: (B, C, H, W); mask: (B, H, W) bool padding mask or None."""
        bs, c, h, w = src.shape
        seq = src.flatten(2).permute(2, 0, 1)
        pos = pos_embed.flatten(2).permute(2, 0, 1)
        if mask is not None:
            mask = mask.flatten(1)
        memory = self.encoder(seq, src_key_padding_mask=mask, pos=pos)
        return memory.permute(1, 2, 0).reshape(bs, c, h, w)


@SEM_SEG_HEADS_REGISTRY.register()
class TransformerEncoderPixelDecoder(BasePixelDecoder):
    """:class:`BasePixelDecoder` with a transformer encoder on the coarsest level.

    ``forward_features`` returns ``(mask_features, encoder_features, multi_scale_features)``;
    ``encoder_features`` is the encoder output (B, conv_dim, h, w) at the coarsest stride.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        transformer_pre_norm: bool,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
    ):
        """
        Args:
            input_shape, conv_dim, mask_dim, norm: as in :class:`BasePixelDecoder`.
            transformer_dropout: encoder dropout.
            transformer_nheads: encoder heads (must divide conv_dim).
            transformer_dim_feedforward: encoder FFN width.
            transformer_enc_layers: encoder layers.
            transformer_pre_norm: pre-norm encoder layers (adds a final LayerNorm).
        """
        super().__init__(input_shape, conv_dim=conv_dim, mask_dim=mask_dim, norm=norm)
        if conv_dim % transformer_nheads != 0:
            raise ValueError(
                f"TransformerEncoderPixelDecoder: conv_dim={conv_dim} must be divisible by "
                f"transformer_nheads={transformer_nheads}"
            )
        coarsest = max(input_shape.values(), key=lambda s: s.stride)
        self.input_proj = Conv2d(coarsest.channels, conv_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.input_proj)
        self.transformer = TransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            normalize_before=transformer_pre_norm,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        # The coarsest output conv now reads the conv_dim-wide encoder output.
        name = f"layer_{len(self.in_features)}"
        delattr(self, name)
        output = _output_conv(conv_dim, conv_dim, norm)
        self.add_module(name, output)
        self.output_convs[0] = output

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        mf = cfg.MODEL.MASK_FORMER
        ret.update(
            transformer_dropout=mf.DROPOUT,
            transformer_nheads=mf.NHEADS,
            transformer_dim_feedforward=mf.DIM_FEEDFORWARD,
            transformer_enc_layers=cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS,
            transformer_pre_norm=mf.PRE_NORM,
        )
        return ret

    def _coarsest(self, x: torch.Tensor):
        encoded = self.transformer(self.input_proj(x), None, self.pe_layer(x))
        return self.output_convs[0](encoded), encoded
