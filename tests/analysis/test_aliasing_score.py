"""Aliasing score: the analytic vectors, ESR / Nyquist values, pooled and local variants, the
radial power spectrum, precision and gradients."""

import math

import pytest
import torch

from freqfusion_d2.analysis import (
    aliasing_energy,
    aliasing_score,
    esr,
    local_aliasing_map,
    nyquist,
    pooled_aliasing_score,
    radial_power_spectrum,
)
from freqfusion_d2.layers import DeAliasingFilter


def waves(*terms, n=64, axis=-1, dtype=torch.float64):
    """(1, 1, n, n) sum of amplitude * cos(2 pi bin x / n) along ``axis``."""
    t = torch.arange(n, dtype=dtype)
    wave = sum(a * torch.cos(2 * math.pi * b * t / n) for b, a in terms)
    grid = wave[None, :].expand(n, n) if axis == -1 else wave[:, None].expand(n, n)
    return grid.clone()[None, None]


@pytest.mark.parametrize("axis", [-1, -2])
@pytest.mark.parametrize("region", ["square", "radial"])
@pytest.mark.parametrize(
    "terms, expected",
    [
        (((8, 1.0),), 0.0),
        (((26, 1.0),), 1.0),
        (((8, 1.0), (28, 0.5)), 0.2),
        (((23, 1.0),), 1.0),  # 0.359 > 0.35
        (((22, 1.0),), 0.0),  # 0.344: not aliased (DAF passes it at half gain)
        (((0, 2.0), (26, 1.0)), 0.5 / 4.5),  # DC kept: power 4 * 4096 vs 0.5 * 4096
    ],
)
def test_analytic_vectors(terms, expected, region, axis):
    score = aliasing_score(waves(*terms, axis=axis), cutoff=0.35, region=region)
    assert score.shape == (1,)
    assert float(score) == pytest.approx(expected, abs=1e-12)


def test_square_and_radial_differ_on_diagonals():
    n = 64
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    diagonal = torch.cos(2 * math.pi * 20 * (xx + yy).double() / n)[None, None]
    # (20, 20) / 64 = (0.3125, 0.3125): inside the square, radius 0.442 outside the disc.
    assert float(aliasing_score(diagonal, region="square")) == pytest.approx(0.0, abs=1e-12)
    assert float(aliasing_score(diagonal, region="radial")) == pytest.approx(1.0, abs=1e-12)


def test_amplitude_and_dc_options():
    x = waves((8, 1.0), (28, 0.5))
    assert float(aliasing_score(x, power=False)) == pytest.approx(0.5 / 1.5, abs=1e-12)
    with_dc = x + 3.0
    assert float(aliasing_score(with_dc)) < 0.2
    assert float(aliasing_score(with_dc, remove_dc=True)) == pytest.approx(0.2, abs=1e-12)


def test_per_image_values_and_pooled():
    a = waves((8, 1.0), (28, 0.5))  # 0.2
    b = 3 * waves((26, 1.0))  # 1.0, nine times the energy of a cosine
    batch = torch.cat([a, b])
    torch.testing.assert_close(aliasing_score(batch), torch.tensor([0.2, 1.0], dtype=torch.float64))
    aliased, total = aliasing_energy(batch)
    # Parseval: total energy = H * W * sum of squares.
    torch.testing.assert_close(total, 64 * 64 * batch.square().sum(dim=(1, 2, 3)))
    expected = (0.25 + 9.0) / (1.25 + 9.0)  # per-cosine powers 1 (+0.25) and 9
    assert pooled_aliasing_score(batch) == pytest.approx(expected, abs=1e-12)
    assert float(aliasing_score(torch.zeros(1, 2, 8, 8))) == 0.0


def test_channels_are_summed():
    x = torch.cat([waves((8, 1.0)), waves((26, 1.0))], dim=1)
    assert float(aliasing_score(x)) == pytest.approx(0.5, abs=1e-12)


