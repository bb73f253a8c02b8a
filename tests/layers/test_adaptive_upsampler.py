"""MultiScaleAdaptiveUpsampler (MSAU): bilinear at init, gradients, inversion, points, inputs."""

import pytest
import torch
import torch.nn.functional as F

from freqfusion_d2.layers import AdaptiveResampler, MultiScaleAdaptiveUpsampler
from freqfusion_d2.layers.adaptive_upsampler import gather_weighted_sum, lattice_targets
from freqfusion_d2.layers.sampling_grid import (
    identity_grid,
    invert_position_field,
    sample_field,
)


def _warp(h, w, cy, cx, n=1, peak=30.0, sigma=2.0, radius=15, fwhm=10.0):
    """A saliency-sampler position field dense around (cy, cx), float64."""
    ys = torch.arange(h, dtype=torch.float64).view(h, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, w)
    s = 1.0 + peak * torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
    s = (s / s.mean()).view(1, 1, h, w).expand(n, 1, h, w)
    ars = AdaptiveResampler(4, mode="conv", stride=1, radius=radius, fwhm=fwhm).double()
    return ars.grid_from_saliency(s, (h, w))


@pytest.mark.parametrize(
    "in_size,out_size", [((7, 9), (28, 36)), ((5, 6), (9, 13)), ((4, 4), (4, 4))]
)
def test_new_upsampler_is_bilinear_upsampling(in_size, out_size):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, *in_size, generator=gen)
    msau = MultiScaleAdaptiveUpsampler()
    bilinear = F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(msau(x, out_size), bilinear, rtol=0, atol=1e-6)
    # With an undistorted position field (a new ARS) the base term is grid_sample's.
    y = msau(x, out_size, positions=identity_grid(*in_size, batch=2))
    torch.testing.assert_close(y, bilinear, rtol=0, atol=1e-5)


def test_scale_factor_matches_interpolate():
    x = torch.randn(1, 3, 7, 9)
    ref = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(
        MultiScaleAdaptiveUpsampler()(x, scale_factor=4), ref, rtol=0, atol=1e-6
    )


def test_lattice_targets_follow_interpolate_convention():
    t = lattice_targets((4, 6), (8, 12), dtype=torch.float64)
    assert t.shape == (1, 2, 8, 12)
    assert t[0, 0, 0, :3].tolist() == [-0.25, 0.25, 0.75]
    assert t[0, 1, :2, 0].tolist() == [-0.25, 0.25]
    assert torch.equal(lattice_targets((5, 5), (5, 5)), identity_grid(5, 5).float())


def test_gather_weighted_sum_gradcheck():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 10, (2, 4, 7), generator=gen)
    weight = torch.randn(2, 4, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = (weight.unsqueeze(1) * torch.stack([x[b][:, index[b]] for b in range(2)])).sum(2)
    torch.testing.assert_close(gather_weighted_sum(x, index, weight), ref)
    assert torch.autograd.gradcheck(gather_weighted_sum, (x, index, weight))


def _active_upsampler():
    msau = MultiScaleAdaptiveUpsampler(dilations=(1, 2), init_fwhm=(1.3, 2.1)).double()
    with torch.no_grad():
        msau.gates.copy_(torch.tensor([0.6, -0.3]))
    return msau


def test_gradcheck_values_positions_widths_gates():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    disp = 0.15 * torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64)
    positions = (identity_grid(4, 5, dtype=torch.float64) + disp).requires_grad_(True)
    msau = _active_upsampler()

    def fn(x, positions, log_fwhm, gates):
        return torch.func.functional_call(
            msau, {"log_fwhm": log_fwhm, "gates": gates}, (x, (7, 9)), {"positions": positions}
        )

    log_fwhm = msau.log_fwhm.detach().clone().requires_grad_(True)
    gates = msau.gates.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (x, positions, log_fwhm, gates), atol=1e-6)


def test_gradients_reach_positions_and_values():
    msau = _active_upsampler().float()
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    positions = (identity_grid(6, 6, batch=2) + 0.1).requires_grad_(True)
    msau(x, (12, 12), positions=positions).square().sum().backward()
    assert x.grad.abs().sum() > 0 and positions.grad.abs().sum() > 0
    assert msau.gates.grad.abs().sum() > 0 and msau.log_fwhm.grad.abs().sum() > 0


def test_position_field_inversion():
    positions = _warp(32, 40, cy=14, cx=25)
    assert (positions[0, 0, :, 1:] - positions[0, 0, :, :-1]).min() < 0.5  # strongly warped
    targets = identity_grid(32, 40, dtype=torch.float64)
    u = invert_position_field(positions, targets)
    back = sample_field(positions, u)
    torch.testing.assert_close(back, targets.expand_as(back), rtol=0, atol=1e-3)
    assert torch.equal(invert_position_field(targets, targets), targets)


