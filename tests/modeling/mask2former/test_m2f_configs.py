"""Mask2Former config keys and the shipped Mask2Former YAML files."""

import glob
import os

import pytest
import yaml
from detectron2.config import CfgNode
from m2f_testing import CONFIG_ROOT, load_cfg, new_cfg

M2F_CONFIGS = sorted(
    glob.glob(os.path.join(CONFIG_ROOT, "ADE20K-SemanticSegmentation", "mask2former*.yaml"))
    + glob.glob(os.path.join(CONFIG_ROOT, "COCO-PanopticSegmentation", "mask2former*.yaml"))
)

# Upstream add_maskformer2_config (mask2former/config.py) + detectron2's add_deeplab_config
# keys with their defaults.
UPSTREAM_DEFAULTS = {
    "INPUT.DATASET_MAPPER_NAME": None,  # declared; the project-wide default is "" here
    "INPUT.COLOR_AUG_SSD": False,
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 1.0,
    "INPUT.SIZE_DIVISIBILITY": -1,
    "INPUT.IMAGE_SIZE": 1024,
    "INPUT.MIN_SCALE": 0.1,
    "INPUT.MAX_SCALE": 2.0,
    "SOLVER.WEIGHT_DECAY_EMBED": 0.0,
    "SOLVER.OPTIMIZER": "ADAMW",
    "SOLVER.BACKBONE_MULTIPLIER": 0.1,
    "SOLVER.POLY_LR_POWER": 0.9,
    "SOLVER.POLY_LR_CONSTANT_ENDING": 0.0,
    "MODEL.MASK_FORMER.DEEP_SUPERVISION": True,
    "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT": 0.1,
    "MODEL.MASK_FORMER.CLASS_WEIGHT": 1.0,
    "MODEL.MASK_FORMER.DICE_WEIGHT": 1.0,
    "MODEL.MASK_FORMER.MASK_WEIGHT": 20.0,
    "MODEL.MASK_FORMER.NHEADS": 8,
    "MODEL.MASK_FORMER.DROPOUT": 0.1,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 2048,
    "MODEL.MASK_FORMER.ENC_LAYERS": 0,
    "MODEL.MASK_FORMER.DEC_LAYERS": 6,
    "MODEL.MASK_FORMER.PRE_NORM": False,
    "MODEL.MASK_FORMER.HIDDEN_DIM": 256,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 100,
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "res5",
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": False,
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON": True,
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON": False,
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": False,
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.0,
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.0,
    "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": False,
    "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": 32,
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 12544,
    "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": 3.0,
    "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": 0.75,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 256,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 0,
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "BasePixelDecoder",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 4,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS": 8,
    "MODEL.SEM_SEG_HEAD.LOSS_TYPE": "hard_pixel_mining",
    "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES": ["res2"],
    "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS": [48],
    "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS": 256,
    "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS": [6, 12, 18],
    "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT": 0.1,
    "MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV": False,
    "MODEL.RESNETS.RES4_DILATION": 1,
    "MODEL.RESNETS.RES5_MULTI_GRID": [1, 2, 4],
    "MODEL.RESNETS.STEM_TYPE": "deeplab",
    "MODEL.SWIN.PRETRAIN_IMG_SIZE": 224,
    "MODEL.SWIN.PATCH_SIZE": 4,
    "MODEL.SWIN.EMBED_DIM": 96,
    "MODEL.SWIN.DEPTHS": [2, 2, 6, 2],
    "MODEL.SWIN.NUM_HEADS": [3, 6, 12, 24],
    "MODEL.SWIN.WINDOW_SIZE": 7,
    "MODEL.SWIN.MLP_RATIO": 4.0,
    "MODEL.SWIN.QKV_BIAS": True,
    "MODEL.SWIN.QK_SCALE": None,
    "MODEL.SWIN.DROP_RATE": 0.0,
    "MODEL.SWIN.ATTN_DROP_RATE": 0.0,
    "MODEL.SWIN.DROP_PATH_RATE": 0.3,
    "MODEL.SWIN.APE": False,
    "MODEL.SWIN.PATCH_NORM": True,
    "MODEL.SWIN.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.SWIN.USE_CHECKPOINT": False,
}


def _get(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        assert part in node, f"missing config key {dotted}"
        node = node[part]
    return node


def test_upstream_keys_declared_with_upstream_defaults():
    cfg = new_cfg()
    for key, default in UPSTREAM_DEFAULTS.items():
        value = _get(cfg, key)
        if default is not None:
            assert value == default, key
    assert _get(cfg, "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD") == 1024


def test_upstream_dumped_config_merges(tmp_path):
    # A config.yaml as an upstream run dumps it: every upstream key, non-default values.
    dumped = CfgNode(new_cfg())
    for key, default in UPSTREAM_DEFAULTS.items():
        if isinstance(default, bool):
            value = not default
        elif isinstance(default, (int, float)) and default is not None:
            value = default + 1
        else:
            continue
        node = dumped
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = tmp_path / "config.yaml"
    path.write_text(dumped.dump())
    cfg = new_cfg()
    cfg.merge_from_file(str(path))
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 7
    assert cfg.MODEL.SWIN.APE is True


def test_add_maskformer2_config_is_idempotent():
    cfg = new_cfg()
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 10
    from freqfusion_d2 import add_maskformer2_config

    add_maskformer2_config(cfg)
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 10


@pytest.mark.parametrize("path", M2F_CONFIGS, ids=os.path.basename)
def test_yaml_loads(path):
    assert os.path.basename(path).startswith("mask2former")
    with open(path) as f:
        base = yaml.safe_load(f).get("_BASE_")
    if base is not None:  # _BASE_ chains stay inside configs/
        assert os.path.isfile(os.path.join(os.path.dirname(path), base))
    cfg = load_cfg(os.path.relpath(path, CONFIG_ROOT))
    if "_Base-" in path:
        return
    assert cfg.MODEL.META_ARCHITECTURE == "MaskFormer"
    assert cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME in (
        "MSDeformAttnPixelDecoder",
        "FreqAwareMSDeformAttnPixelDecoder2",
    )
    if cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer":
        # The Swin-L configs must point at Swin-L weights (the fork's load Swin-B).
        size = "large" if cfg.MODEL.SWIN.EMBED_DIM == 192 else "base"
        assert f"swin_{size}_" in cfg.MODEL.WEIGHTS
