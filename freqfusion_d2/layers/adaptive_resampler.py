"""Adaptive resampling (ARS) of Spatial Frequency Modulation (Chen et al., TPAMI 2025).

Before a downsampling, ARS resamples a feature on a non-uniform grid that is dense where a
learned saliency is high. Magnifying a region by a factor ``a`` divides its local frequencies by
``a`` (the scaling property of the Fourier transform), so high-frequency content is moved below
the Nyquist limit of the following stride-2 layer. The sampling grid follows the saliency-sampler
form of "Learning to Zoom" (Recasens et al., ECCV 2018): each sample is the Gaussian-weighted
mean of the lattice positions around it, weighted by the saliency, with the border rows and
columns pinned so the field of view is kept. The generator and the grid follow the authors'
pre-release ``SaliencySampler`` (github.com/Linwei-Chen/Seg-Aliasing, commit 3058960,
``mmseg_custom/models/backbones/interp2d.py``); the Gaussian sums are computed separably here.
"""

import math
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .sampling_grid import identity_grid, sample_field, to_normalized

__all__ = ["AdaptiveResampler", "gaussian_saliency_offsets", "gaussian_saliency_offsets_direct"]


def gaussian_kernel_1d(radius: int, fwhm: float, *, dtype=torch.float32, device=None):
    """``exp(-4 ln2 d^2 / fwhm^2)`` for ``d = -radius..radius`` (unnormalised: it cancels)."""
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return torch.exp(-4.0 * math.log(2.0) * d * d / (fwhm * fwhm)).to(dtype=dtype, device=device)


def _reflect_indices(size: int, pad: int, device) -> torch.Tensor:
    """Indices of a reflect padding by ``pad`` of an axis of ``size`` (any ``pad``: the
    reflection repeats, which ``F.pad`` does not allow past ``size - 1``)."""
    idx = torch.arange(-pad, size + pad, device=device)
    if size == 1:
        return torch.zeros_like(idx)
    period = 2 * (size - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= size, period - idx, idx)


def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pads the last two dims of ``x`` by ``pad`` (repeating the reflection if needed)."""
    h, w = x.shape[-2:]
    x = x.index_select(-2, _reflect_indices(h, pad, x.device))
    return x.index_select(-1, _reflect_indices(w, pad, x.device))


def _odd_sum(windows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_d weights[d-1] * (w[p + d] - w[p - d])`` over the last dim of ``windows`` (size
    2p+1). Taking the differences first makes the sum exactly zero on a constant input."""
    p = weights.numel()
    diff = windows[..., p + 1 :] - windows[..., :p].flip(-1)
    return diff @ weights


def gaussian_saliency_offsets(saliency: torch.Tensor, radius: int, fwhm: float) -> torch.Tensor:
    """Displacements of the saliency-sampler grid, with separable Gaussian sums.

    The sampler places sample ``q`` at ``sum_d k(d) S(q+d) (q+d) / sum_d k(d) S(q+d)`` with the
    2-D Gaussian ``k`` over a (2r+1)^2 window and ``S`` reflect-padded; the displacement from
    ``q`` is therefore ``sum_d k(d) S(q+d) d / sum_d k(d) S(q+d)``. ``k`` factorises into two
    1-D Gaussians, so each sum is one pass along y and one along x (O(r) per pixel instead of
    O(r^2)); the odd (``d``-weighted) pass is taken over differences ``S(q+d) - S(q-d)``, so a
    uniform saliency gives exactly zero displacement.

    Args:
        saliency: (N, 1, h, w) positive saliency.
        radius: half-size r of the Gaussian window.
        fwhm: full width at half maximum of the Gaussian, in pixels of ``saliency``.

    Returns:
        (N, 2, h, w) displacement (x, y) in pixels of ``saliency``.
    """
    k = gaussian_kernel_1d(radius, fwhm, dtype=saliency.dtype, device=saliency.device)
    odd = k[radius + 1 :] * torch.arange(1, radius + 1, dtype=k.dtype, device=k.device)
    size = 2 * radius + 1
    padded = reflect_pad(saliency, radius)
    along_y = F.conv2d(padded, k.view(1, 1, size, 1))  # (N, 1, h, w + 2r)
    along_x = F.conv2d(padded, k.view(1, 1, 1, size))  # (N, 1, h + 2r, w)
    denominator = F.conv2d(along_y, k.view(1, 1, 1, size))
    num_x = _odd_sum(along_y.unfold(3, size, 1), odd)
    num_y = _odd_sum(along_x.unfold(2, size, 1), odd)
    return torch.cat([num_x, num_y], dim=1) / denominator


