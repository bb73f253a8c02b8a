"""The DETR-style encoder-decoder transformer of MaskFormer (v1).

Used by :class:`StandardTransformerDecoder` (encoder + decoder) and by
``TransformerEncoderPixelDecoder`` (encoder only). Compared with ``torch.nn.Transformer``: the
positional encodings are added to the queries and keys inside every attention, the encoder has no
final LayerNorm in post-norm mode, and the decoder can return the normalised output of every
layer. Module names follow upstream Mask2Former's ``transformer_decoder/transformer.py`` (itself
from DETR), so checkpoints load with ``strict=True``.

All sequences are (S, B, C), as ``nn.MultiheadAttention`` expects by default.
"""

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Transformer",
    "TransformerEncoder",
    "TransformerDecoder",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "activation_fn",
]


def activation_fn(name: str):
    """The activation called ``name`` ("relu", "gelu" or "glu")."""
    table = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    if name not in table:
        raise ValueError(f"activation must be one of {sorted(table)}, got {name!r}")
    return table[name]


def _add_pos(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


class TransformerEncoderLayer(nn.Module):
    """Self-attention + FFN, each with a residual and a LayerNorm (after, or before with
    ``normalize_before``)."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = activation_fn(activation)
        self.normalize_before = normalize_before

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def forward(
        self,
        src: torch.Tensor,
        src_mask: Optional[torch.Tensor] = None,
        src_key_padding_mask: Optional[torch.Tensor] = None,
        pos: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """src, pos: (S, B, C); src_key_padding_mask: (B, S), True = padding."""
        pre = self.normalize_before
        x = self.norm1(src) if pre else src
        q = k = _add_pos(x, pos)
        attn = self.self_attn(
            q, k, value=x, attn_mask=src_mask, key_padding_mask=src_key_padding_mask
        )[0]
        src = src + self.dropout1(attn)
        if not pre:
            src = self.norm1(src)
        x = self.norm2(src) if pre else src
        src = src + self.dropout2(self._ffn(x))
        return src if pre else self.norm2(src)


class TransformerDecoderLayer(nn.Module):
    """Query self-attention, cross-attention to the memory and an FFN, each with a residual and a
    LayerNorm (after, or before with ``normalize_before``)."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = activation_fn(activation)
        self.normalize_before = normalize_before

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        tgt_mask: Optional[torch.Tensor] = None,
        memory_mask: Optional[torch.Tensor] = None,
        tgt_key_padding_mask: Optional[torch.Tensor] = None,
        memory_key_padding_mask: Optional[torch.Tensor] = None,
        pos: Optional[torch.Tensor] = None,
        query_pos: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """tgt, query_pos: (Q, B, C); memory, pos: (S, B, C)."""
        pre = self.normalize_before
        x = self.norm1(tgt) if pre else tgt
        q = k = _add_pos(x, query_pos)
        attn = self.self_attn(
            q, k, value=x, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask
        )[0]
        tgt = tgt + self.dropout1(attn)
        if not pre:
            tgt = self.norm1(tgt)
        x = self.norm2(tgt) if pre else tgt
        attn = self.multihead_attn(
            query=_add_pos(x, query_pos),
            key=_add_pos(memory, pos),
            value=memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
        )[0]
        tgt = tgt + self.dropout2(attn)
        if not pre:
            tgt = self.norm2(tgt)
        x = self.norm3(tgt) if pre else tgt
        tgt = tgt + self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))
        return tgt if pre else self.norm3(tgt)


class TransformerEncoder(nn.Module):
    """``num_layers`` copies of an encoder layer and an optional final norm."""

    def __init__(self, encoder_layer: nn.Module, num_layers: int, norm: Optional[nn.Module] = None):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, src, mask=None, src_key_padding_mask=None, pos=None) -> torch.Tensor:
        """See :meth:`TransformerEncoderLayer.forward`."""
        out = src
        for layer in self.layers:
            out = layer(out, src_mask=mask, src_key_padding_mask=src_key_padding_mask, pos=pos)
        return out if self.norm is None else self.norm(out)


class TransformerDecoder(nn.Module):
    """``num_layers`` copies of a decoder layer and a final norm.

    Returns (L, Q, B, C): the normalised output of every layer when ``return_intermediate``,
    else (1, Q, B, C) with the last one.
    """

    def __init__(
        self,
        decoder_layer: nn.Module,
        num_layers: int,
        norm: Optional[nn.Module] = None,
        return_intermediate: bool = False,
    ):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm
        self.return_intermediate = return_intermediate
        if return_intermediate and norm is None:
            raise ValueError("TransformerDecoder: return_intermediate needs a norm")

    def forward(self, tgt, memory, **kwargs) -> torch.Tensor:
        """tgt: (Q, B, C); memory: (S, B, C); kwargs as :meth:`TransformerDecoderLayer.forward`."""
        out = tgt
        intermediate = []
        for layer in self.layers:
            out = layer(out, memory, **kwargs)
            if self.return_intermediate:
                intermediate.append(self.norm(out))
        if self.return_intermediate:
            return torch.stack(intermediate)
        if self.norm is not None:
            out = self.norm(out)
        return out.unsqueeze(0)


def xavier_init_matrices(module: nn.Module) -> None:
    """Xavier-uniform on every parameter with more than one dimension (DETR's init)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class Transformer(nn.Module):
    """Encoder over the flattened feature map, decoder from zero targets with learned query
    positions; returns the decoder outputs (L, B, Q, C) and the memory (B, C, H, W)."""

    def __init__(
        self,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        normalize_before: bool = False,
        return_intermediate_dec: bool = False,
    ):
        super().__init__()
        enc_layer = TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation, normalize_before
        )
        self.encoder = TransformerEncoder(
            enc_layer, num_encoder_layers, nn.LayerNorm(d_model) if normalize_before else None
        )
        dec_layer = TransformerDecoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation, normalize_before
        )
        self.decoder = TransformerDecoder(
            dec_layer,
            num_decoder_layers,
            nn.LayerNorm(d_model),
            return_intermediate=return_intermediate_dec,
        )
        xavier_init_matrices(self)
        self.d_model = d_model
        self.nhead = nhead

    def forward(self, src, mask, query_embed, pos_embed):
        """
        Args:
            src: (B, C, H, W) features.
            mask: (B, H, W) bool padding mask or None.
            query_embed: (Q, C) query positions.
            pos_embed: (B, C, H, W) positional encoding of ``src``.
        """
        bs, c, h, w = src.shape
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        query_embed = query_embed.unsqueeze(1).repeat(1, bs, 1)
        if mask is not None:
            mask = mask.flatten(1)
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        hs = self.decoder(
            torch.zeros_like(query_embed),
            memory,
            memory_key_padding_mask=mask,
            pos=pos_embed,
            query_pos=query_embed,
        )
        return hs.transpose(1, 2), memory.permute(1, 2, 0).reshape(bs, c, h, w)