def test_puts_samples_back_where_they_were_taken():
    # A smooth map sampled on a warped grid: the position-aware base term recovers it on the
    # uniform lattice; ignoring the positions does not.
    h, w = 32, 40
    positions = _warp(h, w, cy=14, cx=25)

    def f(p):
        return torch.sin(0.3 * p[:, :1]) * torch.cos(0.23 * p[:, 1:])

    x = f(positions)
    msau = MultiScaleAdaptiveUpsampler().double()
    truth = f(lattice_targets((h, w), (2 * h, 2 * w), dtype=torch.float64))
    aware = msau(x, (2 * h, 2 * w), positions=positions)
    blind = msau(x, (2 * h, 2 * w))
    err_aware = (aware - truth)[..., 4:-4, 4:-4].abs().max()
    err_blind = (blind - truth)[..., 4:-4, 4:-4].abs().max()
    # Sample spacing reaches 1.76 px in the sparse part: bilinear error there ~ 0.04.
    assert err_aware < 0.05 and err_blind > 10 * err_aware


def test_sharp_scale_reproduces_samples_on_their_lattice():
    x = torch.randn(1, 3, 5, 6, dtype=torch.float64)
    msau = MultiScaleAdaptiveUpsampler(dilations=(1,), init_fwhm=(0.05,)).double()
    with torch.no_grad():
        msau.gates.fill_(1.0)
    torch.testing.assert_close(msau(x, (5, 6)), x)


def test_point_sample_matches_the_lattice_and_grid_sample():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 8, generator=gen, dtype=torch.float64)
    msau = _active_upsampler()
    # Points at the centres of a 12 x 16 output lattice.
    ys, xs = torch.meshgrid(
        (torch.arange(12, dtype=torch.float64) + 0.5) / 12,
        (torch.arange(16, dtype=torch.float64) + 0.5) / 16,
        indexing="ij",
    )
    coords = torch.stack([xs, ys], dim=-1).view(1, -1, 2).expand(2, -1, 2)
    points = msau.point_sample(x, coords)
    torch.testing.assert_close(points, msau(x, (12, 16)).flatten(2))
    # A new upsampler at interior points is detectron2's point_sample (bilinear).
    fresh = MultiScaleAdaptiveUpsampler().double()
    inner = torch.rand(2, 20, 2, generator=gen, dtype=torch.float64) * 0.6 + 0.2
    ref = F.grid_sample(x, 2 * inner.unsqueeze(2) - 1, align_corners=False).squeeze(3)
    torch.testing.assert_close(fresh.point_sample(x, inner), ref)


def test_demodulate_undoes_a_resampling():
    h, w = 32, 40
    positions = _warp(h, w, cy=14, cx=25)
    ys = torch.arange(h, dtype=torch.float64).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, 1, 1, w)
    smooth = torch.sin(0.2 * xs) * torch.cos(0.17 * ys)
    warped = sample_field(smooth, positions)
    back = MultiScaleAdaptiveUpsampler().double().demodulate(warped, positions)
    assert (back - smooth)[..., 3:-3, 3:-3].abs().max() < 0.02


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dilations=(0, 1)), "dilations must be integers >= 1"),
        (dict(kernel_size=2), "kernel_size must be odd"),
        (dict(init_fwhm=(1.0,)), "init_fwhm must hold one positive width per dilation"),
        (dict(inverse_iterations=-1), "inverse_iterations must be >= 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiScaleAdaptiveUpsampler(**kwargs)


def test_bad_inputs():
    msau = MultiScaleAdaptiveUpsampler()
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="exactly one of size, scale_factor"):
        msau(x)
    with pytest.raises(ValueError, match=r"positions must be \(1, 2, 4, 4\)"):
        msau(x, (8, 8), positions=torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"x must be \(N, C, h, w\)"):
        msau(torch.randn(2, 4, 4), (8, 8))


@pytest.mark.parametrize("in_size,scale", [((6, 7), 4), ((5, 5), 3), ((4, 6), 1)])
def test_lattice_fast_path_is_the_gathered_function(in_size, scale):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, *in_size, generator=gen, dtype=torch.float64)
    msau = _active_upsampler()
    out_size = (in_size[0] * scale, in_size[1] * scale)
    fast = msau(x, out_size)  # one convolution per call
    gathered = msau.sample(x, lattice_targets(in_size, out_size, dtype=torch.float64))
    torch.testing.assert_close(fast, gathered, rtol=0, atol=1e-12)
    assert (fast - F.interpolate(x, out_size, mode="bilinear")).abs().max() > 1e-3


def test_lattice_fast_path_gradcheck():
    x = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    msau = _active_upsampler()
    log_fwhm = msau.log_fwhm.detach().clone().requires_grad_(True)
    gates = msau.gates.detach().clone().requires_grad_(True)

    def fn(x, log_fwhm, gates):
        params = {"log_fwhm": log_fwhm, "gates": gates}
        return torch.func.functional_call(msau, params, (x, (6, 8)))

    assert torch.autograd.gradcheck(fn, (x, log_fwhm, gates))


def test_scale_free_upsampler_is_a_parameter_free_demodulator():
    h, w = 32, 40
    positions = _warp(h, w, cy=14, cx=25)
    x = torch.randn(1, 3, h, w, dtype=torch.float64)
    geometric = MultiScaleAdaptiveUpsampler(dilations=()).double()
    assert list(geometric.parameters()) == []
    u = invert_position_field(positions, identity_grid(h, w, dtype=torch.float64))
    torch.testing.assert_close(geometric.demodulate(x, positions), sample_field(x, u))
    assert torch.equal(geometric(x, (64, 80)), F.interpolate(x, (64, 80), mode="bilinear"))
