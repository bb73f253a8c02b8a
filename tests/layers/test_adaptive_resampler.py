"""AdaptiveResampler (ARS): Gaussian sums, identity at init, grid geometry, bad inputs."""

import pytest
import torch
import torch.nn.functional as F

from freqfusion_d2.layers import AdaptiveResampler
from freqfusion_d2.layers.adaptive_resampler import (
    gaussian_saliency_offsets,
    gaussian_saliency_offsets_direct,
    reflect_pad,
)
from freqfusion_d2.layers.sampling_grid import identity_grid


def _bump(h, w, cy, cx, sigma=2.0, peak=30.0, dtype=torch.float64):
    ys = torch.arange(h, dtype=dtype).view(h, 1)
    xs = torch.arange(w, dtype=dtype).view(1, w)
    s = 1.0 + peak * torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
    return (s / s.mean()).view(1, 1, h, w)


@pytest.mark.parametrize(
    "size,radius,fwhm",
    [((13, 17), 5, 4.0), ((20, 9), 31, 32.0), ((4, 6), 7, 3.0), ((1, 5), 3, 2.0)],
)
def test_separable_sums_equal_direct_form(size, radius, fwhm):
    gen = torch.Generator().manual_seed(0)
    s = torch.rand(2, 1, *size, generator=gen, dtype=torch.float64) * 3 + 0.05
    fast = gaussian_saliency_offsets(s, radius, fwhm)
    direct = gaussian_saliency_offsets_direct(s, radius, fwhm)
    assert fast.shape == (2, 2, *size)
    assert fast.abs().max() > 1e-3  # a non-trivial field
    torch.testing.assert_close(fast, direct, rtol=0, atol=1e-10)


def test_reflect_pad_matches_f_pad_and_repeats_past_the_size():
    x = torch.arange(20.0).view(1, 1, 4, 5)
    torch.testing.assert_close(reflect_pad(x, 3), F.pad(x, [3] * 4, mode="reflect"))
    row = reflect_pad(torch.arange(3.0).view(1, 1, 1, 3), 5)[0, 0, 5]  # indices -5..7, period 4
    assert row.tolist() == [1, 0, 1, 2, 1, 0, 1, 2, 1, 0, 1, 2, 1]


def test_uniform_saliency_gives_exactly_zero_offsets():
    s = torch.full((3, 1, 37, 23), 1.0)
    assert torch.equal(gaussian_saliency_offsets(s, 31, 32.0), torch.zeros(3, 2, 37, 23))


@pytest.mark.parametrize("mode,stride", [("avgpsp", 2), ("conv", 2), ("conv", 1), ("avgpsp", 3)])
def test_new_resampler_is_the_identity(mode, stride):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 21, 30, generator=gen)
    ars = AdaptiveResampler(16, mode=mode, stride=stride).eval()
    y, grid = ars(x)
    assert torch.equal(grid, identity_grid(21, 30, batch=2))
    torch.testing.assert_close(y, x, rtol=0, atol=1e-5 * x.abs().max().item())


def test_saliency_has_mean_one_and_follows_the_generator():
    ars = AdaptiveResampler(8, mode="conv", stride=2)
    with torch.no_grad():
        ars.saliency[1].weight[0, 0, 1, 1] = 1.0
    x = torch.zeros(1, 8, 24, 24)
    x[0, 0, 8:12, 14:18] = 5.0
    s = ars.saliency_map(x)
    assert s.shape == (1, 1, 12, 12)
    torch.testing.assert_close(s.mean(), torch.tensor(1.0))
    peak = divmod(int(s.view(-1).argmax()), 12)
    assert peak in {(4, 7), (5, 7), (4, 8), (5, 8)}


def test_grid_is_dense_at_the_saliency_peak_pinned_and_monotonic():
    ars = AdaptiveResampler(4, mode="conv", stride=1, radius=15, fwhm=12.0).double()
    grid = ars.grid_from_saliency(_bump(40, 48, cy=20, cx=30), (40, 48))[0]
    dx = grid[0, :, 1:] - grid[0, :, :-1]
    dy = grid[1, 1:] - grid[1, :-1]
    # Sample spacing below one pixel at the peak (magnified), above one far from it.
    assert dx[20, 29] < 0.8 and dy[19, 30] < 0.8
    assert dx[20, 5] > 1.0 and dy[35, 30] > 1.0
    assert (dx >= 0).all() and (dy >= 0).all()
    assert torch.equal(grid[0, :, 0], torch.zeros(40, dtype=grid.dtype))
    assert torch.equal(grid[0, :, -1], torch.full((40,), 47.0, dtype=grid.dtype))
    assert torch.equal(grid[1, 0], torch.zeros(48, dtype=grid.dtype))
    assert torch.equal(grid[1, -1], torch.full((48,), 39.0, dtype=grid.dtype))


def test_strided_saliency_grid_is_upsampled_in_input_pixels():
    ars = AdaptiveResampler(4, mode="conv", stride=2, radius=9, fwhm=8.0).double()
    low = _bump(12, 16, cy=6, cx=8)
    full = ars.grid_from_saliency(low, (24, 32))
    ref = AdaptiveResampler(4, mode="conv", stride=1, radius=9, fwhm=8.0).double()
    low_grid = ref.grid_from_saliency(low, (12, 16))
    # Interior even pixels 2k of the full grid sit at 2 * (low grid at k).
    torch.testing.assert_close(full[0, :, 2:-2:2, 2:-2:2], 2 * low_grid[0, :, 1:-1, 1:-1])


def test_gradients_reach_the_generator_at_init():
    ars = AdaptiveResampler(8, mode="avgpsp", stride=2)
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    y, grid = ars(x)
    (y * torch.randn_like(y)).sum().backward()
    head = ars.saliency[-1]
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_avgpsp_parameter_count():
    c = 256
    ars = AdaptiveResampler(c, mode="avgpsp")
    assert sum(p.numel() for p in ars.parameters()) == c * c + 4 * c + 1
    assert sum(p.numel() for p in AdaptiveResampler(c, mode="conv").parameters()) == 9 * c + 1


def test_half_precision_input_keeps_its_dtype():
    ars = AdaptiveResampler(8, mode="conv").bfloat16()
    y, grid = ars(torch.randn(1, 8, 10, 12).bfloat16())
    assert y.dtype == torch.bfloat16 and grid.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(mode="lhpf"), "mode must be one of"),
        (dict(stride=0), "stride must be an integer >= 1"),
        (dict(radius=0), "radius must be an integer >= 1"),
        (dict(fwhm=-1.0), "fwhm must be > 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveResampler(8, **kwargs)


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"x must be \(N, 8, H, W\)"):
        AdaptiveResampler(8, mode="conv")(torch.randn(1, 4, 8, 8))