def gaussian_saliency_offsets_direct(
    saliency: torch.Tensor, radius: int, fwhm: float
) -> torch.Tensor:
    """The same displacements by the direct (2r+1)^2 convolutions of the pre-release sampler:
    Gaussian-weighted means of the padded absolute coordinates, minus the lattice. The
    reference of :func:`gaussian_saliency_offsets` in tests; O(r^2) per pixel."""
    n, _, h, w = saliency.shape
    k = gaussian_kernel_1d(radius, fwhm, dtype=saliency.dtype, device=saliency.device)
    kernel = (k.view(-1, 1) * k.view(1, -1)).view(1, 1, 2 * radius + 1, 2 * radius + 1)
    padded = reflect_pad(saliency, radius)
    coords = identity_grid(
        h + 2 * radius, w + 2 * radius, dtype=saliency.dtype, device=saliency.device
    )
    coords = coords - radius
    weighted = torch.cat([padded * coords[:, :1], padded * coords[:, 1:]], dim=1)
    denominator = F.conv2d(padded, kernel)
    numerator = F.conv2d(weighted.view(n * 2, 1, *weighted.shape[-2:]), kernel).view(n, 2, h, w)
    return numerator / denominator - identity_grid(
        h, w, dtype=saliency.dtype, device=saliency.device
    )


