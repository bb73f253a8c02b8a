"""The aliasing score of a feature map, reconstructed from the description in Seg-Aliasing
(Chen et al., ICLR 2024, Sec. 3): the share of a feature's spectral energy that lies above the
Nyquist frequency of the downsampling that follows it, i.e. the energy that the downsampling
folds back onto lower frequencies.

The paper and the official repository do not publish the formula (the official backbone only
keeps commented-out calls to a "low-frequency energy ratio", Seg-Aliasing
``mmseg_custom/models/backbones/resnet.py``, ``ResNetV1cWithBlur.forward``); what is fixed here
and how it follows the paper:

* the cutoff is the Nyquist frequency of the paper's equivalent sampling rate,
  ``f_N = min(0.5, sqrt(C_out / C_in) / (2 s))`` cycles per input pixel (:func:`nyquist`), which
  counts the channels a stride-s layer adds as extra samples;
* the spectrum is that of each channel (unnormalised 2-D DFT), power summed over channels;
* the aliased set is ``|u| > f_N or |v| > f_N`` ("square", the support that separable stride-s
  subsampling folds) or ``sqrt(u^2 + v^2) > f_N`` ("radial");
* ``AS = aliased power / total power`` per image, in [0, 1], with DC kept by default (the
  official ratio is over the full spectrum);
* dataset values are the mean of per-image scores (as the official running mean) and, pooled,
  the sum of aliased energy over the sum of total energy.

Power vs amplitude and the handling of DC are options, since the paper does not settle them.
"""

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..layers.dealiasing import check_cutoff, compute_dtype, rfft_column_weights

__all__ = [
    "REGIONS",
    "aliasing_energy",
    "aliasing_score",
    "esr",
    "local_aliasing_map",
    "nyquist",
    "pooled_aliasing_score",
    "radial_power_spectrum",
]

REGIONS = ("square", "radial")


