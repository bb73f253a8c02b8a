"""AliasingProbe on detectron2 ResNets and the Swin backbone: targets, cutoffs, the scores it
records against a direct computation, pooled values, spectra, local maps, hook removal."""

import math

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import build_resnet_backbone

from freqfusion_d2.analysis import AliasingProbe, aliasing_score
from freqfusion_d2.engine import setup_cfg
from freqfusion_d2.modeling.backbone.swin import SwinTransformer


def _resnet(depth=18, *opts):
    cfg = setup_cfg(
        "",
        [
            "MODEL.RESNETS.DEPTH", str(depth),
            "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
            "MODEL.RESNETS.NORM", "BN",
            "MODEL.BACKBONE.FREEZE_AT", "0",
            "MODEL.DEVICE", "cpu",
            *(("MODEL.RESNETS.RES2_OUT_CHANNELS", "64") if depth in (18, 34) else ()),
            *opts,
        ],
    )  # fmt: skip
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


def _stage_inputs(resnet, x):
    seen = {}
    handles = [
        getattr(resnet, n).register_forward_pre_hook(
            lambda m, a, n=n: seen.__setitem__(n, a[0].detach().clone())
        )
        for n in ("res3", "res4", "res5")
    ]
    resnet(x)
    for h in handles:
        h.remove()
    return seen


def test_resnet_targets_and_scores():
    torch.manual_seed(0)
    resnet = _resnet(18)
    x = torch.randn(2, 3, 96, 64)
    with AliasingProbe(resnet) as probe:
        assert list(probe.targets) == ["res3", "res4", "res5"]
        channels = [(t.c_in, t.c_out, t.stride) for t in probe.targets.values()]
        assert channels == [(64, 128, 2), (128, 256, 2), (256, 512, 2)]
        assert all(t.cutoff == pytest.approx(math.sqrt(2) / 4) for t in probe.targets.values())
        with torch.no_grad():
            resnet(x)
            resnet(x[:1])
        summary = probe.summary()
    inputs = _stage_inputs(resnet, x)
    for name in ("res3", "res4", "res5"):
        expected = aliasing_score(inputs[name], math.sqrt(2) / 4)
        scores = torch.tensor(probe.records[name].scores)
        torch.testing.assert_close(scores, torch.cat([expected, expected[:1]]).float())
        assert summary[name]["count"] == 3
        assert summary[name]["mean"] == pytest.approx(float(scores.double().mean()), rel=1e-6)
        assert summary[name]["std"] == pytest.approx(
            float(scores.double().std(unbiased=False)), rel=1e-5
        )
        assert 0 < summary[name]["pooled"] < 1
    # The hooks are gone after the context.
    resnet(x[:1])
    assert summary["res3"]["count"] == len(probe.records["res3"].scores)


def test_dilated_res5_is_not_a_downsampling():
    resnet = _resnet(
        50,
        "MODEL.RESNETS.RES5_DILATION",
        "2",
        "MODEL.RESNETS.WIDTH_PER_GROUP",
        "8",
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "32",
        "MODEL.RESNETS.STEM_OUT_CHANNELS",
        "16",
    )
    probe = AliasingProbe(resnet, cutoff_mode="plain")
    assert list(probe.targets) == ["res3", "res4"]
    assert {t.cutoff for t in probe.targets.values()} == {0.25}
    probe.remove()


def test_swin_patch_merging_targets():
    torch.manual_seed(0)
    swin = SwinTransformer(
        embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=2
    ).eval()
    x = torch.randn(1, 3, 64, 96)
    probe = AliasingProbe(swin, cutoff=0.3)
    assert list(probe.targets) == [
        "layers.0.downsample",
        "layers.1.downsample",
        "layers.2.downsample",
    ]
    assert [(t.c_in, t.c_out) for t in probe.targets.values()] == [(16, 32), (32, 64), (64, 128)]
    seen = {}

    def grab(module, args):
        tokens, h, w = args
        seen[module] = tokens.view(1, h, w, -1).permute(0, 3, 1, 2).clone()

    first = swin.layers[0].downsample
    handle = first.register_forward_pre_hook(grab)
    with torch.no_grad():
        swin(x)
    handle.remove()
    probe.remove()
    assert seen[first].shape == (1, 16, 16, 24)
    expected = aliasing_score(seen[first], 0.3)
    assert probe.records["layers.0.downsample"].scores == pytest.approx(expected.tolist(), rel=1e-5)


def test_extra_layers_spectrum_local_maps_and_crop():
    resnet = _resnet(18)
    probe = AliasingProbe(
        resnet, {"res2": 0.25}, backbone=False, spectrum_bins=16, local_maps=True, patch=8, stride=4
    )
    assert list(probe.targets) == ["res2"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        resnet(x)
    record = probe.records["res2"]
    assert record.last_local_map.shape == (1, 3, 3)  # 16 x 16 stem output
    summary = probe.summary()["res2"]
    assert len(summary["spectrum"]) == 16 and len(summary["frequencies"]) == 16
    assert summary["frequencies"][0] == pytest.approx(0.5 / 32)
    probe.reset()
    probe.set_valid_fraction((0.5, 0.75))
    with torch.no_grad():
        resnet(x)
    assert probe.records["res2"].last_local_map.shape == (1, 1, 2)  # 8 x 12 kept
    with pytest.raises(ValueError, match="fraction"):
        probe.set_valid_fraction((0.0, 1.0))
    probe.remove()


def test_merging_exports():
    resnet = _resnet(18)
    probe = AliasingProbe(resnet)
    with torch.no_grad():
        resnet(torch.randn(1, 3, 64, 64))
        first = probe.export()
        probe.reset()
        resnet(torch.randn(2, 3, 64, 64))
    merged = probe.summary([first, probe.export()])
    assert merged["res4"]["count"] == 3
    probe.remove()


def test_bad_arguments():
    resnet = _resnet(18)
    with pytest.raises(ValueError, match="layers: no module named 'res9'"):
        AliasingProbe(resnet, ["res9"])
    with pytest.raises(ValueError, match="found nothing to measure"):
        AliasingProbe(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="cutoff_mode"):
        AliasingProbe(resnet, cutoff_mode="fixed")