class _PyramidPooling(nn.Module):
    """PSP context: the input concatenated with 4 pooled branches (bins 1, 2, 3, 7), each a 1x1
    conv to ``channels // 4``, a norm and a ReLU, upsampled back (Zhao et al., CVPR 2017)."""

    def __init__(self, channels: int, norm: Callable[[int], nn.Module], bins=(1, 2, 3, 7)):
        super().__init__()
        branch = channels // 4
        self.bins = tuple(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(channels, branch, 1, bias=False),
                norm(branch),
                nn.ReLU(inplace=True),
            )
            for b in self.bins
        )
        self.out_channels = channels + branch * len(self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        branches = [
            F.interpolate(stage(x), size=size, mode="bilinear", align_corners=True)
            for stage in self.stages
        ]
        return torch.cat([x, *branches], dim=1)


class AdaptiveResampler(nn.Module):
    """Resamples a feature on a saliency-driven non-uniform grid of the same size.

    ``forward(x)`` returns ``(y, grid)``: ``y = grid_sample(x, grid)`` (bilinear, border padding,
    ``align_corners=True``) of ``x``'s size, and ``grid`` the (N, 2, H, W) position field in the
    pixels of ``x`` (x then y; the uniform grid holds ``(j, i)``), which a demodulator needs.

    Steps: a saliency ``s`` is predicted at ``1/stride`` resolution; ``S = h*w*softmax(s)``
    over the positions (mean 1); the grid displacement is the Gaussian-weighted saliency
    mean of the lattice offsets (:func:`gaussian_saliency_offsets`, window ``2*radius+1``,
    ``fwhm`` in saliency pixels); it is upsampled bilinearly to the input size, its x part is
    zero on the first and last columns and its y part on the first and last rows, and the
    positions are clamped to the map.

    The last layer of the saliency generator starts at zero, so a new resampler has a uniform
    saliency, an exactly uniform grid and returns its input (up to the rounding of
    ``grid_sample``).

    Args:
        channels: input channels.
        mode: saliency generator. ``"avgpsp"``: average pooling (kernel ``2*stride+1``,
            stride ``stride``), pyramid pooling context and a 1x1 conv to one channel, as the
            pre-release sampler's default. ``"conv"``: the same pooling and one 3x3 conv.
        stride: resolution divisor of the saliency and of the Gaussian sums (>= 1).
        radius: half-size of the Gaussian window, in saliency pixels.
        fwhm: width of the Gaussian, in saliency pixels.
        norm: norm layer factory for the pyramid-pooling branches (``avgpsp``); default
            ``GroupNorm(1, channels)``, defined for any batch and bin size (batch norm of the
            pre-release sampler needs several images for its 1x1 bin in training).
    """

    MODES = ("avgpsp", "conv")

    def __init__(
        self,
        channels: int,
        *,
        mode: str = "avgpsp",
        stride: int = 2,
        radius: int = 31,
        fwhm: float = 32.0,
        norm: Optional[Callable[[int], nn.Module]] = None,
    ):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"AdaptiveResampler: mode must be one of {self.MODES}, got {mode!r}")
        if int(stride) != stride or stride < 1:
            raise ValueError(f"AdaptiveResampler: stride must be an integer >= 1, got {stride!r}")
        if int(radius) != radius or radius < 1:
            raise ValueError(f"AdaptiveResampler: radius must be an integer >= 1, got {radius!r}")
        if not fwhm > 0:
            raise ValueError(f"AdaptiveResampler: fwhm must be > 0, got {fwhm!r}")
        if channels < 4 and mode == "avgpsp":
            raise ValueError(f"AdaptiveResampler: avgpsp needs channels >= 4, got {channels}")
        self.channels = channels
        self.mode = mode
        self.stride = int(stride)
        self.radius = int(radius)
        self.fwhm = float(fwhm)
        norm = norm if norm is not None else (lambda c: nn.GroupNorm(1, c))
        pool = nn.AvgPool2d(2 * self.stride + 1, stride=self.stride, padding=self.stride)
        if mode == "avgpsp":
            context = _PyramidPooling(channels, norm)
            head = nn.Conv2d(context.out_channels, 1, 1)
            self.saliency = nn.Sequential(pool, context, head)
        else:
            head = nn.Conv2d(channels, 1, 3, padding=1)
            self.saliency = nn.Sequential(pool, head)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)

    def saliency_map(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, h, w) saliency of mean 1 (``h*w*softmax`` of the generator's logits)."""
        logits = self.saliency(x)
        n, _, h, w = logits.shape
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        return (logits.view(n, h * w).softmax(dim=1) * (h * w)).view(n, 1, h, w)

    def grid_from_saliency(self, saliency: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        """The (N, 2, H, W) position field for an input of ``size`` from a (N, 1, h, w) saliency
        at ``1/stride`` of it."""
        height, width = int(size[0]), int(size[1])
        n, _, h, w = saliency.shape
        offsets = gaussian_saliency_offsets(saliency, self.radius, self.fwhm)
        if (h, w) != (height, width):
            # Saliency pixel k is centred on input pixel stride * k (the pooling's centres).
            points = identity_grid(height, width, dtype=offsets.dtype, device=offsets.device)
            offsets = sample_field(offsets, points.expand(n, 2, height, width) / self.stride)
            offsets = offsets * self.stride
        pin = torch.ones(1, 2, height, width, dtype=offsets.dtype, device=offsets.device)
        pin[:, 0, :, 0] = 0
        pin[:, 0, :, -1] = 0
        pin[:, 1, 0, :] = 0
        pin[:, 1, -1, :] = 0
        grid = identity_grid(height, width, dtype=offsets.dtype, device=offsets.device)
        grid = grid + offsets * pin
        upper = grid.new_tensor([width - 1, height - 1]).view(1, 2, 1, 1)
        return torch.minimum(torch.clamp(grid, min=0.0), upper)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Args:
            x: (N, C, H, W) feature.

        Returns:
            ``(y, grid)``: the resampled (N, C, H, W) feature and its (N, 2, H, W) position
            field in pixels of ``x``.
        """
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"AdaptiveResampler: x must be (N, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        grid = self.grid_from_saliency(self.saliency_map(x), (height, width))
        y = F.grid_sample(
            x,
            to_normalized(grid.to(x.dtype), height, width),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )
        return y, grid

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, mode={self.mode!r}, stride={self.stride}, "
            f"radius={self.radius}, fwhm={self.fwhm}"
        )
