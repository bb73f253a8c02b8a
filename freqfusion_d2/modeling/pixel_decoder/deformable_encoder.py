"""The multi-scale deformable-attention transformer encoder of Mask2Former's pixel decoder."""

import copy
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from freqfusion_d2.layers import MSDeformAttn

__all__ = ["MSDeformAttnTransformerEncoderOnly", "MSDeformAttnTransformerEncoderLayer"]


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then a ReLU FFN."""

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index):
        """src, pos: (N, S, C); reference_points: (N, S, L, 2)."""
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout2(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout3(ffn))


class MSDeformAttnTransformerEncoder(nn.Module):
    """A stack of identical encoder layers (``layers.{j}``)."""

    def __init__(self, encoder_layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))

    @staticmethod
    def get_reference_points(spatial_shapes, device) -> torch.Tensor:
        """(1, S, 2) normalised (x, y) pixel centres of every level, concatenated over levels.

        Padding is never masked, so all valid ratios are 1 and every target level shares the
        same reference point.
        """
        points = []
        for h, w in spatial_shapes.tolist():
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                indexing="ij",
            )
            points.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), dim=-1))
        return torch.cat(points, dim=0)[None]

    def forward(self, src, spatial_shapes, level_start_index, pos):
        n_levels = spatial_shapes.shape[0]
        ref = self.get_reference_points(spatial_shapes, src.device)
        ref = ref[:, :, None, :].expand(src.shape[0], -1, n_levels, -1)
        output = src
        for layer in self.layers:
            output = layer(output, pos, ref, spatial_shapes, level_start_index)
        return output


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Deformable encoder over a list of feature levels, with a learnt per-level embedding.

    ``level_embed`` is a plain (L, C) parameter (not an Embedding, which matters for weight
    decay), and ``encoder.layers.{j}`` are the layers, as in upstream checkpoints.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        layer = MSDeformAttnTransformerEncoderLayer(
            d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points
        )
        self.encoder = MSDeformAttnTransformerEncoder(layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(
        self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            srcs: L tensors (N, C, H_l, W_l).
            pos_embeds: L positional encodings of the same shapes.

        Returns:
            (memory (N, S, C), spatial_shapes (L, 2) int64, level_start_index (L,) int64).
        """
        src_flatten, pos_flatten, shapes = [], [], []
        for lvl, (src, pos) in enumerate(zip(srcs, pos_embeds)):
            shapes.append(src.shape[-2:])
            src_flatten.append(src.flatten(2).transpose(1, 2))
            pos_flatten.append(
                pos.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
            )
        src_flatten = torch.cat(src_flatten, 1)
        pos_flatten = torch.cat(pos_flatten, 1)
        spatial_shapes = torch.as_tensor(
            [tuple(s) for s in shapes], dtype=torch.long, device=src_flatten.device
        )
        level_start_index = torch.cat(
            (spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1])
        )
        memory = self.encoder(src_flatten, spatial_shapes, level_start_index, pos_flatten)
        return memory, spatial_shapes, level_start_index