def test_random_feature_matches_full_fft_definition():
    x = torch.randn(3, 5, 37, 45, dtype=torch.float64)
    power = torch.fft.fft2(x).abs().square().sum(1)
    fy = torch.fft.fftfreq(37, dtype=torch.float64).abs()[:, None]
    fx = torch.fft.fftfreq(45, dtype=torch.float64).abs()[None, :]  # no bin at exactly 0.3
    for region, mask in (
        ("square", (fy > 0.3) | (fx > 0.3)),
        ("radial", (fy**2 + fx**2).sqrt() > 0.3),
    ):
        expected = (power * mask).sum((1, 2)) / power.sum((1, 2))
        torch.testing.assert_close(aliasing_score(x, 0.3, region), expected)


def test_daf_output_scores_zero():
    x = torch.randn(2, 4, 64, 40, dtype=torch.float64)
    assert float(aliasing_score(x).min()) > 0.3
    assert float(aliasing_score(DeAliasingFilter(0.35)(x)).max()) < 1e-20
    # Width 48: the box keeps bins -17..16, and 17 / 48 = 0.354 > 0.35 passes at half gain.
    y = DeAliasingFilter(0.35)(torch.randn(2, 4, 64, 48, dtype=torch.float64))
    assert 1e-4 < float(aliasing_score(y).max()) < 0.05


def test_esr_and_nyquist():
    assert esr(256, 512, 2) == pytest.approx(math.sqrt(2) / 2)
    assert esr(64, 64, 2) == 0.5
    assert nyquist(256, 512, 2) == pytest.approx(math.sqrt(2) / 4)
    assert nyquist(256, 512, 2, mode="plain") == 0.25
    assert nyquist(64, 64, 2) == 0.25
    assert nyquist(3, 96, 4) == 0.5  # patch embedding: capped
    with pytest.raises(ValueError, match="c_in"):
        esr(0, 2, 2)
    with pytest.raises(ValueError, match="mode"):
        nyquist(2, 4, 2, mode="fixed")


def test_local_map_shapes_and_values():
    n = 64
    left = waves((8, 1.0), n=n)[..., :32]
    right = waves((26, 1.0), n=n)[..., 32:]
    x = torch.cat([left, right], dim=-1)
    m = local_aliasing_map(x, patch=16, stride=8)
    assert m.shape == (1, 7, 7)
    assert float(m[0, :, 0].max()) < 0.05  # windows over the low-frequency half
    assert float(m[0, :, -1].min()) > 0.95  # windows over the aliased half
    up = local_aliasing_map(x, output_size=(128, 128))
    assert up.shape == (1, 128, 128)
    # Maps smaller than a window, or not tiled exactly, are padded.
    assert local_aliasing_map(torch.randn(2, 3, 5, 9)).shape == (2, 1, 1)
    assert local_aliasing_map(torch.randn(1, 3, 30, 41), patch=16, stride=8).shape == (1, 3, 5)
    rect = local_aliasing_map(x, window=None, remove_dc=True)
    assert rect.shape == m.shape


def test_radial_spectrum_peak_and_nyquist_bin():
    x = waves((16, 1.0))  # 0.25 cycles/px
    centres, power = radial_power_spectrum(x, num_bins=32)
    assert centres.shape == (32,) and power.shape == (1, 32)
    assert abs(float(centres[power[0].nan_to_num(0).argmax()]) - 0.25) < 1 / 64
    # A cosine at 0.5 cycles/px (alternating pixels) lands in the last bin.
    _, top = radial_power_spectrum(waves((32, 1.0)), num_bins=8)
    assert int(top[0].nan_to_num(0).argmax()) == 7


def test_bfloat16_autocast_and_gradients():
    x = torch.randn(2, 4, 24, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = aliasing_score(x.bfloat16())
    assert s.dtype == torch.float32
    torch.testing.assert_close(s, aliasing_score(x.bfloat16().float()))
    xd = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: aliasing_score(t, 0.3), (xd,), fast_mode=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"feat": torch.randn(4, 8, 8)}, "feat"),
        ({"cutoff": 0.0}, "cutoff"),
        ({"region": "disc"}, "region"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"feat": torch.randn(1, 2, 8, 8), **kwargs}
    with pytest.raises(ValueError, match=match):
        aliasing_score(**args)
    with pytest.raises(ValueError, match="patch"):
        local_aliasing_map(torch.randn(1, 2, 8, 8), patch=0)
