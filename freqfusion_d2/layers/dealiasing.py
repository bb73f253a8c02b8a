"""De-aliasing filter (DAF) of Seg-Aliasing (Chen et al., "When Semantic Segmentation Meets
Frequency Aliasing", ICLR 2024, Sec. 4.1).

DAF is a parameter-free ideal low-pass placed before a downsampling layer. It reproduces the
official ``FLC_Pooling(downsample=False)`` (Seg-Aliasing ``mmseg_custom/models/backbones/
resnet.py``): the centred spectrum ``fftshift(fft2(x))`` is multiplied by a box that keeps the
shifted rows ``[round(H/2 - H*tau), round(H/2 + H*tau))`` and the same columns for ``W`` (Python
``round``), and the output is the real part of the inverse transform.

For an even size the box is one bin wider on the negative side (on a 64-px map with tau = 0.35
it keeps the signed bins -22..21), so the real part passes the unmatched edge bin (+-22) at half
amplitude, and applying the filter twice halves it again (the filter is not idempotent). The
real part of that one-sided box equals a real, symmetric mask (the mean of the box and its
mirror) applied to the half spectrum of ``rfft2``; that is what is computed here, with the same
result at about half the cost.
"""

from typing import Tuple

import torch
from torch import nn

__all__ = [
    "DeAliasingFilter",
    "check_cutoff",
    "compute_dtype",
    "kept_bins",
    "lowpass_box_masks",
    "rfft_column_weights",
]


def check_cutoff(cutoff: float, name: str = "cutoff") -> float:
    """``cutoff`` as a float in (0, 0.5] cycles per pixel, else a ValueError naming ``name``."""
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)):
        raise ValueError(f"{name}: expected a number in (0, 0.5] cycles/px, got {cutoff!r}")
    if not 0.0 < float(cutoff) <= 0.5:
        raise ValueError(f"{name}: expected a value in (0, 0.5] cycles/px, got {cutoff}")
    return float(cutoff)


def kept_bins(n: int, cutoff: float) -> Tuple[int, int]:
    """Signed frequency bins ``lo..hi`` (inclusive) that the official box keeps along an axis.

    The box keeps the fftshift-ed indices ``[round(n/2 - n*cutoff), round(n/2 + n*cutoff))``;
    index ``i`` of the shifted spectrum is the signed bin ``i - n//2``.

    Args:
        n: length of the axis.
        cutoff: tau in cycles per pixel.

    Returns:
        ``(lo, hi)``; e.g. ``(-22, 21)`` for ``n=64, cutoff=0.35``.
    """
    if n < 1:
        raise ValueError(f"n: expected a positive length, got {n}")
    start = round(n / 2 - n * cutoff)
    stop = round(n / 2 + n * cutoff)
    return start - n // 2, stop - n // 2 - 1


def _axis_masks(n: int, cutoff: float, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """1-D box over the unshifted bins (fft order) and its mirror ``m(-k)``, as float64."""
    lo, hi = kept_bins(n, cutoff)
    signed = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=device).round()
    mask = ((signed >= lo) & (signed <= hi)).to(torch.float64)
    mirror = mask[(-torch.arange(n, device=device)) % n]
    return mask, mirror


def lowpass_box_masks(
    h: int, w: int, cutoff: float, device=None, dtype=torch.float32
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The official box split into even and odd parts, on the ``rfft2`` half spectrum.

    With M the official box in unshifted order and ``M'(k) = M(-k)``, returns ``(M + M') / 2``
    and ``(M - M') / 2`` restricted to the columns ``0..w//2``. For a real input with spectrum
    Z, ``Re(ifft2(Z * M)) = irfft2(rfft2(x) * even)``, and the mean of ``Im(Z) * M`` over the
    full spectrum only involves ``odd``.

    Args:
        h, w: spatial size of the input.
        cutoff: tau in cycles per pixel.
        device, dtype: of the returned masks.

    Returns:
        ``(even, odd)``, each of shape ``(h, w // 2 + 1)``.
    """
    mh, mh_mirror = _axis_masks(h, cutoff, device)
    mw, mw_mirror = _axis_masks(w, cutoff, device)
    box = mh[:, None] * mw[None, :]
    mirror = mh_mirror[:, None] * mw_mirror[None, :]
    half = w // 2 + 1
    even = ((box + mirror) / 2)[:, :half]
    odd = ((box - mirror) / 2)[:, :half]
    return even.to(dtype), odd.to(dtype)


def rfft_column_weights(w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """How often each ``rfft`` column appears in the full spectrum of a width-``w`` signal.

    Column 0 (and column ``w/2`` for even ``w``) is its own mirror; every other column stands for
    itself and its conjugate mirror. A sum over the full spectrum of a quantity that is even
    under ``k -> -k`` is the half-spectrum sum weighted by these.
    """
    weights = torch.full((w // 2 + 1,), 2.0, dtype=dtype, device=device)
    weights[0] = 1.0
    if w % 2 == 0:
        weights[-1] = 1.0
    return weights


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (torch.fft needs power-of-two sizes in half
    precision), the input's own dtype otherwise (float32, float64)."""
    if dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    if not dtype.is_floating_point:
        raise TypeError(f"input: expected a floating-point tensor, got {dtype}")
    return dtype


class DeAliasingFilter(nn.Module):
    """Parameter-free square ideal low-pass (DAF), applied before a downsampling layer.

    ``forward(x)`` keeps the frequencies of the official box (see the module docstring and
    :func:`kept_bins`) and returns a tensor of the shape and dtype of ``x``. The FFTs run in
    float32 for half-precision inputs and with autocast disabled, for any spatial size.

    Args:
        cutoff: tau in cycles per pixel, in (0, 0.5]. The default 0.35 is the official
            ``freq_thres = 0.25 * 1.4``, close to the Nyquist frequency sqrt(2)/4 of a stage
            that halves the resolution and doubles the channels (the paper's equivalent
            sampling rate).
    """

    def __init__(self, cutoff: float = 0.35):
        super().__init__()
        self.cutoff = check_cutoff(cutoff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(..., H, W)`` real tensor (e.g. ``(N, C, H, W)``).

        Returns:
            The low-passed tensor, same shape and dtype.
        """
        if x.dim() < 2:
            raise ValueError(f"x: expected a tensor of shape (..., H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        dtype = compute_dtype(x.dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            even, _ = lowpass_box_masks(h, w, self.cutoff, device=x.device, dtype=dtype)
            spectrum = torch.fft.rfft2(x.to(dtype))
            y = torch.fft.irfft2(spectrum * even, s=(h, w))
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}"
