"""Plain re-statements of the official Seg-Aliasing forward passes (full complex FFT, spectrum
centred with ``fftshift`` over every dimension as the official code does), used as oracles.

Seg-Aliasing ``mmseg_custom/models/backbones/resnet.py``: ``FLC_Pooling(downsample=False)``
(DAF) and ``_FrequencyMix`` as configured by ``NyBottleneck`` (FreqMix).
"""

import torch


def box_mask(h, w, tau, like):
    """The official box over the centred spectrum (Python round)."""
    mask = torch.zeros(h, w, dtype=like.dtype, device=like.device)
    rows = slice(round(h / 2 - h * tau), round(h / 2 + h * tau))
    cols = slice(round(w / 2 - w * tau), round(w / 2 + w * tau))
    mask[rows, cols] = 1.0
    return mask


def daf_reference(x, tau=0.35):
    h, w = x.shape[-2:]
    z = torch.fft.fftshift(torch.fft.fft2(x))
    return torch.fft.ifft2(torch.fft.ifftshift(z * box_mask(h, w, tau, x.real))).real


def freqmix_reference(module, x, tau=0.35, gap_mode="compat"):
    """Official FreqMix output with the weights of ``module`` (a FrequencyMix).

    ``gap_mode="abs"`` pools the magnitude of the masked spectrum (the earlier official
    variant), over the spectrum centred on the spatial dimensions only.
    """
    h, w = x.shape[-2:]
    spatial = module.freq_weight_conv(x).sigmoid()
    z = torch.fft.fftshift(torch.fft.fft2(x))  # every dimension, as in the official code
    low_mask = box_mask(h, w, tau, x)
    high_mask = 1 - low_mask
    low = torch.fft.ifft2(torch.fft.ifftshift(z * low_mask)).real
    high = x - low
    if gap_mode == "compat":
        zl, zh = z * low_mask, z * high_mask
        a_low = torch.sqrt(
            module.channel_att_low(zl.real) ** 2 + module.channel_att_low(zl.imag) ** 2 + 1e-8
        )
        a_high = torch.sqrt(
            module.channel_att_high(zh.real) ** 2 + module.channel_att_high(zh.imag) ** 2 + 1e-8
        )
    else:
        zs = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
        a_low = module.channel_att_low((zs * low_mask).abs())
        a_high = module.channel_att_high((zs * high_mask).abs())
    out = low * spatial[:, 0:1] * a_low + high * spatial[:, 1:2] * a_high
    if module.channel_res:
        out = out + x
    return out


def cosine_map(bin_index, n=64, axis=-1, amplitude=1.0, dtype=torch.float64):
    """(1, 1, n, n) map of amplitude * cos(2 pi bin x / n) along ``axis``."""
    t = torch.arange(n, dtype=dtype)
    wave = amplitude * torch.cos(2 * torch.pi * bin_index * t / n)
    grid = wave[None, :].expand(n, n) if axis == -1 else wave[:, None].expand(n, n)
    return grid.clone()[None, None]
