"""The offset generator of FreqFusion: a local-similarity-guided resampler (``dysampler``)."""

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["LocalSimGuidedSampler", "local_cosine_similarity"]

# Legacy parameter names of the pre-release sampler, renamed on load.
_LEGACY_NAMES = {"scope.": "direct_scale.", "hr_scope.": "hr_direct_scale."}


def local_cosine_similarity(x: torch.Tensor, window: int = 3, dilation: int = 2) -> torch.Tensor:
    """Cosine similarity of every pixel with its ``window**2 - 1`` dilated neighbours.

    Neighbours outside the map are zero vectors and give a similarity of 0. Half-precision inputs
    are computed in float32 (in float16 the zero-padded neighbours would give 0/0 = NaN) and the
    result is returned in float32.

    Args:
        x: (N, C, H, W) features.
        window: neighbourhood size (odd).
        dilation: spacing of the neighbours.

    Returns:
        (N, window**2 - 1, H, W): neighbours in row-major order, the centre left out.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    # Same arithmetic as F.cosine_similarity (each vector divided by its norm clamped to 1e-8,
    # then the products summed), but every vector is normalised once and the neighbours are
    # shifted views, instead of unfolding window**2 copies of the map.
    h, w = x.shape[-2:]
    unit = x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-8)
    pad = (window // 2) * dilation
    padded = F.pad(unit, (pad, pad, pad, pad))
    sims = []
    for i in range(window):
        for j in range(window):
            if 2 * i + 1 == window and 2 * j + 1 == window:
                continue
            neighbour = padded[
                ..., i * dilation : i * dilation + h, j * dilation : j * dilation + w
            ]
            sims.append((unit * neighbour).sum(dim=1))
    return torch.stack(sims, dim=1)


@functools.lru_cache(maxsize=None)
def _warn_legacy_names(prefix: str) -> None:
    logger.warning(
        "Renamed legacy sampler parameters %s{scope,hr_scope}.* to "
        "{direct_scale,hr_direct_scale}.*",
        prefix,
    )


class LocalSimGuidedSampler(nn.Module):
    """Resamples the low-pass upsampled feature at learned offsets (FreqFusion's ``dysampler``).

    Offsets are predicted at the low-resolution grid, from both the low- and high-resolution
    compressed features concatenated with their local cosine similarities, for each of ``groups``
    contiguous channel blocks and each of the 2x2 sub-pixels of a low-resolution pixel.

    Parameter names match the official module (``offset``, ``direct_scale``, ``hr_offset``,
    ``hr_direct_scale``, ``norm_hr``, ``norm_lr``, buffer ``init_pos``); the legacy names ``scope``
    and ``hr_scope`` are renamed when a state dict is loaded.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        groups: int = 4,
        kernel_size: int = 1,
        local_window: int = 3,
        norm: bool = True,
    ):
        """
        Args:
            in_channels: channels of the compressed features.
            groups: offset groups; must divide ``in_channels`` and the resampled feature's channels.
            kernel_size: kernel size of the offset convolutions.
            local_window: neighbourhood of the cosine similarities.
            norm: GroupNorm(in_channels // 8) on both inputs.
        """
        super().__init__()
        if in_channels < groups or in_channels % groups != 0:
            raise ValueError(
                f"LocalSimGuidedSampler: groups={groups} must divide in_channels={in_channels}"
            )
        if norm and (in_channels < 8 or in_channels % (in_channels // 8) != 0):
            raise ValueError(
                f"LocalSimGuidedSampler: norm=True needs in_channels >= 8 divisible by "
                f"in_channels // 8, got in_channels={in_channels}"
            )
        self.scale = 2
        self.groups = groups
        self.local_window = local_window
        sim_channels = in_channels + local_window * local_window - 1
        lr_out = 2 * groups * self.scale**2
        hr_out = 2 * groups
        pad = kernel_size // 2
        self.offset = nn.Conv2d(sim_channels, lr_out, kernel_size, padding=pad)
        self.direct_scale = nn.Conv2d(sim_channels, lr_out, kernel_size, padding=pad)
        self.hr_offset = nn.Conv2d(sim_channels, hr_out, kernel_size, padding=pad)
        self.hr_direct_scale = nn.Conv2d(sim_channels, hr_out, kernel_size, padding=pad)
        if norm:
            self.norm_hr = nn.GroupNorm(in_channels // 8, in_channels)
            self.norm_lr = nn.GroupNorm(in_channels // 8, in_channels)
        else:
            self.norm_hr = nn.Identity()
            self.norm_lr = nn.Identity()
        self.register_buffer("init_pos", self._init_pos())
        self.reset_offset_parameters()

    def _init_pos(self) -> torch.Tensor:
        # Sub-pixel centres of the 2x2 output block in low-resolution pixels: x then y, each
        # laid out as (group, row a, column b).
        h = (torch.arange(self.scale, dtype=torch.float32) - (self.scale - 1) / 2) / self.scale
        ys, xs = torch.meshgrid(h, h, indexing="ij")
        pos = torch.stack([xs, ys]).reshape(2, 1, -1).repeat(1, self.groups, 1)
        return pos.reshape(1, -1, 1, 1)

    def reset_offset_parameters(self) -> None:
        """The intended initialisation: near-zero offsets (N(0, 1e-3)) and zero scales."""
        for conv in (self.offset, self.hr_offset):
            nn.init.normal_(conv.weight, std=0.001)
            nn.init.zeros_(conv.bias)
        for conv in (self.direct_scale, self.hr_direct_scale):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix) :]
            for old, new in _LEGACY_NAMES.items():
                if rest.startswith(old) and prefix + new + rest[len(old) :] not in state_dict:
                    state_dict[prefix + new + rest[len(old) :]] = state_dict.pop(key)
                    _warn_legacy_names(prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, hr_x: torch.Tensor, lr_x: torch.Tensor, feat2sample: torch.Tensor):
        """
        Args:
            hr_x: (N, C, 2h, 2w) compressed high-resolution feature.
            lr_x: (N, C, h, w) compressed low-resolution feature.
            feat2sample: (N, C', 2h, 2w) feature to resample; C' divisible by ``groups``.

        Returns:
            (N, C', 2h, 2w) resampled feature.
        """
        hr_x = self.norm_hr(hr_x)
        lr_x = self.norm_lr(lr_x)
        hr_sim = torch.cat([hr_x, local_cosine_similarity(hr_x, self.local_window).to(hr_x)], 1)
        lr_sim = torch.cat([lr_x, local_cosine_similarity(lr_x, self.local_window).to(lr_x)], 1)
        offset = self.offset(lr_sim) + F.pixel_unshuffle(self.hr_offset(hr_sim), self.scale)
        gate = self.direct_scale(lr_sim) + F.pixel_unshuffle(
            self.hr_direct_scale(hr_sim), self.scale
        )
        offset = offset * gate.sigmoid() + self.init_pos
        return self._sample(feat2sample, offset)

    def _sample(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        # Half-precision coordinates would be off by up to ~0.03 px on a 64-px map; the grid is
        # small, so half inputs are sampled in float32 (as autocast does for grid_sample).
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        n, _, h, w = offset.shape
        s = self.scale
        offset = offset.view(n, 2, -1, h, w).to(dtype)
        ys, xs = torch.meshgrid(
            torch.arange(h, device=x.device, dtype=dtype) + 0.5,
            torch.arange(w, device=x.device, dtype=dtype) + 0.5,
            indexing="ij",
        )
        coords = torch.stack([xs, ys]).view(1, 2, 1, h, w)
        coords = 2 * (coords + offset)
        # x by the width, y by the height, dividing by the sizes themselves (not by a tensor
        # built from them) so that they stay symbolic when the module is traced or exported.
        coords = torch.stack([coords[:, 0] / w, coords[:, 1] / h], dim=1) - 1
        coords = F.pixel_shuffle(coords.view(n, -1, h, w), s)
        coords = coords.view(n, 2, -1, s * h, s * w).permute(0, 2, 3, 4, 1).flatten(0, 1)
        out = F.grid_sample(
            x.reshape(n * self.groups, -1, x.size(-2), x.size(-1)).to(dtype),
            coords,
            mode="bilinear",
            align_corners=False,
            padding_mode="border",
        )
        return out.view(n, -1, s * h, s * w).to(x.dtype)
