"""FreqFusion: frequency-aware feature fusion (Chen et al., TPAMI 2024).

Fuses a high-resolution feature ``hr`` with a low-resolution feature ``lr`` (half its size):
``lr`` is upsampled by an adaptive low-pass filter (ALPF) predicted at high resolution, ``hr`` is
sharpened by an adaptive high-pass filter (AHPF), and an optional offset generator resamples the
upsampled ``lr`` where its local similarity suggests misalignment. Both filters are CARAFE
kernels. Parameter names and shapes match the official module, so its checkpoints load with
``strict=True``.
"""

import logging
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .carafe import carafe
from .local_sim_sampler import LocalSimGuidedSampler

logger = logging.getLogger(__name__)

__all__ = ["FreqFusion", "normalize_kernels"]


def hamming_window_2d(size: int) -> torch.Tensor:
    """(1, 1, size, size) outer product of two numpy Hamming windows, as float32."""
    window = np.outer(np.hamming(size), np.hamming(size))
    return torch.tensor(window, dtype=torch.float32)[None, None]


def normalize_kernels(
    logits: torch.Tensor, kernel_size: int, window: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Turns kernel logits into CARAFE kernels: softmax over the k*k taps of each group, then an
    optional window and renormalisation (together equal to softmax(logits + log(window))).

    Half-precision logits are normalised in float32 and the float32 kernels are returned; other
    dtypes keep their own.

    Args:
        logits: (N, G * k * k, H, W).
        kernel_size: k.
        window: (1, 1, k, k) window, or None for none.

    Returns:
        (N, G * k * k, H, W) contiguous kernels, channel ``g*k*k + i*k + j``.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    n, c, h, w = logits.shape
    kk = kernel_size * kernel_size
    kernels = F.softmax(logits.view(n, c // kk, kk, h, w), dim=2)
    if window is not None:
        kernels = kernels * window.to(kernels.dtype).view(1, 1, kk, 1, 1)
        kernels = kernels / kernels.sum(dim=2, keepdim=True)
    return kernels.reshape(n, c, h, w).contiguous()


class FreqFusion(nn.Module):
    """Frequency-aware fusion of a high-resolution and a 2x smaller low-resolution feature.

    ``forward(hr_feat, lr_feat)`` returns ``(mask_lr, hr_out, lr_out)``: the final low-pass
    kernels (N, up_group * lowpass_kernel**2, H, W), the high-pass-enhanced ``hr_feat`` and the
    upsampled (and optionally resampled) ``lr_feat``, both at ``hr_feat``'s size. Callers fuse them
    as ``hr_out + lr_out`` (equal channels) or by concatenation.

    Sizes: ``hr_feat`` must be exactly twice ``lr_feat`` in height and width (Detectron2's FPN and
    Mask2Former guarantee this through their size divisibility). Odd sizes are rejected rather than
    silently padded, since padding would change the results.
    """

    # Options that select sub-modules: constants for TorchScript, which then compiles only the
    # branches that the built module takes.
    __constants__ = [
        "semi_conv",
        "comp_feat_upsample",
        "use_high_pass",
        "hr_residual",
        "feature_resample",
        "hamming_window",
    ]

    def __init__(
        self,
        hr_channels: int,
        lr_channels: int,
        scale_factor: int = 1,
        lowpass_kernel: int = 5,
        highpass_kernel: int = 3,
        up_group: int = 1,
        encoder_kernel: int = 3,
        encoder_dilation: int = 1,
        compressed_channels: int = 64,
        align_corners: bool = False,
        upsample_mode: str = "nearest",
        feature_resample: bool = False,
        feature_resample_group: int = 4,
        comp_feat_upsample: bool = True,
        use_high_pass: bool = True,
        use_low_pass: bool = True,
        hr_residual: bool = True,
        semi_conv: bool = True,
        hamming_window: bool = True,
        feature_resample_norm: bool = True,
        *,
        sampler_init: str = "official",
    ):
        """
        Args:
            hr_channels, lr_channels: channels of the high- and low-resolution inputs.
            scale_factor: must be 1 (the official module cannot run other values either).
            lowpass_kernel, highpass_kernel: odd sizes of the ALPF and AHPF kernels.
            up_group: CARAFE groups of both filters (contiguous channel blocks); must divide
                ``hr_channels``, ``lr_channels`` and ``compressed_channels``. The official module
                only runs 1; values above 1 give each block its own kernels.
            encoder_kernel, encoder_dilation: geometry of the two kernel encoders (the kernel
                size is also used by the offset generator).
            compressed_channels: channels of the 1x1 compressors.
            align_corners, upsample_mode: interpolation of ``lr_feat`` when ``semi_conv=False``.
            feature_resample: build the offset generator (``dysampler``).
            feature_resample_group: offset groups; must divide ``compressed_channels`` and
                ``lr_channels``.
            comp_feat_upsample: upsample the low-resolution kernel logits with the HR-guided
                filters (needs ``use_high_pass``).
            use_high_pass: build the AHPF encoder and sharpen ``hr_feat``.
            use_low_pass: accepted for compatibility; unused, as in the official module.
            hr_residual: return ``2*hr - lowpass(hr)`` instead of ``hr - lowpass(hr)``.
            semi_conv: predict kernels at high resolution and upsample ``lr_feat`` with them.
            hamming_window: multiply the kernels by a 2-D Hamming window and renormalise.
            feature_resample_norm: GroupNorm on the offset generator's inputs.
            sampler_init: "official" reproduces the official initialisation, in which the
                offset generator's convolutions end up xavier-uniform (the official
                ``init_weights`` overwrites their intended init); "intended" keeps near-zero
                offsets and zero scales instead.
        """
        super().__init__()
        if scale_factor != 1:
            raise ValueError(
                f"FreqFusion: scale_factor must be 1 (kernels are predicted at the high "
                f"resolution), got {scale_factor}"
            )
        for name, k in (("lowpass_kernel", lowpass_kernel), ("highpass_kernel", highpass_kernel)):
            if k < 1 or k % 2 != 1:
                raise ValueError(f"FreqFusion: {name} must be a positive odd int, got {k}")
        for name, c in (
            ("hr_channels", hr_channels),
            ("lr_channels", lr_channels),
            ("compressed_channels", compressed_channels),
        ):
            if c % up_group != 0:
                raise ValueError(f"FreqFusion: up_group={up_group} must divide {name}={c}")
        if feature_resample and lr_channels % feature_resample_group != 0:
            raise ValueError(
                f"FreqFusion: feature_resample_group={feature_resample_group} must divide "
                f"lr_channels={lr_channels}"
            )
        if semi_conv and comp_feat_upsample and not use_high_pass:
            raise ValueError(
                "FreqFusion: comp_feat_upsample=True needs use_high_pass=True (the official "
                "module raises NotImplementedError for this combination)"
            )
        if upsample_mode not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"FreqFusion: unsupported upsample_mode {upsample_mode!r}")
        if sampler_init not in ("official", "intended"):
            raise ValueError(
                f"FreqFusion: sampler_init must be 'official' or 'intended', got {sampler_init!r}"
            )
        self.scale_factor = scale_factor
        self.lowpass_kernel = lowpass_kernel
        self.highpass_kernel = highpass_kernel
        self.up_group = up_group
        self.encoder_kernel = encoder_kernel
        self.encoder_dilation = encoder_dilation
        self.compressed_channels = compressed_channels
        self.align_corners = align_corners
        self.upsample_mode = upsample_mode
        self.hr_residual = hr_residual
        self.use_high_pass = use_high_pass
        self.use_low_pass = use_low_pass
        self.semi_conv = semi_conv
        self.feature_resample = feature_resample
        self.comp_feat_upsample = comp_feat_upsample
        self.hamming_window = hamming_window

        self.hr_channel_compressor = nn.Conv2d(hr_channels, compressed_channels, 1)
        self.lr_channel_compressor = nn.Conv2d(lr_channels, compressed_channels, 1)
        self.content_encoder = self._kernel_encoder(lowpass_kernel)
        if feature_resample:
            self.dysampler = LocalSimGuidedSampler(
                compressed_channels,
                groups=feature_resample_group,
                kernel_size=encoder_kernel,
                norm=feature_resample_norm,
            )
        if use_high_pass:
            self.content_encoder2 = self._kernel_encoder(highpass_kernel)
        # Checkpoints store the windows, with shape (1,) when the window is off.
        if hamming_window:
            self.register_buffer("hamming_lowpass", hamming_window_2d(lowpass_kernel))
            self.register_buffer("hamming_highpass", hamming_window_2d(highpass_kernel))
        else:
            self.register_buffer("hamming_lowpass", torch.ones(1))
            self.register_buffer("hamming_highpass", torch.ones(1))
        self.init_weights(sampler_init)

    def _kernel_encoder(self, kernel_size: int) -> nn.Conv2d:
        return nn.Conv2d(
            self.compressed_channels,
            kernel_size**2 * self.up_group * self.scale_factor**2,
            self.encoder_kernel,
            padding=(self.encoder_kernel - 1) * self.encoder_dilation // 2,
            dilation=self.encoder_dilation,
        )

    def init_weights(self, sampler_init: str = "official") -> None:
        """Xavier-uniform on every convolution (the offset generator's included, as in the
        official code), then N(0, 1e-3) on the two kernel encoders."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for encoder in (self.content_encoder, getattr(self, "content_encoder2", None)):
            if encoder is not None:
                nn.init.normal_(encoder.weight, std=0.001)
                nn.init.zeros_(encoder.bias)
        if sampler_init == "intended" and self.feature_resample:
            self.dysampler.reset_offset_parameters()

    def _normalize(self, logits: torch.Tensor, kernel_size: int, window: torch.Tensor):
        return normalize_kernels(logits, kernel_size, window if self.hamming_window else None)

    def forward(self, hr_feat: torch.Tensor, lr_feat: torch.Tensor, use_checkpoint: bool = False):
        """
        Args:
            hr_feat: (N, hr_channels, H, W).
            lr_feat: (N, lr_channels, H/2, W/2).
            use_checkpoint: recompute the forward in backward (non-reentrant checkpointing).

        Returns:
            (mask_lr, hr_out, lr_out) as described in the class docstring.
        """
        if not torch.jit.is_scripting():
            # Scripted modules leave the checks to the compiled ops and never checkpoint.
            self._check_inputs(hr_feat, lr_feat)
            if use_checkpoint:
                return checkpoint(self._forward, hr_feat, lr_feat, use_reentrant=False)
        return self._forward(hr_feat, lr_feat)

    def _check_inputs(self, hr_feat: torch.Tensor, lr_feat: torch.Tensor) -> None:
        for name, t, c in (
            ("hr_feat", hr_feat, self.hr_channel_compressor.in_channels),
            ("lr_feat", lr_feat, self.lr_channel_compressor.in_channels),
        ):
            if t.dim() != 4 or t.shape[1] != c:
                raise ValueError(
                    f"FreqFusion: {name} must be (N, {c}, H, W), got shape {tuple(t.shape)}"
                )
        if hr_feat.shape[0] != lr_feat.shape[0] or tuple(hr_feat.shape[-2:]) != (
            2 * lr_feat.shape[-2],
            2 * lr_feat.shape[-1],
        ):
            raise ValueError(
                f"FreqFusion: hr_feat must be exactly twice the size of lr_feat with the same "
                f"batch, got hr_feat {tuple(hr_feat.shape)} and lr_feat {tuple(lr_feat.shape)}; "
                f"pad the input image to a multiple of the coarsest stride"
            )

    def _forward(self, hr_feat: torch.Tensor, lr_feat: torch.Tensor):
        kl, kh, g = self.lowpass_kernel, self.highpass_kernel, self.up_group
        comp_hr = self.hr_channel_compressor(hr_feat)
        comp_lr = self.lr_channel_compressor(lr_feat)
        hr_size = comp_hr.shape[-2:]
        logits_hr: Optional[torch.Tensor] = None
        if self.semi_conv and self.comp_feat_upsample:
            # Sharpen the compressed hr feature with an initial high-pass filter, predict the
            # low-pass kernels from it, and upsample the low-resolution logits with them.
            logits_hh = self.content_encoder2(comp_hr)
            init_hp = self._normalize(logits_hh, kh, self.hamming_highpass)
            comp_hr = 2 * comp_hr - carafe(comp_hr, init_hp, kh, g, 1)
            logits_lh = self.content_encoder(comp_hr)
            init_lp = self._normalize(logits_lh, kl, self.hamming_lowpass)
            logits_lr = logits_lh + carafe(self.content_encoder(comp_lr), init_lp, kl, g, 2)
            mask_lr = self._normalize(logits_lr, kl, self.hamming_lowpass)
            logits_hr = logits_hh + carafe(self.content_encoder2(comp_lr), mask_lr, kl, g, 2)
        else:
            if self.semi_conv:
                logits_lr = self.content_encoder(comp_hr) + F.interpolate(
                    self.content_encoder(comp_lr), size=hr_size, mode="nearest"
                )
                if self.use_high_pass:
                    logits_hr = self.content_encoder2(comp_hr) + F.interpolate(
                        self.content_encoder2(comp_lr), size=hr_size, mode="nearest"
                    )
            else:
                comp = F.interpolate(comp_lr, size=hr_size, mode="nearest") + comp_hr
                logits_lr = self.content_encoder(comp)
                if self.use_high_pass:
                    logits_hr = self.content_encoder2(comp)
            mask_lr = self._normalize(logits_lr, kl, self.hamming_lowpass)

        if self.semi_conv:
            lr_out = carafe(lr_feat, mask_lr, kl, g, 2)
        else:
            align = None if self.upsample_mode == "nearest" else self.align_corners
            lr_up = F.interpolate(
                lr_feat, size=hr_feat.shape[-2:], mode=self.upsample_mode, align_corners=align
            )
            lr_out = carafe(lr_up, mask_lr, kl, g, 1)

        hr_out = hr_feat
        if self.use_high_pass and logits_hr is not None:
            mask_hr = self._normalize(logits_hr, kh, self.hamming_highpass)
            hr_out = hr_feat - carafe(hr_feat, mask_hr, kh, g, 1)
            if self.hr_residual:
                hr_out = hr_out + hr_feat

        if self.feature_resample:
            lr_out = self.dysampler(hr_x=comp_hr, lr_x=comp_lr, feat2sample=lr_out)
        return mask_lr, hr_out, lr_out
