"""Parity of ``freqfusion_d2.layers.FreqFusion`` with an independent functional oracle.

The oracle below restates the official module (github.com/Linwei-Chen/FreqFusion,
``FreqFusion.py``: ``carafe``, ``FreqFusion.__init__`` / ``_forward`` / ``kernel_normalizer``,
``LocalSimGuidedSampler`` and ``compute_similarity``). It works on an official-format state
dict (the key names and shapes that ``FreqFusion.__init__`` creates) with plain
``torch.nn.functional`` calls, so it shares no code with the module under test: CARAFE, the
kernel normaliser, the local cosine similarity and the offset sampler are all re-derived here.
"""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from freqfusion_d2.layers import FreqFusion

# Constructor defaults of the official module (``FreqFusion.__init__``).
DEFAULTS = dict(
    scale_factor=1,
    lowpass_kernel=5,
    highpass_kernel=3,
    up_group=1,
    encoder_kernel=3,
    encoder_dilation=1,
    compressed_channels=64,
    align_corners=False,
    upsample_mode="nearest",
    feature_resample=False,
    feature_resample_group=4,
    comp_feat_upsample=True,
    use_high_pass=True,
    use_low_pass=True,
    hr_residual=True,
    semi_conv=True,
    hamming_window=True,
    feature_resample_norm=True,
)


def _full_cfg(cfg):
    unknown = set(cfg) - set(DEFAULTS) - {"hr_channels", "lr_channels"}
    if unknown:
        raise ValueError(f"unknown options {sorted(unknown)}")
    out = dict(DEFAULTS)
    out.update(cfg)
    return out


# --------------------------------------------------------------------------------------------
# Oracle building blocks
# --------------------------------------------------------------------------------------------


