"""Mask2Former optimizer groups, full-model clipping and LR schedules on a tiny model."""

import pytest
import torch
from detectron2.config import get_cfg
from torch import nn

from freqfusion_d2 import add_maskformer2_config
from freqfusion_d2.solver import (
    build_maskformer_lr_scheduler,
    build_maskformer_optimizer,
    get_maskformer_param_groups,
)


def _cfg(**solver):
    """detectron2 defaults plus the Mask2Former / DeepLab keys, with the upstream YAML values."""
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.SOLVER.BASE_LR = 1e-4
    cfg.SOLVER.WEIGHT_DECAY = 0.05
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


class _Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.GroupNorm(2, 4)
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4))


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.level_embed = nn.Parameter(torch.zeros(3, 4))  # plain Parameter: decayed


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = _Encoder()
        self.linear = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.query_feat = nn.Embedding(5, 4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _Backbone()
        self.sem_seg_head = _Head()
        self.tied = self.sem_seg_head.linear  # same parameters under a second name


def _group_of(groups, param):
    [group] = [g for g in groups if any(p is param for p in g["params"])]
    return group


def test_param_groups_lr_and_weight_decay():
    model = _Tiny()
    cfg = _cfg(WEIGHT_DECAY_NORM=0.01, WEIGHT_DECAY_EMBED=0.02)
    groups = get_maskformer_param_groups(cfg, model)
    # One group per trainable parameter; the tied Linear counted once, the frozen one skipped.
    trainable = [p for p in model.parameters() if p.requires_grad]  # de-duplicated by torch
    assert len(groups) == len(trainable) == 11
    assert all(len(g["params"]) == 1 for g in groups)

    base, bb = 1e-4, 1e-4 * 0.1
    b, h = model.backbone, model.sem_seg_head
    expected = {
        # backbone: lr x 0.1
        b.conv.weight: (bb, 0.05),
        b.conv.bias: (bb, 0.05),  # conv biases are decayed
        b.norm.weight: (bb, 0.01),  # WEIGHT_DECAY_NORM
        b.norm.bias: (bb, 0.01),
        b.absolute_pos_embed: (bb, 0.0),  # Swin position table: never decayed
        # head: full lr
        h.encoder.level_embed: (base, 0.05),
        h.linear.weight: (base, 0.05),
        h.linear.bias: (base, 0.05),
        h.norm.weight: (base, 0.01),
        h.norm.bias: (base, 0.01),
        h.query_feat.weight: (base, 0.02),  # WEIGHT_DECAY_EMBED
    }
    for param, (lr, wd) in expected.items():
        group = _group_of(groups, param)
        assert group["lr"] == pytest.approx(lr)
        assert group["weight_decay"] == pytest.approx(wd)
    assert not any(p is h.frozen.weight for g in groups for p in g["params"])


def test_adamw_and_sgd_builders():
    model = _Tiny()
    optimizer = build_maskformer_optimizer(_cfg(), model)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["eps"] == 1e-8
    assert len(optimizer.param_groups) == 11

    optimizer = build_maskformer_optimizer(_cfg(OPTIMIZER="SGD", MOMENTUM=0.8), model)
    assert isinstance(optimizer, torch.optim.SGD)
    assert all(g["momentum"] == 0.8 for g in optimizer.param_groups)

    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_maskformer_optimizer(_cfg(OPTIMIZER="LAMB"), model)


def _two_scalar_model():
    model = nn.Module()
    model.a = nn.Parameter(torch.tensor([1.0]))
    model.b = nn.Parameter(torch.tensor([1.0]))
    return model


def _clip_cfg(clip_type, value):
    cfg = _cfg(OPTIMIZER="SGD", MOMENTUM=0.0, BASE_LR=1.0, WEIGHT_DECAY=0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = value
    cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 1.0  # ignored by full_model clipping (always L2)
    return cfg


def test_full_model_gradient_clipping():
    model = _two_scalar_model()
    optimizer = build_maskformer_optimizer(_clip_cfg("full_model", 0.01), model)
    # Gradients (3, 4) have global L2 norm 5 (the L1 norm 7 would give another result).
    # clip_grad_norm_ scales them by 0.01 / (5 + 1e-6): (0.006, 0.008).
    # SGD with lr 1: a = 1 - 0.006 = 0.994, b = 1 - 0.008 = 0.992.
    model.a.grad = torch.tensor([3.0])
    model.b.grad = torch.tensor([4.0])
    optimizer.step()
    scale = 0.01 / (5 + 1e-6)
    assert model.a.item() == pytest.approx(1 - 3 * scale, abs=1e-7)
    assert model.b.item() == pytest.approx(1 - 4 * scale, abs=1e-7)


def test_value_clipping_goes_through_detectron2():
    model = _two_scalar_model()
    optimizer = build_maskformer_optimizer(_clip_cfg("value", 0.5), model)
    # Per-element clamp to [-0.5, 0.5]: both parameters move by exactly 0.5.
    model.a.grad = torch.tensor([3.0])
    model.b.grad = torch.tensor([-4.0])
    optimizer.step()
    assert model.a.item() == pytest.approx(0.5)
    assert model.b.item() == pytest.approx(1.5)
    assert isinstance(optimizer, torch.optim.SGD)


def _lrs(cfg, iterations):
    """Head and backbone lr at each requested iteration (after that many scheduler steps)."""
    model = _Tiny()
    optimizer = build_maskformer_optimizer(cfg, model)
    scheduler = build_maskformer_lr_scheduler(cfg, optimizer)
    head = _group_of(optimizer.param_groups, model.sem_seg_head.linear.weight)
    backbone = _group_of(optimizer.param_groups, model.backbone.conv.weight)
    out = {}
    for it in range(max(iterations) + 1):
        if it in iterations:
            out[it] = (head["lr"], backbone["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_poly_lr_with_warmup():
    cfg = _cfg(
        BASE_LR=1.0,
        LR_SCHEDULER_NAME="WarmupPolyLR",
        MAX_ITER=10,
        WARMUP_ITERS=2,
        WARMUP_FACTOR=0.5,
        WARMUP_METHOD="linear",
    )
    lrs = _lrs(cfg, [0, 1, 2, 5, 9])
    # lr(it) = warmup(it) * (1 - it / 10) ** 0.9, warmup(it) = 0.5 * (1 - it/2) + it/2 for it < 2:
    #   it 0: 0.5 * 1                    = 0.5
    #   it 1: 0.75 * 0.9 ** 0.9          = 0.75 * 0.909533 = 0.682149
    #   it 2: 0.8 ** 0.9                 = 0.818052
    #   it 5: 0.5 ** 0.9                 = 0.535887
    #   it 9: 0.1 ** 0.9                 = 0.125893
    expected = {0: 0.5, 1: 0.682149, 2: 0.818052, 5: 0.535887, 9: 0.125893}
    for it, lr in expected.items():
        assert lrs[it][0] == pytest.approx(lr, abs=1e-6)
        assert lrs[it][1] == pytest.approx(0.1 * lr, abs=1e-7)  # backbone multiplier


def test_poly_lr_constant_ending():
    cfg = _cfg(
        BASE_LR=1.0,
        LR_SCHEDULER_NAME="WarmupPolyLR",
        MAX_ITER=10,
        WARMUP_ITERS=0,
        POLY_LR_CONSTANT_ENDING=0.2,
    )
    lrs = _lrs(cfg, [8, 9])
    # it 8: 0.2 ** 0.9 = 0.234924 >= 0.2 -> poly value; it 9: 0.1 ** 0.9 = 0.125893 < 0.2 -> 0.2.
    assert lrs[8][0] == pytest.approx(0.234924, abs=1e-6)
    assert lrs[9][0] == pytest.approx(0.2, abs=1e-9)


def test_other_schedulers_use_detectron2():
    cfg = _cfg(
        BASE_LR=1.0,
        LR_SCHEDULER_NAME="WarmupMultiStepLR",
        MAX_ITER=10,
        STEPS=(4, 8),
        GAMMA=0.1,
        WARMUP_ITERS=0,
    )
    lrs = _lrs(cfg, [3, 4, 8])
    # Multipliers 1, 0.1, 0.01 from iterations 0, 4, 8.
    assert lrs[3][0] == pytest.approx(1.0)
    assert lrs[4][0] == pytest.approx(0.1)
    assert lrs[8][0] == pytest.approx(0.01)
