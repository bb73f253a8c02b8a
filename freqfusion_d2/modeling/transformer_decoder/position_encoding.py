"""Sine positional encoding of a feature map (DETR style), as used by Mask2Former."""

import math
from typing import Optional

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Fixed 2-D sine/cosine encoding of the row and column index of every pixel.

    For an input of shape (B, *, H, W) the output is a float32 tensor (B, 2 * num_pos_feats, H, W):
    channels ``[0, num_pos_feats)`` encode the row, ``[num_pos_feats, 2 * num_pos_feats)`` the
    column. With ``normalize`` the 1-based coordinates are divided by (size + 1e-6) and scaled to
    ``scale``. Padding masks are not supported: every pixel counts as valid, which is how
    Mask2Former always calls it. The module has no state.
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000,
        normalize: bool = False,
        scale: Optional[float] = None,
    ):
        """
        Args:
            num_pos_feats: channels per axis.
            temperature: base of the geometric frequency progression.
            normalize: normalise coordinates to (0, scale].
            scale: normalisation range; only valid with ``normalize`` (default 2*pi).
        """
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: scale given but normalize is False")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W); only its shape and device are used.
            mask: optional (B, H, W) bool padding mask (True = padding): positions then count
                the valid pixels only (MaskFormer v1's decoder passes one; Mask2Former never).

        Returns:
            (B, 2 * num_pos_feats, H, W) float32 encoding.
        """
        if mask is not None:
            return self._masked(x, mask)
        b, _, h, w = x.shape
        device = x.device
        y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=device)
        x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=device)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (h + eps) * self.scale
            x_embed = x_embed / (w + eps) * self.scale
        n = self.num_pos_feats
        dim_t = torch.arange(n, dtype=torch.float32, device=device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / n)
        pos_y = y_embed[:, None] / dim_t  # (H, n)
        pos_x = x_embed[:, None] / dim_t  # (W, n)
        # Even channels take the sine, odd channels the cosine.
        pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
        pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
        pos = torch.cat(
            (pos_y[:, None, :].expand(h, w, n), pos_x[None, :, :].expand(h, w, n)), dim=2
        )
        return pos.permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1).contiguous()

    def _masked(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if mask.shape != (x.shape[0],) + tuple(x.shape[-2:]) or mask.dtype != torch.bool:
            raise ValueError(
                f"PositionEmbeddingSine: mask must be a bool (B, H, W) = "
                f"{(x.shape[0],) + tuple(x.shape[-2:])} tensor, got {mask.dtype} "
                f"{tuple(mask.shape)}"
            )
        valid = ~mask
        y_embed = valid.cumsum(1, dtype=torch.float32)
        x_embed = valid.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        n = self.num_pos_feats
        dim_t = torch.arange(n, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / n)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).contiguous()