def esr(c_in: int, c_out: int, stride: int) -> float:
    """Equivalent sampling rate of a layer mapping ``c_in x H x W`` to
    ``c_out x H/stride x W/stride``: ``sqrt(c_out / c_in) / stride`` samples per input pixel
    and axis (the new channels count as extra samples, assuming non-redundant filters).

    ``esr(C, 2C, 2) = sqrt(2) / 2`` (ResNet and Swin stages); ``esr(C, C, 2) = 0.5``.
    """
    for name, value in (("c_in", c_in), ("c_out", c_out), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return math.sqrt(c_out / c_in) / stride


def nyquist(c_in: int, c_out: int, stride: int = 2, mode: str = "esr") -> float:
    """Nyquist frequency (cycles per input pixel) of a downsampling layer.

    Args:
        c_in, c_out: channels before and after the layer.
        stride: its stride.
        mode: "esr": ``min(0.5, esr(c_in, c_out, stride) / 2)`` (sqrt(2)/4 ~ 0.354 for a
            ResNet stage); "plain": ``1 / (2 stride)`` (0.25 for stride 2).
    """
    if mode == "esr":
        return min(0.5, esr(c_in, c_out, stride) / 2)
    if mode == "plain":
        esr(c_in, c_out, stride)  # validates the arguments
        return 1.0 / (2 * stride)
    raise ValueError(f"mode: expected 'esr' or 'plain', got {mode!r}")


def _check_region(region: str) -> None:
    if region not in REGIONS:
        raise ValueError(f"region: expected one of {REGIONS}, got {region!r}")


def _aliased_mask(h: int, w: int, cutoff: float, region: str, device, dtype) -> torch.Tensor:
    """(h, w // 2 + 1) 0/1 mask of the aliased frequencies on the rfft2 half spectrum."""
    # From integer bins, with a relative tolerance, so that a bin exactly at the cutoff (bin 14
    # of 40 at 0.35) is not counted because of the rounding of k / n.
    ky = torch.fft.fftfreq(h, 1.0 / h, device=device, dtype=torch.float64).round().abs()
    kx = torch.fft.rfftfreq(w, 1.0 / w, device=device, dtype=torch.float64).round()
    fy, fx = (ky / h)[:, None], (kx / w)[None, :]
    limit = cutoff * (1 + 1e-12)
    if region == "square":
        mask = (fy > limit) | (fx > limit)
    else:
        mask = (fy**2 + fx**2).sqrt() > limit
    return mask.to(dtype)


def _spectral_energy(feat: torch.Tensor, power: bool, remove_dc: bool) -> torch.Tensor:
    """Per-frequency energy summed over channels, on the half spectrum, weighted so that sums
    over it equal sums over the full spectrum: (N, H, W // 2 + 1)."""
    x = feat.to(compute_dtype(feat.dtype))
    if remove_dc:
        x = x - x.mean(dim=(-2, -1), keepdim=True)
    spectrum = torch.fft.rfft2(x)
    energy = spectrum.real**2 + spectrum.imag**2
    if not power:
        energy = energy.sqrt()
    weights = rfft_column_weights(x.shape[-1], device=x.device, dtype=x.dtype)
    return energy.sum(dim=1) * weights


def _check_feat(feat: torch.Tensor) -> None:
    if not isinstance(feat, torch.Tensor) or feat.dim() != 4:
        shape = tuple(feat.shape) if isinstance(feat, torch.Tensor) else type(feat).__name__
        raise ValueError(f"feat: expected an (N, C, H, W) tensor, got {shape}")


def aliasing_energy(
    feat: torch.Tensor,
    cutoff: float = 0.35,
    region: str = "square",
    power: bool = True,
    remove_dc: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Aliased and total spectral energy of each image (see :func:`aliasing_score`).

    Returns:
        ``(aliased, total)``, each of shape ``(N,)``, in float32 (float64 for float64 input).
    """
    _check_feat(feat)
    cutoff = check_cutoff(cutoff)
    _check_region(region)
    h, w = feat.shape[-2:]
    with torch.autocast(device_type=feat.device.type, enabled=False):
        energy = _spectral_energy(feat, power, remove_dc)
        mask = _aliased_mask(h, w, cutoff, region, energy.device, energy.dtype)
        return (energy * mask).sum(dim=(-2, -1)), energy.sum(dim=(-2, -1))


def aliasing_score(
    feat: torch.Tensor,
    cutoff: float = 0.35,
    region: str = "square",
    power: bool = True,
    remove_dc: bool = False,
) -> torch.Tensor:
    """Aliasing score of each image: aliased / total spectral energy.

    Args:
        feat: ``(N, C, H, W)`` feature at the input of a downsampling layer.
        cutoff: Nyquist frequency f_N of that layer in cycles per pixel, in (0, 0.5]; see
            :func:`nyquist` (0.35 = the official de-aliasing cutoff).
        region: "square" (``|u| > f_N or |v| > f_N``) or "radial" (``|(u, v)| > f_N``).
        power: use ``|X|^2`` (True) or the amplitude ``|X|``.
        remove_dc: subtract each channel's mean first.

    Returns:
        ``(N,)`` scores in [0, 1]; 0 for an image without energy. On a 64-px map with
        f_N = 0.35 a cosine at bin 8 scores 0, at bin 26 scores 1, and
        ``cos(bin 8) + 0.5 cos(bin 28)`` scores 0.25 / 1.25 = 0.2.
    """
    aliased, total = aliasing_energy(feat, cutoff, region, power, remove_dc)
    return torch.where(total > 0, aliased / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)


def pooled_aliasing_score(
    feat: torch.Tensor,
    cutoff: float = 0.35,
    region: str = "square",
    power: bool = True,
    remove_dc: bool = False,
) -> float:
    """Pooled (micro-averaged) score of a batch: the sum of aliased energy over all images
    divided by the sum of their total energy (large-energy images weigh more than in the mean
    of :func:`aliasing_score`)."""
    aliased, total = aliasing_energy(feat, cutoff, region, power, remove_dc)
    total = float(total.sum())
    return float(aliased.sum()) / total if total > 0 else 0.0


def _hann(size: int, device, dtype) -> torch.Tensor:
    window = torch.hann_window(size, periodic=False, device=device, dtype=dtype)
    return window[:, None] * window[None, :]


def _pad_for_windows(x: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """Pads (reflect, or replicate for maps too small to reflect) at the bottom and right so
    that windows of ``patch`` at ``stride`` tile the whole map."""
    h, w = x.shape[-2:]

    def extra(n):
        if n <= patch:
            return patch - n
        return (-(n - patch)) % stride

    ph, pw = extra(h), extra(w)
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def local_aliasing_map(
    feat: torch.Tensor,
    cutoff: float = 0.35,
    patch: int = 16,
    stride: int = 8,
    window: Optional[str] = "hann",
    region: str = "square",
    power: bool = True,
    remove_dc: bool = False,
    output_size: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Aliasing score of sliding windows of a feature map.

    Each ``patch x patch`` window (at ``stride``, on the feature's own grid) is multiplied by a
    2-D Hann window (which limits the leakage of the window edges into high frequencies) and
    scored like :func:`aliasing_score`. Maps smaller than a window, or not tiled exactly, are
    padded at the bottom and right. The window size, stride and Hann window are choices of
    this reimplementation.

    Args:
        feat: ``(N, C, H, W)``.
        cutoff, region, power, remove_dc: as in :func:`aliasing_score` (``remove_dc`` removes
            each window's mean).
        patch, stride: window side and step in feature pixels.
        window: "hann" or None (rectangular).
        output_size: ``(H_out, W_out)`` to upsample the map to (nearest neighbour), e.g. the
            image size; None keeps the window grid.

    Returns:
        ``(N, h, w)`` scores, with ``h = ceil((max(H, patch) - patch) / stride) + 1`` (same for
        w) or ``output_size``.
    """
    _check_feat(feat)
    cutoff = check_cutoff(cutoff)
    _check_region(region)
    for name, value in (("patch", patch), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if window not in ("hann", None):
        raise ValueError(f"window: expected 'hann' or None, got {window!r}")
    n, c = feat.shape[:2]
    with torch.autocast(device_type=feat.device.type, enabled=False):
        x = _pad_for_windows(feat.to(compute_dtype(feat.dtype)), patch, stride)
        gh = (x.shape[-2] - patch) // stride + 1
        gw = (x.shape[-1] - patch) // stride + 1
        # (N, C, gh, gw, patch, patch) windows.
        windows = x.unfold(2, patch, stride).unfold(3, patch, stride)
        if remove_dc:
            windows = windows - windows.mean(dim=(-2, -1), keepdim=True)
        if window == "hann":
            windows = windows * _hann(patch, x.device, x.dtype)
        spectrum = torch.fft.rfft2(windows)
        energy = spectrum.real**2 + spectrum.imag**2
        if not power:
            energy = energy.sqrt()
        energy = energy.sum(dim=1) * rfft_column_weights(patch, device=x.device, dtype=x.dtype)
        mask = _aliased_mask(patch, patch, cutoff, region, x.device, x.dtype)
        aliased = (energy * mask).sum(dim=(-2, -1))
        total = energy.sum(dim=(-2, -1))
        scores = torch.where(total > 0, aliased / total.clamp_min(torch.finfo(x.dtype).tiny), 0.0)
    assert scores.shape == (n, gh, gw)
    if output_size is not None:
        scores = F.interpolate(scores[:, None], size=tuple(output_size), mode="nearest")[:, 0]
    return scores


def radial_power_spectrum(
    feat: torch.Tensor, num_bins: Optional[int] = None, remove_dc: bool = False
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Radially averaged power spectrum of each image (channels summed).

    Args:
        feat: ``(N, C, H, W)``.
        num_bins: bins over radial frequency ``[0, 0.5]`` cycles/px; default ``min(H, W) // 2``
            (at least 1). Frequencies beyond 0.5 (the corners) are left out.
        remove_dc: subtract each channel's mean first.

    Returns:
        ``(centres, power)``: ``(num_bins,)`` bin centres and ``(N, num_bins)`` mean power per
        bin (NaN for an empty bin).
    """
    _check_feat(feat)
    h, w = feat.shape[-2:]
    if num_bins is None:
        num_bins = max(1, min(h, w) // 2)
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins: expected a positive int, got {num_bins!r}")
    with torch.autocast(device_type=feat.device.type, enabled=False):
        energy = _spectral_energy(feat, power=True, remove_dc=remove_dc)
        dtype, device = energy.dtype, energy.device
        fy = torch.fft.fftfreq(h, device=device, dtype=torch.float64)[:, None]
        fx = torch.fft.rfftfreq(w, device=device, dtype=torch.float64)[None, :]
        radius = (fy**2 + fx**2).sqrt().expand(h, fx.shape[1])
        index = (radius / 0.5 * num_bins).floor().long().clamp_max(num_bins - 1)
        index = torch.where(radius <= 0.5, index, num_bins)  # num_bins collects the corners
        # Each half-spectrum entry counts as often as its column weight in the full spectrum.
        counts_w = rfft_column_weights(w, device=device, dtype=dtype).expand(h, -1)
        flat = index.reshape(-1)
        counts = torch.zeros(num_bins + 1, device=device, dtype=dtype).index_add_(
            0, flat, counts_w.reshape(-1)
        )
        sums = torch.zeros(energy.shape[0], num_bins + 1, device=device, dtype=dtype).index_add_(
            1, flat, energy.reshape(energy.shape[0], -1)
        )
        power = sums[:, :num_bins] / counts[:num_bins]
        power = torch.where(counts[:num_bins] > 0, power, float("nan"))
        centres = (torch.arange(num_bins, device=device, dtype=dtype) + 0.5) * (0.5 / num_bins)
    return centres, power
