"""FreqFusion with the ``direction_feat='sim'`` sampler of the official SegNeXt head."""

import pytest
import torch
import torch.nn.functional as F

from freqfusion_d2.layers import FreqFusion, FreqFusionSimDirection, SimDirectionSampler


def segnext_module_keys(hr, lr, groups=4):
    """Official key shapes of one ``LightHamHeadFreqAware`` FreqFusion (compress_ratio 4,
    hamming off, sampler with GroupNorm and ``direction_feat='sim'``, kernel size 3)."""
    cc = (hr + lr) // 4
    return {
        "hamming_lowpass": (1,),
        "hamming_highpass": (1,),
        "hr_channel_compressor.weight": (cc, hr, 1, 1),
        "hr_channel_compressor.bias": (cc,),
        "lr_channel_compressor.weight": (cc, lr, 1, 1),
        "lr_channel_compressor.bias": (cc,),
        "content_encoder.weight": (25, cc, 3, 3),
        "content_encoder.bias": (25,),
        "dysampler.init_pos": (1, 8 * groups, 1, 1),
        "dysampler.offset.weight": (8 * groups, 8, 3, 3),
        "dysampler.offset.bias": (8 * groups,),
        "dysampler.direct_scale.weight": (8 * groups, cc, 3, 3),
        "dysampler.direct_scale.bias": (8 * groups,),
        "dysampler.hr_offset.weight": (2 * groups, 8, 3, 3),
        "dysampler.hr_offset.bias": (2 * groups,),
        "dysampler.hr_direct_scale.weight": (2 * groups, cc, 3, 3),
        "dysampler.hr_direct_scale.bias": (2 * groups,),
        "dysampler.norm_hr.weight": (cc,),
        "dysampler.norm_hr.bias": (cc,),
        "dysampler.norm_lr.weight": (cc,),
        "dysampler.norm_lr.bias": (cc,),
        "content_encoder2.weight": (9, cc, 3, 3),
        "content_encoder2.bias": (9,),
    }


def segnext_module(hr, lr):
    return FreqFusionSimDirection(
        hr,
        lr,
        compressed_channels=(hr + lr) // 4,
        feature_resample=True,
        feature_resample_group=4,
        hamming_window=False,
        feature_resample_norm=True,
    )


