"""Image-guided CARAFE refinement of predicted masks (the FreqFusion Mask2Former fork's
``MaskFormerHeadFreqAware``, used by its Cityscapes Swin models).

Each step doubles the resolution of a mask stack and of a small guidance feature: both are
nearest-upsampled to the size of the (resized) input image, and one 3x3 CARAFE kernel per pixel,
predicted from the guidance feature and a learnable high-pass response of the image, reassembles
them. Module and parameter names follow github.com/Linwei-Chen/FreqFusion,
``Mask2Former/mask2former/modeling/meta_arch/mask_former_head.py`` (``LHPFConv3``,
``ImageGuideUpsample``, ``CascadeImageGuideUpsample``), so its checkpoints load with
``strict=True``.
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .carafe import carafe

__all__ = ["LearnableHighPass", "ImageGuidedUpsample", "CascadeImageGuidedUpsample"]


class LearnableHighPass(nn.Module):
    """Depthwise 3x3 high-pass filter ``identity - softmax(weight)`` (stride 1, zero padding).

    ``weight`` (C, 1, 3, 3) starts as ones with a zero centre, i.e. the filter starts as
    ``x - mean of the 8 neighbours`` up to the softmax; ``identity_kernel`` (1, 1, 3, 3) is a
    fixed buffer (a frozen parameter in the official code; same state-dict key).
    """

    def __init__(self, channels: int = 3):
        super().__init__()
        self.channels = channels
        weight = torch.ones(channels, 1, 3, 3)
        weight[:, :, 1, 1] = 0.0
        self.weight = nn.Parameter(weight)
        identity = torch.zeros(1, 1, 3, 3)
        identity[:, :, 1, 1] = 1.0
        self.register_buffer("identity_kernel", identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, channels, H, W) -> (N, channels, H, W)."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"LearnableHighPass: x must be (N, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        lowpass = self.weight.reshape(self.channels, -1).softmax(-1).view_as(self.weight)
        kernel = (self.identity_kernel - lowpass).to(x.dtype)
        return F.conv2d(x, kernel, padding=1, groups=self.channels)


class ImageGuidedUpsample(nn.Module):
    """One refinement step: ``forward(feat, seg, img)`` returns ``(seg, feat)`` at ``img``'s size.

    Kernels (3x3, softmax-normalised) come from ``content_encoder`` over the concatenation of the
    nearest-upsampled ``feat`` and ``extra_conv3(LPF(img))``; they reassemble both the
    nearest-upsampled ``seg`` and ``feat``.
    """

    def __init__(self, feat_channels: int = 4, image_channels: int = 3, up_kernel: int = 3):
        """
        Args:
            feat_channels: channels of the guidance feature.
            image_channels: channels of the image.
            up_kernel: CARAFE kernel size (odd).
        """
        super().__init__()
        if up_kernel < 1 or up_kernel % 2 != 1:
            raise ValueError(
                f"ImageGuidedUpsample: up_kernel must be a positive odd int, got {up_kernel}"
            )
        self.up_kernel = up_kernel
        compressed = feat_channels + 1
        self.content_encoder = nn.Conv2d(compressed, up_kernel * up_kernel, 3, padding=1)
        self.LPF = LearnableHighPass(image_channels)
        self.extra_conv3 = nn.Conv2d(image_channels, 1, kernel_size=3, padding=1)
        self.init_weights()

    def init_weights(self) -> None:
        """As the official module (mmcv ``CARAFEPack.init_weights``): xavier-uniform convs with
        zero biases, then N(0, 1e-3) on the kernel encoder."""
        for conv in (self.content_encoder, self.extra_conv3):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.content_encoder.weight, std=0.001)

    def forward(
        self, feat: torch.Tensor, seg: torch.Tensor, img: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            feat: (N, feat_channels, h, w) guidance feature.
            seg: (N, Q, h, w) masks (logits).
            img: (N, image_channels, H, W) image at the output size.

        Returns:
            (seg, feat) at (H, W).
        """
        size = img.shape[-2:]
        high = self.extra_conv3(self.LPF(img))
        feat = F.interpolate(feat, size=size, mode="nearest")
        seg = F.interpolate(seg, size=size, mode="nearest")
        logits = self.content_encoder(torch.cat([feat, high.to(feat.dtype)], dim=1))
        kernels = logits.softmax(dim=1).contiguous()
        k = self.up_kernel
        return carafe(seg, kernels.to(seg.dtype), k, 1, 1), carafe(feat, kernels, k, 1, 1)


class CascadeImageGuidedUpsample(nn.Module):
    """``n`` :class:`ImageGuidedUpsample` steps (``up.{i}``), each doubling the resolution;
    the image is bilinearly resized to each step's output size. Returns the refined masks."""

    def __init__(self, n: int = 2, use_checkpoint: bool = True, **kwargs):
        """
        Args:
            n: number of 2x steps.
            use_checkpoint: recompute each step in backward while training (as the official
                head does; saves the full-resolution activations).
            kwargs: arguments of :class:`ImageGuidedUpsample`.
        """
        super().__init__()
        if n < 1:
            raise ValueError(f"CascadeImageGuidedUpsample: n must be >= 1, got {n}")
        self.n = n
        self.use_checkpoint = use_checkpoint
        self.up = nn.ModuleList(ImageGuidedUpsample(**kwargs) for _ in range(n))

    def forward(self, feat: torch.Tensor, seg: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """feat (N, C, h, w), seg (N, Q, h, w), img (N, 3, H, W) -> seg (N, Q, 2^n h, 2^n w)."""
        for step in self.up:
            size = (2 * feat.shape[-2], 2 * feat.shape[-1])
            resized = F.interpolate(img, size=size, mode="bilinear", align_corners=False)
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                seg, feat = checkpoint(step, feat, seg, resized, use_reentrant=False)
            else:
                seg, feat = step(feat, seg, resized)
        return seg
