"""FreqFusionFPN: structure, parameter overhead, checkpoint key compatibility, forward."""

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool
from detectron2.modeling.backbone.resnet import build_resnet_backbone

import freqfusion_d2.modeling  # noqa: F401  (registers the models)
from freqfusion_d2.engine import setup_cfg
from freqfusion_d2.modeling import FreqFusionFPN

PANOPTIC = "configs/COCO-PanopticSegmentation/"
TINY = "configs/Synthetic/panoptic_fpn_R_18_tiny_freqfusion.yaml"
# One FreqFusion(256, 256, compressed 64, resample group 4) without / with GroupNorm (the
# parameters that the official FreqFusion.__init__ creates for these options).
FF_PARAMS = 104_434
FF_PARAMS_GN = 104_690


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


def _backbone(config, *opts):
    cfg = setup_cfg(config, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", *opts])
    return build_backbone(cfg)


def test_r50_parameter_overhead():
    base = _backbone(PANOPTIC + "panoptic_fpn_R_50_1x.yaml")
    ff = _backbone(PANOPTIC + "panoptic_fpn_R_50_1x_freqfusion.yaml")
    assert isinstance(ff, FreqFusionFPN)
    fusions = {n: _num_params(m) for n, m in ff.named_children() if n.startswith("fpn_freqfusion")}
    assert fusions == {f"fpn_freqfusion{s}": FF_PARAMS for s in (2, 3, 4)}
    overhead = _num_params(ff) - _num_params(base)
    assert overhead == 3 * FF_PARAMS
    assert overhead < 350_000


def test_groupnorm_variant_parameters():
    ff = _backbone(PANOPTIC + "panoptic_fpn_R_101_3x_freqfusion.yaml")
    for stage in (2, 3, 4):
        assert _num_params(getattr(ff, f"fpn_freqfusion{stage}")) == FF_PARAMS_GN


def test_state_dict_keys_extend_detectron2_fpn():
    base_keys = set(_backbone(PANOPTIC + "panoptic_fpn_R_50_1x.yaml").state_dict())
    ff_keys = set(_backbone(PANOPTIC + "panoptic_fpn_R_50_1x_freqfusion.yaml").state_dict())
    assert base_keys <= ff_keys
    extra = {k.split(".")[0] for k in ff_keys - base_keys}
    assert extra == {"fpn_freqfusion2", "fpn_freqfusion3", "fpn_freqfusion4"}
    assert "fpn_freqfusion2.hamming_lowpass" in ff_keys
    assert "fpn_freqfusion2.dysampler.offset.weight" in ff_keys


def _tiny_pair():
    """A detectron2 FPN and a FreqFusionFPN on the same ResNet-18 with shared weights."""
    cfg = setup_cfg(TINY)
    torch.manual_seed(0)
    bottom_up = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    kwargs = dict(
        bottom_up=bottom_up,
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=32,
        top_block=LastLevelMaxPool(),
    )
    base = FPN(**kwargs).eval()
    ff = FreqFusionFPN(
        **kwargs,
        freqfusion_kwargs={
            "compress_ratio": 8,
            "feature_resample": True,
            "feature_resample_norm": False,
        },
    ).eval()
    missing, unexpected = ff.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected
    assert {k.split(".")[0] for k in missing} == {f"fpn_freqfusion{s}" for s in (2, 3, 4)}
    return base, ff


def test_coarsest_levels_unchanged_and_shapes():
    base, ff = _tiny_pair()
    x = torch.rand(2, 3, 96, 128)
    with torch.no_grad():
        out_base, out_ff = base(x), ff(x)
    assert list(out_ff) == ["p2", "p3", "p4", "p5", "p6"]
    for name, stride in zip(out_ff, (4, 8, 16, 32, 64)):
        assert out_ff[name].shape == (2, 32, -(-96 // stride), -(-128 // stride))
        assert ff.output_shape()[name].stride == stride
    # P5 involves no fusion and P6 is max-pooled from it: identical to detectron2's FPN.
    torch.testing.assert_close(out_ff["p5"], out_base["p5"])
    torch.testing.assert_close(out_ff["p6"], out_base["p6"])
    assert not torch.allclose(out_ff["p2"], out_base["p2"])
    assert ff.size_divisibility == 32


def test_avg_fuse_type_halves_the_sum():
    base, ff = _tiny_pair()
    ff_avg = FreqFusionFPN(
        bottom_up=ff.bottom_up,
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=32,
        top_block=LastLevelMaxPool(),
        fuse_type="avg",
        freqfusion_kwargs={
            "compress_ratio": 8,
            "feature_resample": True,
            "feature_resample_norm": False,
        },
    ).eval()
    ff_avg.load_state_dict(ff.state_dict())
    # Zero output-conv biases make the outputs linear in the fused map at P4 (one fusion).
    for m in (ff, ff_avg):
        torch.nn.init.zeros_(m.fpn_output4.bias)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ff_avg(x)["p4"] * 2, ff(x)["p4"], rtol=1e-4, atol=1e-5)


def test_extra_p6_layout():
    ff = _backbone(TINY, "MODEL.FREQFUSION.FPN_EXTRA_P6", "True")
    assert ff.size_divisibility == 64
    assert ff.top_block is None
    assert {n for n, _ in ff.named_children() if "freqfusion" in n} == {
        f"fpn_freqfusion{s}" for s in (2, 3, 4, 5)
    }
    assert ff.fpn_lateral6.stride == (2, 2)
    x = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        out = ff.eval()(x)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert out["p6"].shape[-2:] == (2, 3)


def test_extra_p6_rejects_top_block():
    cfg = setup_cfg(TINY)
    bottom_up = build_resnet_backbone(cfg, ShapeSpec(channels=3))
    with pytest.raises(ValueError, match="top_block"):
        FreqFusionFPN(
            bottom_up=bottom_up,
            in_features=["res2", "res3", "res4", "res5"],
            out_channels=32,
            top_block=LastLevelMaxPool(),
            extra_p6=True,
        )


def test_unpadded_input_names_the_size_problem():
    _, ff = _tiny_pair()
    with pytest.raises(ValueError, match="twice the size"):
        ff(torch.rand(1, 3, 100, 100))


def test_retinanet_variant_outputs_p3_to_p7():
    ff = _backbone(
        TINY,
        "MODEL.BACKBONE.NAME",
        "build_retinanet_resnet_freqfusion_fpn_backbone",
        "MODEL.FPN.IN_FEATURES",
        "['res3', 'res4', 'res5']",
    )
    assert {n for n, _ in ff.named_children() if "freqfusion" in n} == {
        "fpn_freqfusion3",
        "fpn_freqfusion4",
    }
    with torch.no_grad():
        out = ff.eval()(torch.rand(1, 3, 64, 64))
    assert list(out) == ["p3", "p4", "p5", "p6", "p7"]
