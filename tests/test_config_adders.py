"""The config adders and the one FreqFusion config path shared by every model."""

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from freqfusion_d2.config import add_freqfusion_config
from freqfusion_d2.config_maskformer2 import add_maskformer2_config
from freqfusion_d2.engine import setup_cfg
from freqfusion_d2.layers import FreqFusion

M2F_TINY_FF = "configs/COCO-PanopticSegmentation/mask2former_tiny_FreqFusion_R18_synthetic_cpu.yaml"
FPN_TINY_FF = "configs/Synthetic/panoptic_fpn_R_18_tiny_freqfusion.yaml"
FF, M2F = add_freqfusion_config, add_maskformer2_config


@pytest.mark.parametrize(
    "order", [(FF, M2F), (M2F, FF), (FF, M2F, FF, M2F), (M2F, M2F, FF, FF), (FF, FF, M2F)]
)
def test_adders_give_one_config_in_any_order(order):
    reference = get_cfg()
    FF(reference)
    M2F(reference)
    cfg = get_cfg()
    for adder in order:
        adder(cfg)
    assert cfg.dump() == reference.dump()
    assert cfg.INPUT.DATASET_MAPPER_NAME == ""


def test_adders_never_overwrite_a_value():
    cfg = get_cfg()
    FF(cfg)
    M2F(cfg)
    cfg.MODEL.FREQFUSION.LOWPASS_KERNEL = 7
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 3
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_panoptic"
    FF(cfg)
    M2F(cfg)
    assert cfg.MODEL.FREQFUSION.LOWPASS_KERNEL == 7
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 3
    assert cfg.INPUT.DATASET_MAPPER_NAME == "mask_former_panoptic"


def _freqfusions(config, *opts):
    cfg = setup_cfg(config, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts])
    modules = [m for m in build_model(cfg).modules() if isinstance(m, FreqFusion)]
    assert modules, config
    return modules


def _kernel_sizes(module):
    # The kernel encoders predict k*k*up_group logits per output pixel (scale_factor 1).
    return (
        module.content_encoder.out_channels // module.up_group,
        module.content_encoder2.out_channels // module.up_group,
    )


@pytest.mark.parametrize("config", [M2F_TINY_FF, FPN_TINY_FF])
def test_command_line_changes_every_freqfusion(config):
    default = _freqfusions(config)
    assert {(m.lowpass_kernel, m.highpass_kernel) for m in default} == {(5, 3)}
    assert {_kernel_sizes(m) for m in default} == {(25, 9)}
    changed = _freqfusions(
        config, "MODEL.FREQFUSION.LOWPASS_KERNEL", "3", "MODEL.FREQFUSION.HIGHPASS_KERNEL", "5"
    )
    assert len(changed) == len(default)
    assert {(m.lowpass_kernel, m.highpass_kernel) for m in changed} == {(3, 5)}
    assert {_kernel_sizes(m) for m in changed} == {(9, 25)}


def test_mask2former_decoder_defaults_are_the_official_module():
    modules = _freqfusions(M2F_TINY_FF)
    assert len(modules) == 3
    for m in modules:
        assert m.feature_resample and not m.hamming_window
        # No GroupNorm in the offset generator, as in the released checkpoints.
        assert not any(isinstance(x, torch.nn.GroupNorm) for x in m.dysampler.modules())
        assert m.compressed_channels == 2 * m.hr_channel_compressor.in_channels // 8
    forced = _freqfusions(
        M2F_TINY_FF,
        "MODEL.FREQFUSION.HAMMING_WINDOW",
        "True",
        "MODEL.FREQFUSION.FEATURE_RESAMPLE_NORM",
        "True",
    )
    for m in forced:
        assert m.hamming_window
        assert any(isinstance(x, torch.nn.GroupNorm) for x in m.dysampler.modules())


def test_v1_decoder_keeps_its_official_options():
    cfg = setup_cfg(
        M2F_TINY_FF,
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME",
            "FreqAwareMSDeformAttnPixelDecoder",
        ],
    )
    decoder = build_model(cfg).sem_seg_head.pixel_decoder
    assert decoder.use_checkpoint
    assert [m.feature_resample for m in decoder.freqfusions] == [False, False]


def test_model_dependent_key_rejects_a_non_bool():
    with pytest.raises(ValueError, match="MODEL.FREQFUSION.HAMMING_WINDOW"):
        _freqfusions(FPN_TINY_FF, "MODEL.FREQFUSION.HAMMING_WINDOW", "'yes'")
