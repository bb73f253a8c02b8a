"""Evidence that ARS modulates frequency and MSAU demodulates it, on synthetic maps.

The aliasing score is ``freqfusion_d2.analysis.aliasing_score`` (the share of spectral power
outside the square |u|, |v| <= f_N that a stride-s subsampling keeps) with the plain stride-2
Nyquist frequency f_N = 0.25 cycles/px.
"""

import math

import torch

from freqfusion_d2.analysis import aliasing_score, nyquist
from freqfusion_d2.layers import AdaptiveResampler, MultiScaleAdaptiveUpsampler


def aliasing_share(feature: torch.Tensor) -> float:
    """Aliasing score of one (C, H, W) map before a stride-2 step."""
    cutoff = nyquist(1, 1, stride=2, mode="plain")
    return float(aliasing_score(feature.detach()[None], cutoff=cutoff)[0])


def _patch_feature(size=64, patch=(24, 40), freq=0.32):
    """Channel 0: a smooth background plus a cosine of ``freq`` cycles/px in a square patch;
    channel 1: the patch indicator (what a saliency generator would detect)."""
    ys = torch.arange(size, dtype=torch.float64).view(size, 1)
    xs = torch.arange(size, dtype=torch.float64).view(1, size)
    inside = ((ys >= patch[0]) & (ys < patch[1]) & (xs >= patch[0]) & (xs < patch[1])).double()
    background = torch.cos(2 * math.pi * 0.03 * xs) * torch.cos(2 * math.pi * 0.02 * ys)
    signal = 0.5 * background + inside * torch.cos(2 * math.pi * freq * xs)
    return torch.stack([signal, inside]).unsqueeze(0)


def _concentrated_resampler(logit=6.0):
    """A conv-mode ARS whose saliency follows the indicator channel (``logit`` on it)."""
    ars = AdaptiveResampler(2, mode="conv", stride=1, radius=31, fwhm=24.0).double()
    with torch.no_grad():
        ars.saliency[1].weight[0, 1, 1, 1] = logit
    return ars


def test_ars_lowers_the_aliasing_score_of_a_high_frequency_patch():
    x = _patch_feature()
    ars = _concentrated_resampler()
    y, grid = ars(x)
    before = aliasing_share(x[0, :1])
    after = aliasing_share(y[0, :1])
    # The patch is magnified (sample spacing < 1 px there), so its frequency drops below 0.25.
    spacing = grid[0, 0, 32, 25:39] - grid[0, 0, 32, 24:38]
    assert spacing.max() < 0.8
    assert before > 0.2
    assert after < 0.5 * before
    # A new (uniform) resampler leaves the score unchanged.
    fresh = AdaptiveResampler(2, mode="conv", stride=1).double()
    assert abs(aliasing_share(fresh(x)[0][0, :1]) - before) < 1e-6


def test_round_trip_ars_then_msau_on_a_smooth_map():
    ys = torch.arange(48, dtype=torch.float64).view(1, 1, 48, 1)
    xs = torch.arange(56, dtype=torch.float64).view(1, 1, 1, 56)
    smooth = torch.sin(2 * math.pi * 0.03 * xs + 0.4) * torch.cos(2 * math.pi * 0.025 * ys)
    indicator = ((ys - 20) ** 2 + (xs - 30) ** 2 < 64).double()
    x = torch.cat([smooth, indicator.expand_as(smooth)], dim=1)
    y, grid = _concentrated_resampler(logit=2.0)(x)
    assert (y - x)[:, :1].abs().max() > 0.5  # the resampling moved the map
    spacing = torch.cat(
        [
            (grid[:, 0, :, 1:] - grid[:, 0, :, :-1]).flatten(),
            (grid[:, 1, 1:] - grid[:, 1, :-1]).flatten(),
        ]
    )
    assert spacing.min() < 0.5 and 1.6 < spacing.max() < 1.8
    back = MultiScaleAdaptiveUpsampler().double().demodulate(y, grid)
    # Stated error: 2.5% of the amplitude, the bilinear error of this map at the sparsest
    # spacing (1.75 px).
    assert (back - x)[:, :1].abs().max() < 0.025
    # And upsampled 2x onto the uniform lattice, against the map's own bilinear upsampling.
    up = MultiScaleAdaptiveUpsampler().double()
    err = (up(y, (96, 112), positions=grid) - up(x, (96, 112)))[:, :1, 4:-4, 4:-4]
    assert err.abs().max() < 0.025


def test_grid_is_monotonic_for_random_saliency():
    gen = torch.Generator().manual_seed(0)
    for mode in ("avgpsp", "conv"):
        ars = AdaptiveResampler(8, mode=mode, stride=2, radius=7, fwhm=6.0).eval()
        with torch.no_grad():
            for p in ars.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        x = 3 * torch.randn(3, 8, 30, 34, generator=gen)
        _, grid = ars(x)
        assert grid.std() > 0  # non-uniform
        dx = grid[:, 0, :, 1:] - grid[:, 0, :, :-1]
        dy = grid[:, 1, 1:, :] - grid[:, 1, :-1, :]
        assert (dx >= 0).all() and (dy >= 0).all()
        assert (dx[:, :, 1:-1] - 1).abs().max() > 0.05  # warped, not the lattice