def oracle_carafe(features, masks, kernel_size, group_size, scale_factor):
    """Zero-padded CARAFE (mmcv's ``carafe`` op; Wang et al., ICCV 2019): unfold the k x k
    neighbourhoods, repeat them s x s times (floor mapping of output to source pixel), and take
    the group-wise dot product with the masks.
    """
    n, c, h, w = features.shape
    k, g, s = kernel_size, group_size, scale_factor
    assert masks.shape == (n, g * k * k, s * h, s * w), masks.shape
    assert c % g == 0
    patches = F.unfold(features, kernel_size=k, padding=(k - 1) // 2)  # (n, c*k*k, h*w)
    patches = patches.reshape(n, g, c // g, k * k, h, w)
    patches = patches.repeat_interleave(s, dim=4).repeat_interleave(s, dim=5)
    weights = masks.reshape(n, g, 1, k * k, s * h, s * w)
    return (patches * weights).sum(dim=3).reshape(n, c, s * h, s * w)


def oracle_normalize(logits, k, window):
    """Official ``FreqFusion.kernel_normalizer``: softmax over the k*k taps of each group, multiply
    by the window (shape (1, 1, k, k) or the scalar-like (1,)), divide by the tap sum."""
    n, c, h, w = logits.shape
    g = c // (k * k)
    probs = torch.softmax(logits.reshape(n, g, k * k, h, w), dim=2).reshape(n, g, k, k, h, w)
    if window.numel() == 1:
        win = window.reshape(1, 1, 1, 1, 1, 1)
    else:
        win = window.reshape(1, 1, k, k, 1, 1)
    probs = probs * win
    probs = probs / probs.sum(dim=(2, 3), keepdim=True)
    return probs.reshape(n, c, h, w).contiguous()


def oracle_cos_d2(z):
    """Cosine similarity of every pixel with its 8 neighbours at distance 2 (the official
    ``compute_similarity(x, 3, dilation=2)``), row-major neighbour order, zero padding (an
    out-of-bounds neighbour gives 0)."""
    n, c, h, w = z.shape
    nb = F.unfold(z, kernel_size=3, dilation=2, padding=2).reshape(n, c, 9, h, w)
    sim = F.cosine_similarity(nb[:, :, 4:5], nb, dim=1, eps=1e-8)  # (n, 9, h, w)
    return torch.cat([sim[:, :4], sim[:, 5:]], dim=1)


def oracle_sampler_offsets(sd, cfg, z_hr, z_lr):
    """Offsets O (N, 8*G_r, H/2, W/2) of ``LocalSimGuidedSampler.get_offset_lp``."""
    c_c = cfg["compressed_channels"]
    pad = cfg["encoder_kernel"] // 2
    if cfg["feature_resample_norm"]:
        z_hr = F.group_norm(
            z_hr, c_c // 8, sd["dysampler.norm_hr.weight"], sd["dysampler.norm_hr.bias"], 1e-5
        )
        z_lr = F.group_norm(
            z_lr, c_c // 8, sd["dysampler.norm_lr.weight"], sd["dysampler.norm_lr.bias"], 1e-5
        )
    s_hr = torch.cat([z_hr, oracle_cos_d2(z_hr)], dim=1)
    s_lr = torch.cat([z_lr, oracle_cos_d2(z_lr)], dim=1)

    def conv(name, x):
        return F.conv2d(
            x, sd[f"dysampler.{name}.weight"], sd[f"dysampler.{name}.bias"], padding=pad
        )

    off = conv("offset", s_lr) + F.pixel_unshuffle(conv("hr_offset", s_hr), 2)
    gate = conv("direct_scale", s_lr) + F.pixel_unshuffle(conv("hr_direct_scale", s_hr), 2)
    return off * torch.sigmoid(gate) + sd["dysampler.init_pos"]


def oracle_sample(feat, offsets, groups):
    """Bilinear, border-padded resampling of the HR tensor ``feat`` at LR-grid positions
    (``LocalSimGuidedSampler.sample``). Offset channel = axis*4G + g*4 + a*2 + b, axis 0 = x,
    axis 1 = y."""
    n, c, hh, ww = feat.shape
    _, _, h, w = offsets.shape
    o = offsets.reshape(n, 2, groups, 2, 2, h, w)  # (n, axis, g, a, b, i, j)
    cols = torch.arange(w, dtype=feat.dtype, device=feat.device).reshape(1, 1, 1, 1, 1, w)
    rows = torch.arange(h, dtype=feat.dtype, device=feat.device).reshape(1, 1, 1, 1, h, 1)
    gx = 2.0 * (cols + 0.5 + o[:, 0]) / w - 1.0  # (n, g, a, b, i, j)
    gy = 2.0 * (rows + 0.5 + o[:, 1]) / h - 1.0
    # HR pixel (2i + a, 2j + b): order the axes (n, g, i, a, j, b).
    gx = gx.permute(0, 1, 4, 2, 5, 3).reshape(n * groups, 2 * h, 2 * w)
    gy = gy.permute(0, 1, 4, 2, 5, 3).reshape(n * groups, 2 * h, 2 * w)
    grid = torch.stack([gx, gy], dim=-1)
    out = F.grid_sample(
        feat.reshape(n * groups, c // groups, hh, ww),
        grid,
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    )
    return out.reshape(n, c, hh, ww)


def official_forward(sd, cfg, hr, lr):
    """Functional FreqFusion forward on an official-format state dict (``FreqFusion._forward``).

    Args:
        sd: mapping from the official key names to tensors.
        cfg: constructor options of the official module; missing ones take their defaults.
        hr: (N, C_h, H, W) high-resolution input.
        lr: (N, C_l, H/2, W/2) low-resolution input.

    Returns:
        (mask_lr, hr_out, lr_out) as the official module returns them.
    """
    cfg = _full_cfg(cfg)
    if cfg["scale_factor"] != 1 or cfg["up_group"] != 1:
        raise ValueError("the official module only works with scale_factor=1 and up_group=1")
    sd = {key: val.to(dtype=hr.dtype, device=hr.device) for key, val in sd.items()}
    k_l, k_h = cfg["lowpass_kernel"], cfg["highpass_kernel"]
    e, d = cfg["encoder_kernel"], cfg["encoder_dilation"]
    enc_pad = int((e - 1) * d / 2)
    win_l, win_h = sd["hamming_lowpass"], sd["hamming_highpass"]
    size = hr.shape[-2:]

    def conv1x1(name, x):
        return F.conv2d(x, sd[name + ".weight"], sd[name + ".bias"])

    def enc_low(x):  # E_L, "ALPF generator"
        w_, b_ = sd["content_encoder.weight"], sd["content_encoder.bias"]
        return F.conv2d(x, w_, b_, padding=enc_pad, dilation=d)

    def enc_high(x):  # E_H, "AHPF generator"
        w_, b_ = sd["content_encoder2.weight"], sd["content_encoder2.bias"]
        return F.conv2d(x, w_, b_, padding=enc_pad, dilation=d)

    def nn_up(x):
        return F.interpolate(x, size=size, mode="nearest")

    z_h = conv1x1("hr_channel_compressor", hr)  # step 1
    z_l = conv1x1("lr_channel_compressor", lr)
    a_h = None
    if cfg["semi_conv"]:
        if cfg["comp_feat_upsample"]:
            if not cfg["use_high_pass"]:
                raise NotImplementedError("comp_feat_upsample needs use_high_pass")
            a_hh = enc_high(z_h)  # step 2
            k0_h = oracle_normalize(a_hh, k_h, win_h)
            z_h = 2.0 * z_h - oracle_carafe(z_h, k0_h, k_h, 1, 1)  # step 3 (overwrites Z_h)
            a_lh = enc_low(z_h)  # step 4
            k0_l = oracle_normalize(a_lh, k_l, win_l)
            a_l = a_lh + oracle_carafe(enc_low(z_l), k0_l, k_l, 1, 2)  # step 5
            k_lo = oracle_normalize(a_l, k_l, win_l)  # step 6
            a_h = a_hh + oracle_carafe(enc_high(z_l), k_lo, k_l, 1, 2)  # step 7
        else:
            a_l = enc_low(z_h) + nn_up(enc_low(z_l))
            if cfg["use_high_pass"]:
                a_h = enc_high(z_h) + nn_up(enc_high(z_l))
        k_lo = oracle_normalize(a_l, k_l, win_l)
        y_l = oracle_carafe(lr, k_lo, k_l, 1, 2)  # step 8
    else:
        z = nn_up(z_l) + z_h
        a_l = enc_low(z)
        if cfg["use_high_pass"]:
            a_h = enc_high(z)
        k_lo = oracle_normalize(a_l, k_l, win_l)
        mode = cfg["upsample_mode"]
        if mode == "nearest":
            lr_up = F.interpolate(lr, size=size, mode="nearest")
        else:
            lr_up = F.interpolate(lr, size=size, mode=mode, align_corners=cfg["align_corners"])
        y_l = oracle_carafe(lr_up, k_lo, k_l, 1, 1)

    if cfg["use_high_pass"]:  # step 9
        k_hi = oracle_normalize(a_h, k_h, win_h)
        y_h = hr - oracle_carafe(hr, k_hi, k_h, 1, 1)
        if cfg["hr_residual"]:
            y_h = y_h + hr
    else:
        y_h = hr

    if cfg["feature_resample"]:  # step 10
        offsets = oracle_sampler_offsets(sd, cfg, z_h, z_l)
        y_l = oracle_sample(y_l, offsets, cfg["feature_resample_group"])
    return k_lo, y_h, y_l


# --------------------------------------------------------------------------------------------
# Official-format state dict
# --------------------------------------------------------------------------------------------


def hamming_window_2d(k):
    return torch.tensor(np.outer(np.hamming(k), np.hamming(k)), dtype=torch.float32)[None, None]


def init_pos(groups):
    """``LocalSimGuidedSampler._init_pos``: channel axis*4G + g*4 + a*2 + b holds (b - 0.5)/2
    for x and (a - 0.5)/2 for y."""
    vals = torch.empty(2, groups, 2, 2)
    for g, a, b in itertools.product(range(groups), range(2), range(2)):
        vals[0, g, a, b] = (b - 0.5) / 2
        vals[1, g, a, b] = (a - 0.5) / 2
    return vals.reshape(1, 8 * groups, 1, 1)


def official_shapes(cfg):
    """Key -> (shape, is_parameter) of the official module's state dict, as
    ``FreqFusion.__init__`` builds it."""
    cfg = _full_cfg(cfg)
    c_h, c_l, c_c = cfg["hr_channels"], cfg["lr_channels"], cfg["compressed_channels"]
    k_l, k_h, e = cfg["lowpass_kernel"], cfg["highpass_kernel"], cfg["encoder_kernel"]
    s2g = cfg["up_group"] * cfg["scale_factor"] ** 2
    g_r = cfg["feature_resample_group"]
    win = cfg["hamming_window"]
    out = {
        "hamming_lowpass": ((1, 1, k_l, k_l) if win else (1,), False),
        "hamming_highpass": ((1, 1, k_h, k_h) if win else (1,), False),
        "hr_channel_compressor.weight": ((c_c, c_h, 1, 1), True),
        "hr_channel_compressor.bias": ((c_c,), True),
        "lr_channel_compressor.weight": ((c_c, c_l, 1, 1), True),
        "lr_channel_compressor.bias": ((c_c,), True),
        "content_encoder.weight": ((k_l * k_l * s2g, c_c, e, e), True),
        "content_encoder.bias": ((k_l * k_l * s2g,), True),
    }
    if cfg["feature_resample"]:
        out["dysampler.init_pos"] = ((1, 8 * g_r, 1, 1), False)
        for name, c_out in (
            ("offset", 8 * g_r),
            ("direct_scale", 8 * g_r),
            ("hr_offset", 2 * g_r),
            ("hr_direct_scale", 2 * g_r),
        ):
            out[f"dysampler.{name}.weight"] = ((c_out, c_c + 8, e, e), True)
            out[f"dysampler.{name}.bias"] = ((c_out,), True)
        if cfg["feature_resample_norm"]:
            for name in ("norm_hr", "norm_lr"):
                out[f"dysampler.{name}.weight"] = ((c_c,), True)
                out[f"dysampler.{name}.bias"] = ((c_c,), True)
    if cfg["use_high_pass"]:
        out["content_encoder2.weight"] = ((k_h * k_h * s2g, c_c, e, e), True)
        out["content_encoder2.bias"] = ((k_h * k_h * s2g,), True)
    return out


# Random weights: std = gain / sqrt(fan_in). The gains make the kernels clearly non-uniform (but
# not one-hot) and move the sampler's samples by about one LR pixel.
_GAIN = {
    "hr_channel_compressor": 1.0,
    "lr_channel_compressor": 1.0,
    "content_encoder": 1.0,
    "content_encoder2": 1.0,
    "dysampler.offset": 2.0,
    "dysampler.hr_offset": 2.0,
    "dysampler.direct_scale": 1.5,
    "dysampler.hr_direct_scale": 1.5,
}


def official_state_dict(cfg, generator):
    """Random float32 tensors with the official key names and shapes (float32, like a checkpoint;
    every value is exactly representable, so the float64 oracle and a float64 model agree)."""
    cfg = _full_cfg(cfg)
    sd = {}
    for key, (shape, _) in official_shapes(cfg).items():
        if key == "hamming_lowpass":
            k = cfg["lowpass_kernel"]
            sd[key] = hamming_window_2d(k) if cfg["hamming_window"] else torch.ones(1)
        elif key == "hamming_highpass":
            k = cfg["highpass_kernel"]
            sd[key] = hamming_window_2d(k) if cfg["hamming_window"] else torch.ones(1)
        elif key == "dysampler.init_pos":
            sd[key] = init_pos(cfg["feature_resample_group"])
        else:
            module, kind = key.rsplit(".", 1)
            val = torch.randn(shape, generator=generator)
            if module.startswith("dysampler.norm_"):  # GroupNorm affine: around (1, 0)
                val = val * 0.3 + (1.0 if kind == "weight" else 0.0)
            else:
                fan_in = int(np.prod(official_shapes(cfg)[module + ".weight"][0][1:]))
                val = val * _GAIN[module] / fan_in**0.5
            sd[key] = val.float()
        assert tuple(sd[key].shape) == shape, key
    return sd


def legacy_names(sd):
    """Rename ``direct_scale`` -> ``scope`` and ``hr_direct_scale`` -> ``hr_scope``: the
    pre-release names, which the official ``SegNeXt/others/torch_model_rename.py`` renames."""
    out = {}
    for key, val in sd.items():
        for new, old in (
            ("dysampler.hr_direct_scale.", "dysampler.hr_scope."),
            ("dysampler.direct_scale.", "dysampler.scope."),
        ):
            if key.startswith(new):
                key = old + key[len(new) :]
                break
        out[key] = val
    return out


# --------------------------------------------------------------------------------------------
# Test configurations
# --------------------------------------------------------------------------------------------

_BASE = dict(hr_channels=16, lr_channels=16, compressed_channels=16)

CASES = {
    "official_path_hamming": dict(),
    "m2f": dict(hamming_window=False, feature_resample=True, feature_resample_norm=False),
    "fpn_r50": dict(hamming_window=True, feature_resample=True, feature_resample_norm=False),
    "fpn_r101_gn": dict(hamming_window=True, feature_resample=True, feature_resample_norm=True),
    "gn_g8_cc8": dict(
        compressed_channels=8,
        hamming_window=False,
        feature_resample=True,
        feature_resample_group=8,
        feature_resample_norm=True,
    ),
    "no_hr_residual": dict(hr_residual=False, feature_resample=True, feature_resample_norm=False),
    "comp_feat_upsample_off": dict(
        comp_feat_upsample=False, feature_resample=True, feature_resample_norm=True
    ),
    "comp_feat_upsample_off_no_hamming": dict(comp_feat_upsample=False, hamming_window=False),
    "high_pass_off": dict(
        comp_feat_upsample=False,
        use_high_pass=False,
        feature_resample=True,
        feature_resample_norm=False,
    ),
    "semi_conv_off": dict(semi_conv=False, feature_resample=True, feature_resample_norm=True),
    "semi_conv_off_bilinear": dict(
        semi_conv=False, upsample_mode="bilinear", align_corners=False, hamming_window=False
    ),
    "semi_conv_off_bilinear_ac_high_pass_off": dict(
        semi_conv=False,
        upsample_mode="bilinear",
        align_corners=True,
        use_high_pass=False,
        comp_feat_upsample=False,
        feature_resample=True,
        feature_resample_norm=False,
    ),
    "kernels_3_5_enc5_dil2_uneven_channels": dict(
        hr_channels=12,
        lr_channels=24,
        lowpass_kernel=3,
        highpass_kernel=5,
        encoder_kernel=5,
        encoder_dilation=2,
        feature_resample=True,
        feature_resample_norm=True,
    ),
    "enc1": dict(encoder_kernel=1, feature_resample=True, feature_resample_norm=False),
}


def _cfg(name):
    cfg = dict(_BASE)
    cfg.update(CASES[name])
    return cfg


def _inputs(cfg, seed, n=2, hw=(12, 10)):
    gen = torch.Generator().manual_seed(seed)
    h, w = hw
    hr = torch.randn(n, cfg["hr_channels"], h, w, generator=gen, dtype=torch.float64)
    lr = torch.randn(n, cfg["lr_channels"], h // 2, w // 2, generator=gen, dtype=torch.float64)
    return hr, lr


def _module(cfg):
    return FreqFusion(**cfg)


def _assert_close(actual, expected, what, tol=1e-10):
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (what, actual.dtype, expected.dtype)
    err = (actual - expected).abs().max().item()
    assert err < tol, f"{what}: max abs diff {err:.3e}"


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # The tensors are tiny: one intra-op thread is faster and robust to a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# Tests of the oracle itself (so that a parity failure points at the module)
# --------------------------------------------------------------------------------------------


def test_oracle_carafe_uniform_kernel_border_weights():
    # Zero-padded CARAFE, uniform 5x5 kernel over a constant map: corner 9/25, one step in 16/25.
    feats = torch.ones(1, 1, 6, 6, dtype=torch.float64)
    masks = torch.full((1, 25, 12, 12), 1.0 / 25, dtype=torch.float64)
    out = oracle_carafe(feats, masks, 5, 1, 2)
    assert out[0, 0, 0, 0].item() == pytest.approx(9 / 25)
    assert out[0, 0, 2, 2].item() == pytest.approx(16 / 25)
    assert out[0, 0, 5, 5].item() == pytest.approx(1.0)


@pytest.mark.parametrize("k,g,s", [(5, 1, 2), (3, 1, 1), (3, 2, 2), (1, 1, 2)])
def test_oracle_carafe_matches_sum_formula(k, g, s):
    gen = torch.Generator().manual_seed(3)
    c, h, w, r = 4, 4, 3, (k - 1) // 2
    feats = torch.randn(2, c, h, w, generator=gen, dtype=torch.float64)
    masks = torch.randn(2, g * k * k, s * h, s * w, generator=gen, dtype=torch.float64)
    expected = torch.zeros(2, c, s * h, s * w, dtype=torch.float64)
    for ch, y, x, i, j in itertools.product(
        range(c), range(s * h), range(s * w), range(k), range(k)
    ):
        u, v = y // s + i - r, x // s + j - r
        if 0 <= u < h and 0 <= v < w:
            grp = ch // (c // g)
            expected[:, ch, y, x] += masks[:, grp * k * k + i * k + j, y, x] * feats[:, ch, u, v]
    _assert_close(oracle_carafe(feats, masks, k, g, s), expected, "oracle carafe")


def test_oracle_normalize_equals_softmax_plus_log_window():
    # kernel_normalizer: the normaliser equals softmax(logits + log w) over the taps.
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 25, 3, 4, generator=gen, dtype=torch.float64)
    win = hamming_window_2d(5).double()
    expected = torch.softmax(logits + win.reshape(1, 25, 1, 1).log(), dim=1)
    _assert_close(oracle_normalize(logits, 5, win), expected, "normaliser", tol=1e-14)
    ones = torch.ones(1, dtype=torch.float64)
    _assert_close(oracle_normalize(logits, 5, ones), torch.softmax(logits, 1), "no window", 1e-14)


def test_oracle_cos_d2_hand_values():
    z = torch.randn(1, 3, 5, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sim = oracle_cos_d2(z)
    order = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    for (y, x), (idx, (dy, dx)) in itertools.product([(2, 2), (0, 0), (4, 3)], enumerate(order)):
        u, v = y + 2 * dy, x + 2 * dx
        if 0 <= u < 5 and 0 <= v < 4:
            a, b = z[0, :, y, x], z[0, :, u, v]
            expected = (a @ b / (a.norm() * b.norm())).item()
        else:
            expected = 0.0
        assert sim[0, idx, y, x].item() == pytest.approx(expected, abs=1e-12)


def test_oracle_sampler_identity_with_init_pos_only():
    # LocalSimGuidedSampler: with zero learned offset the sampler is the identity map.
    gen = torch.Generator().manual_seed(6)
    feat = torch.randn(2, 8, 8, 6, generator=gen, dtype=torch.float64)
    offsets = init_pos(4).double().expand(2, 32, 4, 3)
    _assert_close(oracle_sample(feat, offsets, 4), feat, "identity sample", tol=1e-12)


def test_init_pos_matches_official():
    pos = init_pos(4).flatten().tolist()
    assert pos[:16] == [-0.25, 0.25] * 8
    assert pos[16:] == [-0.25, -0.25, 0.25, 0.25] * 4


# --------------------------------------------------------------------------------------------
# Tests of the module
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dict_layout_matches_official(name):
    cfg = _cfg(name)
    model = _module(cfg)
    # Same keys, shapes and state_dict() order as the official module.
    got = [(key, tuple(val.shape)) for key, val in model.state_dict().items()]
    expected = [(key, shape) for key, (shape, _) in official_shapes(cfg).items()]
    assert got == expected
    params = {key for key, _ in model.named_parameters()}
    assert params == {key for key, (_, is_param) in official_shapes(cfg).items() if is_param}
    # Buffers are deterministic: they must hold the official values.
    ref = official_state_dict(cfg, torch.Generator().manual_seed(0))
    state = model.state_dict()
    for key in ("hamming_lowpass", "hamming_highpass", "dysampler.init_pos"):
        if key in ref:
            assert state[key].dtype == torch.float32, key
            assert torch.equal(state[key], ref[key]), key


@pytest.mark.parametrize(
    "options,expected",
    [
        (dict(feature_resample=True, feature_resample_norm=False), 104_434),
        (dict(feature_resample=True, feature_resample_norm=True), 104_690),
        (
            dict(feature_resample=True, feature_resample_norm=True, feature_resample_group=8),
            156_610,
        ),
    ],
)
def test_parameter_counts_of_official_configs(options, expected):
    cfg = dict(hr_channels=256, lr_channels=256, compressed_channels=64, **options)
    model = _module(cfg)
    assert sum(p.numel() for p in model.parameters()) == expected
    shapes = official_shapes(cfg)
    assert sum(int(np.prod(s)) for s, is_param in shapes.values() if is_param) == expected


def test_parameter_count_of_default_module():
    model = FreqFusion(64, 64)
    assert sum(p.numel() for p in model.parameters()) == 27_938


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_matches_oracle(name):
    cfg = _cfg(name)
    sd = official_state_dict(cfg, torch.Generator().manual_seed(1234))
    model = _module(cfg)
    model.load_state_dict(sd, strict=True)
    model.double().eval()
    hr, lr = _inputs(cfg, seed=99)
    with torch.no_grad():
        got = model(hr, lr)
    expected = official_forward(sd, cfg, hr, lr)
    assert isinstance(got, tuple) and len(got) == 3
    for what, a, b in zip(("mask_lr", "hr_out", "lr_out"), got, expected):
        _assert_close(a, b, f"{name}: {what}")
    full = _full_cfg(cfg)
    # The random weights make the test meaningful: kernels neither uniform nor one-hot, the hr
    # feature changed, and samples moved by about one LR pixel.
    peak = expected[0].amax(dim=1).median().item()
    assert 2.0 / full["lowpass_kernel"] ** 2 < peak < 0.9
    if full["use_high_pass"]:
        assert (expected[1] - hr).abs().max().item() > 0.1
    if full["feature_resample"]:
        sd64 = {key: val.double() for key, val in sd.items()}
        z_h = F.conv2d(hr, sd64["hr_channel_compressor.weight"], sd64["hr_channel_compressor.bias"])
        z_l = F.conv2d(lr, sd64["lr_channel_compressor.weight"], sd64["lr_channel_compressor.bias"])
        learned = oracle_sampler_offsets(sd64, full, z_h, z_l) - sd64["dysampler.init_pos"]
        assert 0.3 < learned.abs().mean().item() < 3.0


@pytest.mark.parametrize("name", ["m2f", "fpn_r101_gn"])
def test_legacy_scope_keys_load(name):
    cfg = _cfg(name)
    sd = official_state_dict(cfg, torch.Generator().manual_seed(7))
    old = legacy_names(sd)
    assert "dysampler.scope.weight" in old and "dysampler.hr_scope.bias" in old
    assert not any("direct_scale" in key for key in old)
    model_old = _module(cfg)
    model_old.load_state_dict(old, strict=True)
    model_new = _module(cfg)
    model_new.load_state_dict(sd, strict=True)
    for key, val in model_new.state_dict().items():
        assert torch.equal(model_old.state_dict()[key], val), key
    model_old.double().eval()
    hr, lr = _inputs(cfg, seed=5)
    with torch.no_grad():
        got = model_old(hr, lr)
    expected = official_forward(sd, cfg, hr, lr)
    for what, a, b in zip(("mask_lr", "hr_out", "lr_out"), got, expected):
        _assert_close(a, b, f"legacy {name}: {what}")


def test_example_shapes():
    model = FreqFusion(32, 48, compressed_channels=16, feature_resample=True)
    hr = torch.randn(2, 32, 16, 20)
    lr = torch.randn(2, 48, 8, 10)
    with torch.no_grad():
        mask, hr_out, lr_out = model(hr, lr)
    assert tuple(mask.shape) == (2, 25, 16, 20)
    assert tuple(hr_out.shape) == (2, 32, 16, 20)
    assert tuple(lr_out.shape) == (2, 48, 16, 20)
