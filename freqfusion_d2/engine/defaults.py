"""Config loading shared by train_net.py, demo/, tools/ and the tests."""

import logging
from typing import Sequence

import torch
from detectron2.config import CfgNode, get_cfg

from .. import data, modeling  # noqa: F401  (register the datasets and models a config names)
from ..config import add_freqfusion_config
from ..config_maskformer2 import add_maskformer2_config

logger = logging.getLogger(__name__)

__all__ = ["setup_cfg"]


def setup_cfg(config_file: str = "", opts: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """Detectron2's defaults + this project's keys (FPN models and Mask2Former), then
    ``config_file``, then ``opts``.

    Without a GPU, a config asking for ``MODEL.DEVICE`` "cuda" runs on the CPU (logged).

    Args:
        config_file: YAML under ``configs/`` (empty: defaults only).
        opts: ``KEY VALUE`` overrides, as on the command line.
        freeze: freeze the returned config.
    """
    cfg = get_cfg()
    add_freqfusion_config(cfg)
    add_maskformer2_config(cfg)
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but no GPU is available; using the CPU", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg
