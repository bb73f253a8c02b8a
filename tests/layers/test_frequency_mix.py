"""FrequencyMix (FreqMix): parameter formula, official names and forward pass, the
GAP-equals-pixel-(0, 0) identity, H = X - L, identity_init, precision, gradients."""

import pytest
import torch
from seg_aliasing_reference import daf_reference, freqmix_reference

from freqfusion_d2.layers import DeAliasingFilter, FrequencyMix, frequency_mix_num_parameters

OFFICIAL_KEYS = {
    "freq_weight_conv.weight": (2, None, 3, 3),
    "freq_weight_conv.bias": (2,),
    "channel_att_low.1.weight": ("h", None, 1, 1),
    "channel_att_low.1.bias": ("h",),
    "channel_att_low.3.weight": (None, "h", 1, 1),
    "channel_att_low.3.bias": (None,),
}
OFFICIAL_KEYS.update({k.replace("low", "high"): v for k, v in OFFICIAL_KEYS.items()})


def _randomized(module, std=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return module


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("channels, expected", [(128, 6674), (256, 21538), (512, 75842)])
def test_parameter_counts(channels, expected):
    module = FrequencyMix(channels)
    assert sum(p.numel() for p in module.parameters()) == expected
    assert frequency_mix_num_parameters(channels) == expected
    c = channels
    assert expected == 18 * c + 2 + 2 * (2 * c * c // 16 + c // 16 + c)
    assert sum(p.numel() for p in FrequencyMix(channels, identity_init=True).parameters()) == (
        expected
    )


def test_official_parameter_names_and_shapes():
    c, hidden = 64, 4
    shapes = {k: tuple(v.shape) for k, v in FrequencyMix(c).state_dict().items()}
    sub = {None: c, "h": hidden}
    assert shapes == {
        k: tuple(sub.get(d, d) if not isinstance(d, int) else d for d in v)
        for k, v in OFFICIAL_KEYS.items()
    }


@pytest.mark.parametrize("shape", [(1, 32, 16, 16), (1, 32, 15, 22), (1, 48, 9, 8), (1, 32, 1, 3)])
@pytest.mark.parametrize("cutoff", [0.35, 0.25])
def test_matches_official_forward(shape, cutoff):
    module = _randomized(FrequencyMix(shape[1], cutoff=cutoff)).double()
    x = _x(shape)
    torch.testing.assert_close(
        module(x), freqmix_reference(module, x, cutoff), rtol=1e-9, atol=1e-9
    )


def test_channel_residual():
    module = _randomized(FrequencyMix(32, channel_res=True)).double()
    x = _x((1, 32, 12, 10))
    torch.testing.assert_close(module(x), freqmix_reference(module, x), rtol=1e-9, atol=1e-9)
    module.channel_res = False
    torch.testing.assert_close(module(x) + x, freqmix_reference(module, x) + x)


def test_batch_elements_are_independent():
    # The official code's all-dimension fftshift gives image n the attention of image
    # (n - N // 2) mod N; here each image has its own (equal to the official at N = 1).
    module = _randomized(FrequencyMix(32)).double()
    x = _x((3, 32, 10, 12))
    together = module(x)
    for i in range(3):
        alone = module(x[i : i + 1])
        torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alone, freqmix_reference(module, x[i : i + 1]))


def test_abs_mode_matches_magnitude_pooling():
    module = _randomized(FrequencyMix(32, gap_mode="abs"), std=0.05).double()
    for shape in [(2, 32, 14, 14), (1, 32, 13, 20)]:
        x = _x(shape)
        expected = freqmix_reference(module, x, gap_mode="abs")
        torch.testing.assert_close(module(x), expected, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(module(x), freqmix_reference(module, x, gap_mode="compat"))


@pytest.mark.parametrize("shape", [(2, 16, 64, 64), (1, 16, 15, 22), (2, 16, 10, 7)])
def test_gap_is_pixel_00_in_compat_mode(shape):
    module = FrequencyMix(16)
    x = _x(shape)
    h, w = shape[-2:]
    low, high, (low_re, low_im), (high_re, high_im) = module.split(x)
    # GAP over the unnormalised masked spectrum (spatial dims only) ...
    from seg_aliasing_reference import box_mask

    z = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    mask = box_mask(h, w, 0.35, x)
    gap_low, gap_high = (z * mask).mean(dim=(-2, -1)), (z * (1 - mask)).mean(dim=(-2, -1))
    torch.testing.assert_close(low_re[..., 0, 0], gap_low.real, rtol=0, atol=1e-10)
    torch.testing.assert_close(low_im[..., 0, 0], gap_low.imag, rtol=0, atol=1e-10)
    torch.testing.assert_close(high_re[..., 0, 0], gap_high.real, rtol=0, atol=1e-10)
    torch.testing.assert_close(high_im[..., 0, 0], gap_high.imag, rtol=0, atol=1e-10)
    # ... is the top-left pixel of the low- and high-passed feature.
    torch.testing.assert_close(gap_low.real, daf_reference(x)[..., 0, 0], rtol=0, atol=1e-10)
    torch.testing.assert_close(gap_high.real, (x - daf_reference(x))[..., 0, 0], atol=1e-10, rtol=0)
    if h % 2 == 0 or w % 2 == 0:  # the one-sided edge bin leaves an imaginary residue
        assert low_im.abs().max() > 1e-6
    else:
        assert low_im.abs().max() < 1e-10


def test_high_is_x_minus_low():
    module = FrequencyMix(16)
    x = _x((2, 16, 20, 18), dtype=torch.float32)
    low, high, _, _ = module.split(x)
    assert torch.equal(high, x - low)
    torch.testing.assert_close(low, DeAliasingFilter(0.35)(x), rtol=0, atol=0)
    torch.testing.assert_close(low + high, x)


@pytest.mark.parametrize("shape", [(2, 64, 16, 16), (1, 64, 13, 21)])
def test_identity_init(shape):
    torch.manual_seed(0)
    module = FrequencyMix(64, identity_init=True)
    x = _x((shape[0], 64) + shape[2:], dtype=torch.float32)
    torch.testing.assert_close(module(x), x, rtol=1e-6, atol=1e-6)
    # Still trainable: the zero-initialised convs get gradients.
    module(x).square().sum().backward()
    assert module.freq_weight_conv.weight.grad.abs().sum() > 0
    assert module.channel_att_low[3].weight.grad.abs().sum() > 0
    assert module.channel_att_high[3].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs", [{"channel_res": True}, {"gap_mode": "abs"}])
def test_identity_init_needs_compat_without_residual(kwargs):
    with pytest.raises(ValueError, match="identity_init"):
        FrequencyMix(32, identity_init=True, **kwargs)


def test_default_init_scales_by_about_a_third():
    # Known property of the official init (W ~ 0.5, a ~ 0.71 on average).
    torch.manual_seed(0)
    x = _x((2, 64, 16, 16), dtype=torch.float32)
    ratio = FrequencyMix(64)(x).std() / x.std()
    assert 0.2 < ratio < 0.55


def test_bfloat16_autocast_any_size():
    module = _randomized(FrequencyMix(32), std=0.1)
    x = _x((2, 32, 15, 27), dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), module(x.bfloat16().float()), rtol=2e-2, atol=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y32 = module(x)
    assert y32.dtype == torch.float32


def test_gradcheck():
    module = _randomized(FrequencyMix(4, reduction=2), std=0.5).double()
    x = _x((1, 4, 5, 6)).requires_grad_()
    assert torch.autograd.gradcheck(module, (x,), fast_mode=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels": 0}, "channels"),
        ({"channels": 8}, "reduction"),
        ({"channels": 32, "reduction": 0}, "reduction"),
        ({"channels": 32, "gap_mode": "mean"}, "gap_mode"),
        ({"channels": 32, "cutoff": 0.7}, "cutoff"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FrequencyMix(**kwargs)


def test_bad_input_channels():
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 32, H, W\)"):
        FrequencyMix(32)(torch.randn(1, 16, 8, 8))
