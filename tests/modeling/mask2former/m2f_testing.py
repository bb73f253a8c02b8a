"""Helpers of the Mask2Former tests: config loading and tiny inputs."""

import os

import torch
from detectron2.config import get_cfg

import freqfusion_d2.modeling  # noqa: F401  (registers the models)
from freqfusion_d2.config import add_freqfusion_config
from freqfusion_d2.config_maskformer2 import add_maskformer2_config

CONFIG_ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")
TINY_CONFIG = "COCO-PanopticSegmentation/mask2former_tiny_R18_synthetic_cpu.yaml"
TINY_FF_CONFIG = "COCO-PanopticSegmentation/mask2former_tiny_FreqFusion_R18_synthetic_cpu.yaml"


def new_cfg():
    """An empty config with every key the project declares."""
    cfg = get_cfg()
    add_freqfusion_config(cfg)
    add_maskformer2_config(cfg)
    return cfg


def load_cfg(relpath: str, opts=()):
    cfg = new_cfg()
    cfg.merge_from_file(os.path.join(CONFIG_ROOT, relpath))
    cfg.merge_from_list(list(opts))
    return cfg


def tiny_swin_opts():
    """Overrides turning the tiny config into a tiny Swin (embed 32, depths 2-2-2-2, window 7)."""
    return [
        "MODEL.BACKBONE.NAME",
        "D2SwinTransformer",
        "MODEL.SWIN.EMBED_DIM",
        32,
        "MODEL.SWIN.DEPTHS",
        [2, 2, 2, 2],
        "MODEL.SWIN.NUM_HEADS",
        [1, 2, 4, 8],
        "MODEL.SWIN.WINDOW_SIZE",
        7,
        "MODEL.SWIN.DROP_PATH_RATE",
        0.0,
    ]


def tiny_inputs(seed: int = 0):
    """Two images of different sizes (padded together to 96 x 128), values in [0, 255]."""
    g = torch.Generator().manual_seed(seed)
    return [
        {"image": torch.rand(3, 96, 128, generator=g) * 255},
        {"image": torch.rand(3, 80, 100, generator=g) * 255, "height": 40, "width": 50},
    ]