@pytest.mark.parametrize("hr,lr,params", [(160, 256, 116_146), (64, 416, 141_234)])
def test_official_segnext_state_dict_loads_strictly(hr, lr, params):
    # The two modules of SegNeXt-T (MSCAN-T stages 2-4: 64/160/256 channels, fused lr -> hr).
    module = segnext_module(hr, lr)
    expected = segnext_module_keys(hr, lr)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == expected
    assert sum(p.numel() for p in module.parameters()) == params
    g = torch.Generator().manual_seed(0)
    official = {k: torch.randn(shape, generator=g) for k, shape in expected.items()}
    official["hamming_lowpass"] = torch.ones(1)
    official["hamming_highpass"] = torch.ones(1)
    module.load_state_dict(official, strict=True)
    for k, v in module.state_dict().items():
        assert torch.equal(v, official[k]), k
    # A 'sim_concat' module cannot take these weights.
    concat = FreqFusion(hr, lr, compressed_channels=(hr + lr) // 4, feature_resample=True)
    with pytest.raises(RuntimeError, match="size mismatch"):
        concat.load_state_dict(official, strict=True)


def test_legacy_scope_names_load():
    module = segnext_module(64, 96)
    sd = module.state_dict()
    legacy = {k.replace("direct_scale", "scope"): v + 1 for k, v in sd.items()}
    assert any(".hr_scope." in k for k in legacy)
    module.load_state_dict(legacy, strict=True)
    assert torch.equal(module.dysampler.hr_direct_scale.bias, sd["dysampler.hr_direct_scale.bias"])


def _oracle_cos(z):
    n, c, h, w = z.shape
    nb = F.unfold(z, kernel_size=3, dilation=2, padding=2).reshape(n, c, 9, h, w)
    sim = F.cosine_similarity(nb[:, :, 4:5], nb, dim=1, eps=1e-8)
    return torch.cat([sim[:, :4], sim[:, 5:]], dim=1)


def _oracle_sampler(sd, groups, hr_x, lr_x, feat):
    """The 'sim' sampler in plain functional ops: offsets from the similarities, gates from the
    GroupNorm-ed features, then bilinear border sampling of ``feat`` at the LR-grid positions."""
    cc = hr_x.shape[1]
    hr_x = F.group_norm(hr_x, cc // 8, sd["norm_hr.weight"], sd["norm_hr.bias"], 1e-5)
    lr_x = F.group_norm(lr_x, cc // 8, sd["norm_lr.weight"], sd["norm_lr.bias"], 1e-5)

    def conv(name, x):
        return F.conv2d(x, sd[name + ".weight"], sd[name + ".bias"], padding=1)

    off = conv("offset", _oracle_cos(lr_x)) + F.pixel_unshuffle(
        conv("hr_offset", _oracle_cos(hr_x)), 2
    )
    gate = conv("direct_scale", lr_x) + F.pixel_unshuffle(conv("hr_direct_scale", hr_x), 2)
    o = off * gate.sigmoid() + sd["init_pos"]
    n, c, hh, ww = feat.shape
    h, w = o.shape[-2:]
    o = o.reshape(n, 2, groups, 2, 2, h, w)
    cols = torch.arange(w, dtype=feat.dtype).reshape(1, 1, 1, 1, 1, w)
    rows = torch.arange(h, dtype=feat.dtype).reshape(1, 1, 1, 1, h, 1)
    gx = (2.0 * (cols + 0.5 + o[:, 0]) / w - 1.0).permute(0, 1, 4, 2, 5, 3)
    gy = (2.0 * (rows + 0.5 + o[:, 1]) / h - 1.0).permute(0, 1, 4, 2, 5, 3)
    grid = torch.stack([gx.reshape(n * groups, hh, ww), gy.reshape(n * groups, hh, ww)], dim=-1)
    out = F.grid_sample(
        feat.reshape(n * groups, c // groups, hh, ww),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return out.reshape(n, c, hh, ww)


def test_sampler_matches_functional_oracle():
    torch.manual_seed(0)
    sampler = SimDirectionSampler(16, groups=4, kernel_size=3, norm=True).double()
    for p in sampler.parameters():  # non-trivial offsets and gates
        torch.nn.init.normal_(p, std=0.3)
    hr_x = torch.randn(2, 16, 10, 12, dtype=torch.float64)
    lr_x = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    feat = torch.randn(2, 8, 10, 12, dtype=torch.float64)
    sd = sampler.state_dict()
    expected = _oracle_sampler(sd, 4, hr_x, lr_x, feat)
    out = sampler(hr_x, lr_x, feat)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)
    assert (out - feat).abs().max() > 1e-3  # the offsets moved the samples


def test_intended_init_sampler_is_identity():
    sampler = SimDirectionSampler(16, groups=4, kernel_size=3, norm=False)
    sampler.reset_offset_parameters()
    for p in (sampler.offset.weight, sampler.hr_offset.weight):
        torch.nn.init.zeros_(p)
    feat = torch.randn(1, 8, 6, 8)
    out = sampler(torch.randn(1, 16, 6, 8), torch.randn(1, 16, 3, 4), feat)
    torch.testing.assert_close(out, feat, atol=1e-5, rtol=0)


def test_module_equals_base_except_for_the_sampler():
    torch.manual_seed(0)
    sim = segnext_module(32, 48).eval()
    base = FreqFusion(
        32, 48, compressed_channels=20, feature_resample=False, hamming_window=False
    ).eval()
    base.load_state_dict(
        {k: v for k, v in sim.state_dict().items() if not k.startswith("dysampler.")},
        strict=True,
    )
    seen = {}
    sim.dysampler.register_forward_hook(
        lambda m, args, kwargs, out: seen.update(kwargs=kwargs, out=out), with_kwargs=True
    )
    hr = torch.randn(2, 32, 8, 10)
    lr = torch.randn(2, 48, 4, 5)
    with torch.no_grad():
        mask_s, hr_s, lr_s = sim(hr, lr)
        mask_b, hr_b, lr_b = base(hr, lr)
    torch.testing.assert_close(mask_s, mask_b)
    torch.testing.assert_close(hr_s, hr_b)
    torch.testing.assert_close(
        seen["kwargs"]["feat2sample"], lr_b
    )  # the sampler resamples base's output
    torch.testing.assert_close(lr_s, seen["out"])
    assert not torch.allclose(lr_s, lr_b)


def test_without_feature_resample_has_no_sampler():
    module = FreqFusionSimDirection(16, 16, compressed_channels=8, feature_resample=False)
    assert not hasattr(module, "dysampler")
    out = module(torch.randn(1, 16, 4, 4), torch.randn(1, 16, 2, 2))
    assert out[2].shape == (1, 16, 4, 4)
