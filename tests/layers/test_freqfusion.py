"""FreqFusion module behaviour: options, initialisation, precision, checkpointing, bad inputs.

Numerical parity with the official module is in test_freqfusion_parity.py.
"""

import math
import os
import subprocess
import sys

import pytest
import torch

from freqfusion_d2.layers import FreqFusion, local_cosine_similarity

M2F = dict(
    compressed_channels=16, feature_resample=True, hamming_window=False, feature_resample_norm=False
)


def _feats(n=2, c_h=16, c_l=16, h=12, w=10, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    hr = torch.randn(n, c_h, h, w, generator=gen).to(dtype)
    lr = torch.randn(n, c_l, h // 2, w // 2, generator=gen).to(dtype)
    return hr, lr


def _randomize(module, std=0.2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module


def test_output_shapes_and_default_state_dict():
    module = FreqFusion(32, 48, compressed_channels=16)
    mask, hr_out, lr_out = module(*_feats(c_h=32, c_l=48, h=16, w=20))
    assert mask.shape == (2, 25, 16, 20)
    assert hr_out.shape == (2, 32, 16, 20) and lr_out.shape == (2, 48, 16, 20)
    assert module.hamming_lowpass.shape == (1, 1, 5, 5)
    assert module.hamming_lowpass[0, 0, 2, 2] == 1.0
    assert module.hamming_lowpass[0, 0, 0, 0].item() == pytest.approx(0.0064)


def test_unknown_keyword_is_type_error():
    with pytest.raises(TypeError):
        FreqFusion(16, 16, feature_resampel=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(scale_factor=2), "scale_factor must be 1"),
        (dict(use_high_pass=False), "comp_feat_upsample=True needs use_high_pass"),
        (dict(lowpass_kernel=4), "lowpass_kernel must be a positive odd"),
        (dict(up_group=3), "up_group=3 must divide"),
        (dict(feature_resample=True, feature_resample_group=3), "feature_resample_group=3"),
        (dict(sampler_init="zero"), "sampler_init"),
        (dict(feature_resample=True, compressed_channels=4), "norm=True needs"),
    ],
)
def test_invalid_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FreqFusion(16, 16, **kwargs)


def test_size_rule_is_checked():
    module = FreqFusion(16, 16, compressed_channels=16)
    hr, lr = _feats(h=12, w=10)
    with pytest.raises(ValueError, match="exactly twice"):
        module(hr[..., :11, :], lr)
    with pytest.raises(ValueError, match=r"hr_feat must be \(N, 16, H, W\)"):
        module(hr[:, :8], lr)


def test_official_initialisation():
    torch.manual_seed(0)
    module = FreqFusion(256, 256, **dict(M2F, compressed_channels=64))
    for encoder in (module.content_encoder, module.content_encoder2):
        assert abs(encoder.weight.std().item() - 1e-3) < 2e-4
        assert torch.count_nonzero(encoder.bias) == 0
    # The official init_weights runs xavier-uniform over the sampler's convolutions too.
    for name in ("offset", "direct_scale", "hr_offset", "hr_direct_scale"):
        conv = getattr(module.dysampler, name)
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert conv.weight.abs().max().item() <= bound
        assert conv.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
        assert torch.count_nonzero(conv.bias) == 0


def _resampling_change(sampler_init):
    """Max change the offset generator makes to the upsampled feature right after init."""
    torch.manual_seed(0)
    module = FreqFusion(16, 16, **M2F, sampler_init=sampler_init)
    plain = FreqFusion(16, 16, compressed_channels=16, hamming_window=False)
    plain.load_state_dict({k: v for k, v in module.state_dict().items() if "dysampler" not in k})
    hr, lr = _feats()
    return (module(hr, lr)[2] - plain(hr, lr)[2]).abs().max().item(), module.dysampler


def test_intended_sampler_initialisation_starts_near_identity():
    change, sampler = _resampling_change("intended")
    assert torch.count_nonzero(sampler.direct_scale.weight) == 0
    assert torch.count_nonzero(sampler.hr_direct_scale.weight) == 0
    assert sampler.offset.weight.std().item() == pytest.approx(1e-3, rel=0.2)
    # Offsets of a few hundredths of a pixel, against about a pixel with the official init.
    official_change, _ = _resampling_change("official")
    assert change < 0.05 < 0.2 < official_change


def test_up_group_with_identical_group_weights_equals_one_group():
    one = _randomize(FreqFusion(16, 16, compressed_channels=16))
    two = FreqFusion(16, 16, compressed_channels=16, up_group=2)
    sd = one.state_dict()
    for name in ("content_encoder", "content_encoder2"):
        # Both groups predict the same kernels, so grouping must not change anything.
        sd[f"{name}.weight"] = sd[f"{name}.weight"].repeat(2, 1, 1, 1)
        sd[f"{name}.bias"] = sd[f"{name}.bias"].repeat(2)
    two.load_state_dict(sd)
    hr, lr = _feats(dtype=torch.float64)
    for a, b in zip(one.double()(hr, lr)[1:], two.double()(hr, lr)[1:]):
        torch.testing.assert_close(a, b)


def test_use_checkpoint_gives_same_outputs_and_gradients():
    module = _randomize(FreqFusion(16, 16, **M2F)).double()
    hr, lr = _feats(dtype=torch.float64)
    results = []
    for use_checkpoint in (False, True):
        h, lo = hr.clone().requires_grad_(), lr.clone().requires_grad_()
        module.zero_grad()
        _, hr_out, lr_out = module(h, lo, use_checkpoint=use_checkpoint)
        (hr_out.sum() + (lr_out**2).sum()).backward()
        results.append(
            (hr_out, lr_out, h.grad, lo.grad, module.content_encoder.weight.grad.clone())
        )
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_has_no_nans_and_tracks_float32(dtype):
    torch.manual_seed(0)
    # Weights of trained scale; much larger ones saturate the softmax and make the learned
    # offsets amplify any rounding.
    module = _randomize(FreqFusion(16, 16, **M2F), std=0.05)
    hr, lr = _feats()
    _, hr_ref, lr_ref = module(hr, lr)
    _, hr_out, lr_out = module.to(dtype)(hr.to(dtype), lr.to(dtype))
    assert hr_out.dtype == dtype and lr_out.dtype == dtype
    assert torch.isfinite(hr_out).all() and torch.isfinite(lr_out).all()
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    for out, ref in ((hr_out, hr_ref), (lr_out, lr_ref)):
        assert ((out.float() - ref).norm() / ref.norm()).item() < tol


def test_autocast_cpu_bfloat16():
    torch.manual_seed(0)
    module = _randomize(FreqFusion(16, 16, **M2F), std=0.05)
    hr, lr = _feats()
    _, hr_ref, lr_ref = module(hr, lr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mask, hr_out, lr_out = module(hr, lr)
    assert mask.dtype == torch.float32  # kernels are normalised in float32
    assert torch.isfinite(hr_out).all() and torch.isfinite(lr_out).all()
    for out, ref in ((hr_out, hr_ref), (lr_out, lr_ref)):
        assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-2
    (hr_out.float().sum() + lr_out.float().sum()).backward()
    assert torch.isfinite(module.hr_channel_compressor.weight.grad).all()


def test_cosine_similarity_is_safe_in_float16_at_borders():
    x = torch.randn(1, 8, 5, 6).half()
    sim = local_cosine_similarity(x)
    assert sim.shape == (1, 8, 5, 6) and sim.dtype == torch.float32
    assert torch.isfinite(sim).all()
    # Neighbours two pixels outside the map are zero vectors: similarity 0.
    assert torch.count_nonzero(sim[0, 0, :2, :]) == 0
    torch.testing.assert_close(sim, local_cosine_similarity(x.float()), rtol=2e-3, atol=2e-3)


def test_package_imports_and_runs_without_extension():
    # A fresh interpreter in which freqfusion_d2._C cannot be imported: the package must import,
    # log the fallback once, and compute the same result through the reference.
    code = r"""
import importlib.abc, logging, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "freqfusion_d2._C":
            raise ImportError("blocked for the test")
sys.meta_path.insert(0, Block())
logging.basicConfig(level=logging.WARNING, format="%(name)s|%(message)s")
import torch
from freqfusion_d2.layers import FreqFusion, carafe, carafe_ref
torch.manual_seed(0)
f, m = torch.randn(1, 4, 5, 5, dtype=torch.float64), torch.randn(1, 9, 10, 10, dtype=torch.float64)
assert torch.equal(carafe(f, m, 3, 1, 2), carafe_ref(f, m, 3, 1, 2))
module = FreqFusion(16, 16, compressed_channels=16, feature_resample=True, hamming_window=False)
module(torch.randn(1, 16, 8, 8), torch.randn(1, 16, 4, 4))
module(torch.randn(1, 16, 8, 8), torch.randn(1, 16, 4, 4))
print("OK")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK"
    assert proc.stderr.count("freqfusion_d2._C is not available") == 1
