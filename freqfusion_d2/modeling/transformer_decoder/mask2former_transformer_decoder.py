"""Mask2Former's masked-attention transformer decoder (``MultiScaleMaskedTransformerDecoder``).

Parameter names equal upstream Mask2Former's, so its checkpoints load with ``strict=True``.
"""

import logging
from typing import Dict, List, Optional

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d
from torch import nn

from .build import TRANSFORMER_DECODER_REGISTRY
from .position_encoding import PositionEmbeddingSine

logger = logging.getLogger(__name__)

__all__ = ["MultiScaleMaskedTransformerDecoder"]


def _xavier_init(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def _with_pos(tensor: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return tensor if pos is None else tensor + pos


class SelfAttentionLayer(nn.Module):
    """Self-attention among the queries with a residual and a LayerNorm (post- or pre-norm)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before=False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor, query_pos: Optional[torch.Tensor] = None):
        """tgt, query_pos: (Q, B, D)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        q = k = _with_pos(x, query_pos)
        tgt = tgt + self.dropout(self.self_attn(q, k, value=x)[0])
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Masked cross-attention from the queries to one feature level."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before=False):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        attn_mask: Optional[torch.Tensor] = None,
        pos: Optional[torch.Tensor] = None,
        query_pos: Optional[torch.Tensor] = None,
    ):
        """tgt, query_pos: (Q, B, D); memory, pos: (S, B, D); attn_mask: (B * heads, Q, S)
        bool, True = blocked."""
        x = self.norm(tgt) if self.normalize_before else tgt
        out = self.multihead_attn(
            query=_with_pos(x, query_pos),
            key=_with_pos(memory, pos),
            value=memory,
            attn_mask=attn_mask,
        )[0]
        tgt = tgt + self.dropout(out)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Two-layer ReLU feed-forward block with a residual and a LayerNorm."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout=0.0, normalize_before=False):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: torch.Tensor):
        x = self.norm(tgt) if self.normalize_before else tgt
        tgt = tgt + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x)))))
        return tgt if self.normalize_before else self.norm(tgt)


