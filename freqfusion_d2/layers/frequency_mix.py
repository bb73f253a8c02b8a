"""Frequency mixing module (FreqMix) of Seg-Aliasing (Chen et al., ICLR 2024, Sec. 4.2).

FreqMix splits a feature X into a low-pass part L (the de-aliasing box, see
:mod:`freqfusion_d2.layers.dealiasing`) and the high-pass rest ``H = X - L``, and re-weights them
with two spatial maps and two channel attentions:

    W = sigmoid(conv3x3(X))                                  # 2 maps, shared by all channels
    a_L = sqrt(sigmoid(MLP_L(GAP(Re(Z M_L))))^2 + sigmoid(MLP_L(GAP(Im(Z M_L))))^2 + 1e-8)
    a_H = the same with M_H = 1 - M_L and MLP_H
    Y = W_0 a_L L + W_1 a_H H (+ X with ``channel_res``)

with Z the unnormalised spectrum of X. This is the official ``_FrequencyMix`` as configured by
``NyBottleneck`` (Seg-Aliasing ``mmseg_custom/models/backbones/resnet.py``: ``k_list=[1.4]``,
``lp_type='freq_channel_att'``, sigmoid, one spatial group, ``compress_ratio=16``), with the same
parameter names, so its weights load unchanged.

The global average of the unnormalised masked spectrum is the inverse DFT at the origin, so
``GAP(Re(Z M_L))`` is pixel (0, 0) of L and ``GAP(Re(Z M_H))`` pixel (0, 0) of H; the imaginary
averages are the small residue of the one-sided edge bin of the box. ``gap_mode="compat"``
computes exactly these (from ``rfft2``), so the channel attention sees what the official module
sees. The official ``fftshift`` runs over every dimension of the ``(N, C, H, W)`` spectrum: the
channel roll by ``C // 2`` it gives the attention input is reproduced; the batch roll, which makes
the attention of image n use the spectrum of image ``(n - N // 2) mod N`` of the same batch, is
not (it mixes images; with one image per batch both agree).

``gap_mode="abs"`` pools the magnitude ``|Z M|`` instead, as an earlier version of the official
code did; a_L, a_H are then single sigmoids. That is a deviation from the released models.
"""

import math

import torch
from torch import nn

from .dealiasing import check_cutoff, compute_dtype, lowpass_box_masks, rfft_column_weights

__all__ = ["FrequencyMix", "frequency_mix_num_parameters"]

GAP_MODES = ("compat", "abs")
# identity_init: spatial maps start at sigmoid(_IDENTITY_SPATIAL_BIAS); the attention bias is
# chosen so that W * a = 1 exactly.
_IDENTITY_SPATIAL_BIAS = 2.0
_EPS = 1e-8


def frequency_mix_num_parameters(channels: int, reduction: int = 16) -> int:
    """Parameters of one :class:`FrequencyMix`: ``18C + 2`` (3x3 conv to 2 maps) plus two
    MLPs of ``C * (C // r) + C // r + (C // r) * C + C``; 6,674 / 21,538 / 75,842 for
    C = 128 / 256 / 512 and r = 16."""
    hidden = channels // reduction
    return 18 * channels + 2 + 2 * (2 * channels * hidden + hidden + channels)


def _channel_attention(channels: int, hidden: int) -> nn.Sequential:
    # The official layout (indices 1 and 3 are the convs); the pooling is kept for the names
    # and is the identity on the already pooled (N, C, 1, 1) input.
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(channels, hidden, kernel_size=1, bias=True),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, channels, kernel_size=1, bias=True),
        nn.Sigmoid(),
    )


