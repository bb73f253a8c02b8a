"""MaskFormer (v1)'s transformer predictor, ``StandardTransformerDecoder``.

A DETR encoder-decoder over one feature map (``MASK_FORMER.TRANSFORMER_IN_FEATURE``: a backbone
feature, ``"transformer_encoder"`` or ``"pixel_embedding"``) turns learned queries into class
logits and mask embeddings; masks are the dot products of the embeddings with the per-pixel mask
features. Parameter names equal upstream Mask2Former's
``transformer_decoder/maskformer_transformer_decoder.py``.
"""

from typing import Optional

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from torch import nn

from .build import TRANSFORMER_DECODER_REGISTRY
from .mask2former_transformer_decoder import MLP
from .position_encoding import PositionEmbeddingSine
from .transformer import Transformer

__all__ = ["StandardTransformerDecoder"]


@TRANSFORMER_DECODER_REGISTRY.register()
class StandardTransformerDecoder(nn.Module):
    """MaskFormer's predictor: ``forward(x, mask_features, mask=None)`` returns
    ``pred_logits`` (B, Q, K + 1) (with ``mask_classification``), ``pred_masks`` (B, Q, H, W)
    and, with deep supervision, ``aux_outputs`` for the earlier decoder layers."""

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dropout: float,
        dim_feedforward: int,
        enc_layers: int,
        dec_layers: int,
        pre_norm: bool,
        deep_supervision: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        """
        Args:
            in_channels: channels of the attended feature map.
            mask_classification: predict a class per query.
            num_classes: K (the class head has K + 1 outputs, the last is "no object").
            hidden_dim: transformer width.
            num_queries: Q.
            nheads: attention heads.
            dropout: transformer dropout.
            dim_feedforward: FFN width.
            enc_layers: encoder layers (``MASK_FORMER.ENC_LAYERS``; 0 in MaskFormer's configs).
            dec_layers: decoder layers (``MASK_FORMER.DEC_LAYERS``), >= 1.
            pre_norm: pre-norm layers.
            deep_supervision: return the predictions of every decoder layer.
            mask_dim: channels of the mask features.
            enforce_input_project: a 1x1 input projection even if in_channels == hidden_dim.
        """
        super().__init__()
        if dec_layers < 1:
            raise ValueError(
                f"StandardTransformerDecoder: dec_layers (MASK_FORMER.DEC_LAYERS) must be >= 1, "
                f"got {dec_layers}"
            )
        if hidden_dim % nheads != 0:
            raise ValueError(
                f"StandardTransformerDecoder: hidden_dim={hidden_dim} must be divisible by "
                f"nheads={nheads}"
            )
        self.mask_classification = mask_classification
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer = Transformer(
            d_model=hidden_dim,
            dropout=dropout,
            nhead=nheads,
            dim_feedforward=dim_feedforward,
            num_encoder_layers=enc_layers,
            num_decoder_layers=dec_layers,
            normalize_before=pre_norm,
            return_intermediate_dec=deep_supervision,
        )
        self.num_queries = num_queries
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if in_channels != hidden_dim or enforce_input_project:
            self.input_proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
            weight_init.c2_xavier_fill(self.input_proj)
        else:
            self.input_proj = nn.Sequential()
        self.aux_loss = deep_supervision
        if mask_classification:
            self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels: int, mask_classification: bool = True):
        mf = cfg.MODEL.MASK_FORMER
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dropout": mf.DROPOUT,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            "enc_layers": mf.ENC_LAYERS,
            "dec_layers": mf.DEC_LAYERS,
            "pre_norm": mf.PRE_NORM,
            "deep_supervision": mf.DEEP_SUPERVISION,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
        }

    def forward(
        self, x: torch.Tensor, mask_features: torch.Tensor, mask: Optional[torch.Tensor] = None
    ):
        """
        Args:
            x: (B, C, h, w) attended features.
            mask_features: (B, M, H, W) per-pixel embeddings.
            mask: optional (B, H', W') bool padding mask (True = padding), resized to (h, w).
        """
        if mask is not None:
            mask = F.interpolate(mask[None].float(), size=x.shape[-2:]).to(torch.bool)[0]
        pos = self.pe_layer(x, mask)
        hs, _ = self.transformer(self.input_proj(x), mask, self.query_embed.weight, pos)
        out = {}
        outputs_class = None
        if self.mask_classification:
            outputs_class = self.class_embed(hs)
            out["pred_logits"] = outputs_class[-1]
        if self.aux_loss:
            masks = torch.einsum("lbqc,bchw->lbqhw", self.mask_embed(hs), mask_features)
            out["pred_masks"] = masks[-1]
            out["aux_outputs"] = self._aux_outputs(outputs_class, masks)
        else:
            out["pred_masks"] = torch.einsum(
                "bqc,bchw->bqhw", self.mask_embed(hs[-1]), mask_features
            )
        return out

    @torch.jit.unused
    def _aux_outputs(self, outputs_class, outputs_masks):
        if outputs_class is None:
            return [{"pred_masks": m} for m in outputs_masks[:-1]]
        return [
            {"pred_logits": c, "pred_masks": m}
            for c, m in zip(outputs_class[:-1], outputs_masks[:-1])
        ]
