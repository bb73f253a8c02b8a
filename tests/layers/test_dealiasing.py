"""DeAliasingFilter (DAF): kept-bin geometry, the half-gain edge bin, parity with the official
full-FFT filter, sizes, precision and gradients."""

import pytest
import torch
from seg_aliasing_reference import cosine_map, daf_reference

from freqfusion_d2.layers import DeAliasingFilter, kept_bins


@pytest.mark.parametrize(
    "n, cutoff, expected",
    [
        (64, 0.35, (-22, 21)),
        (128, 0.35, (-45, 44)),
        (129, 0.35, (-45, 45)),
        (64, 0.25, (-16, 15)),
        (10, 0.25, (-3, 2)),  # 2.5 and 7.5 round to even: shifted rows [2, 8)
        (1, 0.35, (0, 0)),
        (64, 0.5, (-32, 31)),
    ],
)
def test_kept_bins_table(n, cutoff, expected):
    assert kept_bins(n, cutoff) == expected


def _gain(bin_index, axis, n=64, passes=1):
    x = cosine_map(bin_index, n, axis)
    y = x
    daf = DeAliasingFilter(0.35)
    for _ in range(passes):
        y = daf(y)
    # Projection on the input cosine: the amplitude ratio.
    gain = float((y * x).sum() / (x * x).sum())
    return gain, float((y - gain * x).abs().max())


@pytest.mark.parametrize("axis", [-1, -2])
@pytest.mark.parametrize("bin_index, gain", [(0, 1.0), (8, 1.0), (21, 1.0), (22, 0.5), (23, 0.0)])
def test_cosine_gains_on_64px(bin_index, gain, axis):
    measured, residual = _gain(bin_index, axis)
    assert measured == pytest.approx(gain, abs=1e-12)
    assert residual < 1e-12  # a cosine stays a cosine (no phase shift, no leakage)


def test_not_idempotent():
    assert _gain(22, -1, passes=2)[0] == pytest.approx(0.25, abs=1e-12)
    assert _gain(21, -1, passes=2)[0] == pytest.approx(1.0, abs=1e-12)
    x = torch.randn(1, 2, 64, 64, dtype=torch.float64)
    daf = DeAliasingFilter()
    assert not torch.allclose(daf(daf(x)), daf(x), atol=1e-6)


def test_odd_size_is_symmetric():
    assert _gain(45, -1, n=129)[0] == pytest.approx(1.0, abs=1e-12)
    assert _gain(46, -1, n=129)[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "shape", [(2, 3, 64, 64), (1, 4, 65, 47), (2, 1, 7, 130), (1, 2, 33, 2), (1, 1, 1, 1), (5, 6)]
)
@pytest.mark.parametrize("cutoff", [0.35, 0.25, 0.5, 0.1])
def test_matches_official_full_fft_filter(shape, cutoff):
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = DeAliasingFilter(cutoff)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, daf_reference(x, cutoff), rtol=0, atol=1e-12)


def test_removes_everything_outside_the_box():
    # Size 56: the box is [-20, 19], so +-20 (0.357 cycles/px) pass at half gain.
    x = torch.randn(2, 3, 40, 56, dtype=torch.float64)
    spectrum = torch.fft.fft2(x)
    filtered = torch.fft.fft2(DeAliasingFilter(0.35)(x))
    ky = torch.fft.fftfreq(40, 1 / 40, dtype=torch.float64).abs()[:, None]
    kx = torch.fft.fftfreq(56, 1 / 56, dtype=torch.float64).abs()[None, :]
    assert kept_bins(40, 0.35) == (-14, 13) and kept_bins(56, 0.35) == (-20, 19)
    outside = (ky > 14) | (kx > 20)
    assert filtered.abs()[..., outside].max() < 1e-10
    inner = (ky <= 13) & (kx <= 19)
    torch.testing.assert_close(filtered[..., inner], spectrum[..., inner])
    edge = (ky <= 13) & (kx == 20)
    torch.testing.assert_close(filtered[..., edge], spectrum[..., edge] / 2)


def test_no_parameters_and_repr():
    daf = DeAliasingFilter(0.3)
    assert sum(p.numel() for p in daf.parameters()) == 0
    assert not list(daf.buffers())
    assert "cutoff=0.3" in repr(daf)


def test_bfloat16_under_autocast_runs_in_float32():
    x = torch.randn(2, 3, 30, 50).to(torch.bfloat16)  # not a power of two
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = DeAliasingFilter()(x)
    assert y.dtype == torch.bfloat16
    # The float32 result rounded once to bfloat16.
    assert torch.equal(y, DeAliasingFilter()(x.float()).to(torch.bfloat16))
    torch.testing.assert_close(y.double(), daf_reference(x.double()), rtol=8e-3, atol=1e-2)


def test_float32_under_autocast_equals_without():
    x = torch.randn(1, 4, 24, 18)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = DeAliasingFilter()(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, DeAliasingFilter()(x))


def test_float16_odd_size():
    x = torch.randn(1, 2, 17, 23).half()
    y = DeAliasingFilter()(x)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), daf_reference(x.double()).float(), atol=2e-3, rtol=1e-3)


def test_gradcheck():
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(DeAliasingFilter(), (x,))


@pytest.mark.parametrize("cutoff", [0, -0.1, 0.51, "0.35", None, True])
def test_bad_cutoff(cutoff):
    with pytest.raises(ValueError, match="cutoff"):
        DeAliasingFilter(cutoff)


def test_bad_input():
    with pytest.raises(ValueError, match="x: expected"):
        DeAliasingFilter()(torch.randn(8))
    with pytest.raises(TypeError, match="floating-point"):
        DeAliasingFilter()(torch.ones(1, 1, 4, 4, dtype=torch.int64))