class MLP(nn.Module):
    """Linear layers with ReLU between them (``layers.{i}``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Mask2Former's decoder: learnable queries refined by masked cross-attention to three feature
    levels in turn (coarsest first), self-attention and an FFN; after the initial queries and
    after every layer, a class and a mask are predicted for each query, and the predicted mask
    (thresholded at 0.5 after bilinear resizing) restricts the next cross-attention.
    """

    _version = 2
    num_feature_levels = 3

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            # MaskFormer v1 called the query features "static_query".
            renamed = False
            for k in list(state_dict.keys()):
                if k.startswith(prefix) and "static_query" in k[len(prefix) :]:
                    new_k = prefix + k[len(prefix) :].replace("static_query", "query_feat")
                    state_dict[new_k] = state_dict.pop(k)
                    renamed = True
            if renamed:
                logger.warning(
                    "Renamed the legacy key 'static_query' to 'query_feat' in %s; re-save the "
                    "checkpoint to drop this conversion.",
                    prefix.rstrip(".") or "the decoder",
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

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
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        """
        Args:
            in_channels: channels of the multi-scale features.
            mask_classification: must be True (Mask2Former always classifies its masks).
            num_classes: K; the class head predicts K + 1 logits (the last is "no object").
            hidden_dim: decoder width D.
            num_queries: Q.
            nheads: attention heads.
            dim_feedforward: FFN width.
            dec_layers: number of decoder layers (``MASK_FORMER.DEC_LAYERS - 1``), >= 1.
            pre_norm: pre-norm layers instead of post-norm.
            mask_dim: channels of the mask features the mask embeddings are dotted with.
            enforce_input_project: build 1x1 input projections even if in_channels == D.
        """
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder: mask_classification must be True")
        if dec_layers < 1:
            raise ValueError(
                f"MultiScaleMaskedTransformerDecoder: dec_layers must be >= 1 (MASK_FORMER."
                f"DEC_LAYERS >= 2), got {dec_layers}"
            )
        if hidden_dim % nheads != 0:
            raise ValueError(
                f"MultiScaleMaskedTransformerDecoder: hidden_dim={hidden_dim} must be divisible "
                f"by nheads={nheads}"
            )
        self.mask_classification = mask_classification
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList()
        self.transformer_cross_attention_layers = nn.ModuleList()
        self.transformer_ffn_layers = nn.ModuleList()
        for _ in range(dec_layers):
            # Dropout is fixed at 0.0, as upstream.
            self.transformer_self_attention_layers.append(
                SelfAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            )
            self.transformer_cross_attention_layers.append(
                CrossAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            )
            self.transformer_ffn_layers.append(
                FFNLayer(hidden_dim, dim_feedforward, dropout=0.0, normalize_before=pre_norm)
            )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(proj)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())
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
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            # DEC_LAYERS counts the prediction made from the initial queries.
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
        }

    def forward(
        self,
        x: List[torch.Tensor],
        mask_features: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
    ) -> Dict[str, object]:
        """
        Args:
            x: three (B, in_channels, h_i, w_i) features, coarsest first.
            mask_features: (B, mask_dim, H, W) per-pixel embeddings.
            mask: ignored (padding is never masked, as upstream).

        Returns:
            dict with ``pred_logits`` (B, Q, K + 1), ``pred_masks`` (B, Q, H, W) of the last
            layer and ``aux_outputs``: the ``dec_layers`` earlier predictions, first to last.
        """
        if len(x) != self.num_feature_levels:
            raise ValueError(
                f"MultiScaleMaskedTransformerDecoder: expected {self.num_feature_levels} feature "
                f"levels, got {len(x)}"
            )
        src, pos, size_list = [], [], []
        for i in range(self.num_feature_levels):
            size_list.append(x[i].shape[-2:])
            pos.append(self.pe_layer(x[i]).flatten(2).permute(2, 0, 1))
            src.append(
                (
                    self.input_proj[i](x[i]).flatten(2) + self.level_embed.weight[i][None, :, None]
                ).permute(2, 0, 1)
            )
        bs = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)

        predictions_class, predictions_mask = [], []
        outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
            output, mask_features, size_list[0]
        )
        predictions_class.append(outputs_class)
        predictions_mask.append(outputs_mask)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            # A query whose mask blocks every position would make attention NaN; let it attend
            # everywhere instead (written without an in-place boolean index, which ONNX lacks).
            attn_mask = attn_mask & ~attn_mask.all(dim=-1, keepdim=True)
            output = self.transformer_cross_attention_layers[i](
                output, src[level], attn_mask=attn_mask, pos=pos[level], query_pos=query_embed
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
            output = self.transformer_ffn_layers[i](output)
            outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(
                output, mask_features, size_list[(i + 1) % self.num_feature_levels]
            )
            predictions_class.append(outputs_class)
            predictions_mask.append(outputs_mask)

        return {
            "pred_logits": predictions_class[-1],
            "pred_masks": predictions_mask[-1],
            "aux_outputs": [
                {"pred_logits": c, "pred_masks": m}
                for c, m in zip(predictions_class[:-1], predictions_mask[:-1])
            ],
        }

    def forward_prediction_heads(self, output, mask_features, attn_mask_target_size):
        """Class logits, mask logits and the next cross-attention mask from (Q, B, D) queries.

        The attention mask is (B * heads, Q, h * w) bool with row ``b * heads + head`` (the
        layout ``nn.MultiheadAttention`` expects); True blocks a position.
        """
        decoder_output = self.decoder_norm(output).transpose(0, 1)
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)
        outputs_mask = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        attn_mask = F.interpolate(
            outputs_mask, size=attn_mask_target_size, mode="bilinear", align_corners=False
        )
        attn_mask = (
            attn_mask.sigmoid()
            .flatten(2)
            .unsqueeze(1)
            .repeat(1, self.num_heads, 1, 1)
            .flatten(0, 1)
            < 0.5
        ).detach()
        return outputs_class, outputs_mask, attn_mask