class FrequencyMix(nn.Module):
    """FreqMix: frequency-split re-weighting of a feature (see the module docstring).

    Args:
        channels: C, channels of the input (the bottleneck width where it sits in a ResNet).
        cutoff: tau of the low-pass box in cycles per pixel, in (0, 0.5] (official 0.35).
        reduction: channel reduction of the attention MLPs (official 16); ``C // reduction``
            must be at least 1.
        channel_res: add the input to the output (official default in ``NyBottleneck``: False).
        gap_mode: "compat" (the official pooling of the real and imaginary spectrum) or "abs"
            (pool ``|Z M|``; a deviation).
        identity_init: start as the identity, so that a pretrained network with frozen
            BatchNorm after this module sees unchanged statistics: the spatial conv and the
            last conv of both MLPs start with zero weights and with biases chosen so that
            ``W_0 a_L = W_1 a_H = 1``, hence ``Y = L + H = X``. Needs ``gap_mode="compat"`` and
            ``channel_res=False`` (with the residual or the single-sigmoid "abs" attention the
            product cannot reach the identity). No extra parameters.

    Shapes: ``(N, C, H, W)`` in and out, any H and W; the FFT part runs in float32 for
    half-precision inputs and outside autocast.
    """

    def __init__(
        self,
        channels: int,
        cutoff: float = 0.35,
        reduction: int = 16,
        channel_res: bool = False,
        gap_mode: str = "compat",
        identity_init: bool = False,
    ):
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels: expected a positive int, got {channels!r}")
        if not isinstance(reduction, int) or reduction < 1 or channels // reduction < 1:
            raise ValueError(
                f"reduction: expected a positive int <= channels ({channels}), got {reduction!r}"
            )
        if gap_mode not in GAP_MODES:
            raise ValueError(f"gap_mode: expected one of {GAP_MODES}, got {gap_mode!r}")
        if identity_init and (gap_mode != "compat" or channel_res):
            raise ValueError(
                "identity_init=True needs gap_mode='compat' and channel_res=False, got "
                f"gap_mode={gap_mode!r}, channel_res={channel_res}"
            )
        self.channels = channels
        self.cutoff = check_cutoff(cutoff)
        self.reduction = reduction
        self.channel_res = bool(channel_res)
        self.gap_mode = gap_mode
        self.identity_init = bool(identity_init)
        hidden = channels // reduction
        self.freq_weight_conv = nn.Conv2d(channels, 2, kernel_size=3, padding=1, bias=True)
        self.channel_att_low = _channel_attention(channels, hidden)
        self.channel_att_high = _channel_attention(channels, hidden)
        if identity_init:
            self.reset_to_identity()

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        """Sets the weights so that the module is the identity (see ``identity_init``)."""
        spatial = 1.0 / (1.0 + math.exp(-_IDENTITY_SPATIAL_BIAS))
        # sqrt(2 s^2 + eps) = 1 / spatial, with s the sigmoid of the attention bias.
        s = math.sqrt((1.0 / spatial**2 - _EPS) / 2.0)
        att_bias = math.log(s / (1.0 - s))
        self.freq_weight_conv.weight.zero_()
        self.freq_weight_conv.bias.fill_(_IDENTITY_SPATIAL_BIAS)
        for att in (self.channel_att_low, self.channel_att_high):
            att[3].weight.zero_()
            att[3].bias.fill_(att_bias)

    def split(self, x: torch.Tensor):
        """Low- and high-pass parts and the pooled spectra the attentions see.

        Args:
            x: ``(N, C, H, W)``.

        Returns:
            ``(low, high, pooled_low, pooled_high)`` in the compute dtype (float32 for half
            inputs): ``low + high == x``; the pooled values are ``(N, C, 1, 1)`` tensors, in
            "compat" mode a pair ``(real, imag)`` each, in "abs" mode one tensor each.
        """
        h, w = x.shape[-2:]
        x = x.to(compute_dtype(x.dtype))
        even, odd = lowpass_box_masks(h, w, self.cutoff, device=x.device, dtype=x.dtype)
        spectrum = torch.fft.rfft2(x)
        low = torch.fft.irfft2(spectrum * even, s=(h, w))
        high = x - low
        weights = rfft_column_weights(w, device=x.device, dtype=x.dtype)
        if self.gap_mode == "compat":
            # Re: the inverse DFT at the origin. Im: only the odd part of the box contributes.
            imag = (spectrum.imag * odd * weights).sum(dim=(-2, -1), keepdim=True) / (h * w)
            return low, high, (low[..., :1, :1], imag), (high[..., :1, :1], -imag)
        magnitude = spectrum.abs() * weights
        pooled_low = (magnitude * even).sum(dim=(-2, -1), keepdim=True) / (h * w)
        pooled_high = (magnitude * (1 - even)).sum(dim=(-2, -1), keepdim=True) / (h * w)
        return low, high, pooled_low, pooled_high

    def _attention(self, att: nn.Sequential, pooled) -> torch.Tensor:
        if self.gap_mode == "compat":
            # The official spectrum is fftshift-ed over every dimension, channels included, so
            # its MLPs see the channels rolled by C // 2 (a fixed permutation, kept so that
            # official weights give the same output).
            real, imag = (torch.roll(p, self.channels // 2, dims=1) for p in pooled)
            return torch.sqrt(att(real) ** 2 + att(imag) ** 2 + _EPS)
        return att(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(N, C, H, W)`` with C = ``channels``.

        Returns:
            ``(N, C, H, W)`` in the dtype of ``x``.
        """
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x: expected shape (N, {self.channels}, H, W), got {tuple(x.shape)}")
        spatial = self.freq_weight_conv(x).sigmoid()
        with torch.autocast(device_type=x.device.type, enabled=False):
            low, high, pooled_low, pooled_high = self.split(x)
            dtype = low.dtype
            # The MLPs run in their own parameter dtype (the pooled values are tiny tensors).
            att_dtype = self.channel_att_low[1].weight.dtype
            a_low = self._attention(self.channel_att_low, _cast(pooled_low, att_dtype))
            a_high = self._attention(self.channel_att_high, _cast(pooled_high, att_dtype))
            a_low, a_high = a_low.to(dtype), a_high.to(dtype)
            spatial = spatial.to(dtype)
            y = spatial[:, 0:1] * a_low * low + spatial[:, 1:2] * a_high * high
            if self.channel_res:
                y = y + x.to(dtype)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, cutoff={self.cutoff}, reduction={self.reduction}, "
            f"channel_res={self.channel_res}, gap_mode={self.gap_mode!r}, "
            f"identity_init={self.identity_init}"
        )


def _cast(pooled, dtype):
    if isinstance(pooled, tuple):
        return tuple(p.to(dtype) for p in pooled)
    return pooled.to(dtype)
