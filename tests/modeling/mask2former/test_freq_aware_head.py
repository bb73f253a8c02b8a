"""The fork's image-guided mask refinement: ``MaskFormerHeadFreqAware`` and
``MaskFormerFreqAware`` (and their layers)."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.structures import Instances
from detectron2.utils.events import EventStorage
from m2f_testing import TINY_FF_CONFIG, load_cfg, tiny_inputs

from freqfusion_d2.layers import CascadeImageGuidedUpsample, ImageGuidedUpsample, LearnableHighPass
from freqfusion_d2.modeling.meta_arch import MaskFormerFreqAware, MaskFormerHeadFreqAware

FREQ_AWARE_OPTS = [
    "MODEL.META_ARCHITECTURE", "MaskFormerFreqAware",
    "MODEL.SEM_SEG_HEAD.NAME", "MaskFormerHeadFreqAware",
]  # fmt: skip


# Extra keys of the fork's head (Mask2Former/.../mask_former_head.py): CARAFEPack minus its
# channel_compressor, LHPFConv3, extra_conv3; comp_conv is a Sequential (MASK_DIM -> 4, 3x3).
def official_head_extra_keys(mask_dim):
    keys = {"comp_conv.0.weight": (4, mask_dim, 3, 3), "comp_conv.0.bias": (4,)}
    for i in range(2):
        p = f"IGU.up.{i}."
        keys.update(
            {
                p + "content_encoder.weight": (9, 5, 3, 3),
                p + "content_encoder.bias": (9,),
                p + "LPF.weight": (3, 1, 3, 3),
                p + "LPF.identity_kernel": (1, 1, 3, 3),
                p + "extra_conv3.weight": (1, 3, 3, 3),
                p + "extra_conv3.bias": (1,),
            }
        )
    return keys


def test_high_pass_starts_as_centre_minus_neighbour_softmax():
    hp = LearnableHighPass(3)
    x = torch.rand(1, 3, 6, 7)
    # softmax over (1,...,1,0 at the centre): weights e/(8e+1) on the neighbours, 1/(8e+1) centre.
    e = torch.e
    kernel = torch.full((3, 3), e / (8 * e + 1))
    kernel[1, 1] = 1 / (8 * e + 1)
    identity = torch.zeros(3, 3)
    identity[1, 1] = 1
    expected = F.conv2d(x, (identity - kernel).expand(3, 1, 3, 3), padding=1, groups=3)
    torch.testing.assert_close(hp(x), expected)
    # A constant image has no high frequencies away from the (zero-padded) border.
    out = hp(torch.full((1, 3, 6, 7), 2.0))
    assert out[..., 1:-1, 1:-1].abs().max() < 1e-6
    assert out[..., 0, 0].abs().min() > 0.1
    assert "identity_kernel" in dict(hp.named_buffers())
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        hp(torch.rand(1, 4, 5, 5))


def test_uniform_kernels_are_a_box_filter_of_the_nearest_upsampling():
    up = ImageGuidedUpsample(feat_channels=4)
    torch.nn.init.zeros_(up.content_encoder.weight)  # equal logits: every kernel tap is 1/9
    torch.nn.init.zeros_(up.content_encoder.bias)
    feat, seg, img = torch.randn(2, 4, 5, 6), torch.randn(2, 7, 5, 6), torch.randn(2, 3, 10, 12)
    seg_out, feat_out = up(feat, seg, img)

    def box(x):
        near = F.interpolate(x, size=(10, 12), mode="nearest")
        return F.avg_pool2d(near, 3, stride=1, padding=1, count_include_pad=True)

    torch.testing.assert_close(seg_out, box(seg), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(feat_out, box(feat), atol=1e-6, rtol=1e-6)


def test_kernels_depend_on_the_image():
    torch.manual_seed(0)
    up = ImageGuidedUpsample(feat_channels=4)
    torch.nn.init.normal_(up.content_encoder.weight, std=1.0)
    feat, seg = torch.randn(1, 4, 4, 4), torch.randn(1, 3, 4, 4)
    a, _ = up(feat, seg, torch.randn(1, 3, 8, 8))
    b, _ = up(feat, seg, torch.randn(1, 3, 8, 8))
    assert not torch.allclose(a, b)


def test_cascade_quadruples_resolution_and_checkpointing_keeps_gradients():
    torch.manual_seed(0)
    cascade = CascadeImageGuidedUpsample(n=2, feat_channels=4)
    for p in cascade.parameters():
        torch.nn.init.normal_(p, std=0.5)
    feat = torch.randn(1, 4, 3, 5, requires_grad=True)
    seg = torch.randn(1, 2, 3, 5, requires_grad=True)
    img = torch.randn(1, 3, 12, 20)
    grads = []
    for use_checkpoint in (False, True):
        cascade.use_checkpoint = use_checkpoint
        cascade.train()
        out = cascade(feat, seg, img)
        assert out.shape == (1, 2, 12, 20)
        out.square().sum().backward()
        grads.append((seg.grad.clone(), cascade.up[0].content_encoder.weight.grad.clone()))
        seg.grad = None
        cascade.zero_grad()
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="n must be"):
        CascadeImageGuidedUpsample(n=0)


@pytest.fixture(scope="module")
def freq_aware_model():
    cfg = load_cfg(TINY_FF_CONFIG, FREQ_AWARE_OPTS)
    torch.manual_seed(0)
    return build_model(cfg)


def test_official_key_layout(freq_aware_model):
    sd = freq_aware_model.state_dict()
    extra = {
        k[len("sem_seg_head.") :]: tuple(v.shape)
        for k, v in sd.items()
        if k.startswith("sem_seg_head.IGU.") or k.startswith("sem_seg_head.comp_conv.")
    }
    assert extra == official_head_extra_keys(64)
    assert isinstance(freq_aware_model, MaskFormerFreqAware)
    assert isinstance(freq_aware_model.sem_seg_head, MaskFormerHeadFreqAware)
    # Everything else is the plain FreqFusion Mask2Former's (278 keys for the tiny model).
    assert len(sd) == 278 + len(extra)


def test_eval_masks_are_refined_to_the_input_size(freq_aware_model):
    model = freq_aware_model.eval()
    seen = {}
    model.sem_seg_head.predictor.register_forward_hook(
        lambda m, i, o: seen.update(coarse=o["pred_masks"].clone())
    )
    model.sem_seg_head.register_forward_hook(lambda m, i, o: seen.update(final=o))
    with torch.no_grad():
        out = model(tiny_inputs())
    assert seen["coarse"].shape[-2:] == (24, 32)  # stride 4 of the 96 x 128 padded batch
    assert seen["final"]["pred_masks"].shape[-2:] == (96, 128)
    assert seen["final"]["aux_outputs"][0]["pred_masks"].shape[-2:] == (24, 32)
    assert out[0]["sem_seg"].shape == (6, 96, 128) and out[1]["sem_seg"].shape == (6, 40, 50)


def test_training_step_with_empty_ground_truth(freq_aware_model):
    model = freq_aware_model.train()
    inputs = tiny_inputs()
    masks = torch.zeros(1, 96, 128, dtype=torch.bool)
    masks[0, 20:70, 30:100] = True
    batch = [
        dict(
            inputs[0], instances=Instances((96, 128), gt_classes=torch.tensor([2]), gt_masks=masks)
        ),
        dict(
            inputs[1],
            instances=Instances(
                (80, 100),
                gt_classes=torch.zeros(0, dtype=torch.int64),
                gt_masks=torch.zeros(0, 80, 100, dtype=torch.bool),
            ),
        ),
    ]
    model.zero_grad()
    with EventStorage():
        losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    head = model.sem_seg_head
    assert head.IGU.up[0].content_encoder.weight.grad.abs().sum() > 0
    assert head.comp_conv[0].weight.grad.abs().sum() > 0
    assert head.IGU.up[1].LPF.weight.grad.abs().sum() > 0


def test_head_and_meta_arch_must_be_paired(freq_aware_model):
    with pytest.raises(ValueError, match="MaskFormerHeadFreqAware"):
        build_model(load_cfg(TINY_FF_CONFIG, FREQ_AWARE_OPTS[:2]))
    cfg = load_cfg(TINY_FF_CONFIG, FREQ_AWARE_OPTS[2:])  # plain MaskFormer + FreqAware head
    model = build_model(cfg).eval()
    with pytest.raises(ValueError, match="MaskFormerFreqAware"):
        model(tiny_inputs())
